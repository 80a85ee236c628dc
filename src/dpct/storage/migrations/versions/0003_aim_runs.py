"""aim runs

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aim_runs",
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("active_processing", sa.Boolean(), nullable=False),
        sa.Column(
            "solution_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("solution_ids_processed", sa.Text(), nullable=False),
        sa.Column("solution_ids_to_be_processed", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_aim_runs_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_aim_runs")),
    )


def downgrade() -> None:
    op.drop_table("aim_runs")
