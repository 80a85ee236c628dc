"""transfers runs retention

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_rules",
        sa.Column("data_type", sa.String(length=128), nullable=False),
        sa.Column("keep_days", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("data_type", name=op.f("pk_retention_rules")),
    )
    op.create_table(
        "run_checks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sw", sa.String(length=16), nullable=False),
        sa.Column("start_check_ns", sa.BigInteger(), nullable=False),
        sa.Column("end_check_ns", sa.BigInteger(), nullable=False),
        sa.Column("check_status", sa.String(length=16), nullable=False),
        sa.Column("delete_status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_checks")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sw", sa.String(length=16), nullable=False),
        sa.Column("obmt_start_ns", sa.BigInteger(), nullable=False),
        sa.Column("obmt_end_ns", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("ignored", sa.Boolean(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_runs_sw_obmt_start_ns"), ["sw", "obmt_start_ns"], unique=False
        )

    op.create_table(
        "transfers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("peer", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("registered", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("quarantined", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfers")),
    )
    op.create_table(
        "run_check_errors",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("check_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("obmt_start_ns", sa.BigInteger(), nullable=False),
        sa.Column("obmt_end_ns", sa.BigInteger(), nullable=False),
        sa.Column("run_ids", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["check_id"], ["run_checks.id"], name=op.f("fk_run_check_errors_check_id_run_checks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_check_errors")),
    )
    with op.batch_alter_table("run_check_errors", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_run_check_errors_check_id"), ["check_id"], unique=False
        )

    op.create_table(
        "transfer_files",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "transfer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("data_type", sa.String(length=128), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("checksum", sa.String(length=80), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "dataset_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("location", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["transfer_id"], ["transfers.id"], name=op.f("fk_transfer_files_transfer_id_transfers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfer_files")),
    )
    with op.batch_alter_table("transfer_files", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_transfer_files_transfer_id"), ["transfer_id"], unique=False
        )

    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retracted_at", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("deleted_at", sa.Double(), nullable=True))
        batch_op.create_index(batch_op.f("ix_datasets_checksum"), ["checksum"], unique=False)
        batch_op.create_index(batch_op.f("ix_datasets_transfer_id"), ["transfer_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_datasets_transfer_id"))
        batch_op.drop_index(batch_op.f("ix_datasets_checksum"))
        batch_op.drop_column("deleted_at")
        batch_op.drop_column("retracted_at")

    with op.batch_alter_table("transfer_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transfer_files_transfer_id"))

    op.drop_table("transfer_files")
    with op.batch_alter_table("run_check_errors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_check_errors_check_id"))

    op.drop_table("run_check_errors")
    op.drop_table("transfers")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_sw_obmt_start_ns"))

    op.drop_table("runs")
    op.drop_table("run_checks")
    op.drop_table("retention_rules")
