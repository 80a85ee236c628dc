"""transfer claims and owners

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("host", sa.String(length=255), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("pid", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("pid_start", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.Double(), nullable=True))
    op.create_table(
        "transfer_claims",
        sa.Column("checksum", sa.String(length=80), nullable=False),
        sa.Column("data_type", sa.String(length=128), nullable=False),
        sa.Column(
            "transfer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("claimed_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["transfer_id"],
            ["transfers.id"],
            name=op.f("fk_transfer_claims_transfer_id_transfers"),
        ),
        sa.PrimaryKeyConstraint("checksum", "data_type", name=op.f("pk_transfer_claims")),
    )
    with op.batch_alter_table("transfer_claims", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_transfer_claims_transfer_id"), ["transfer_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("transfer_claims", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transfer_claims_transfer_id"))
    op.drop_table("transfer_claims")
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("pid_start")
        batch_op.drop_column("pid")
        batch_op.drop_column("host")
