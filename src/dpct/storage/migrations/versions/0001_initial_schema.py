"""initial schema

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "configurations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_configurations")),
        sa.UniqueConstraint("hash", name=op.f("uq_configurations_hash")),
    )
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_cursors")),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("time", sa.Double(), nullable=False),
        sa.Column("subsystem", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("object_type", sa.String(length=32), nullable=False),
        sa.Column("object_id", sa.String(length=128), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_events_object_type_object_id"),
            ["object_type", "object_id"],
            unique=False,
        )

    op.create_table(
        "job_logs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "workflow_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("subsystem", sa.String(length=16), nullable=False),
        sa.Column("task_name", sa.String(length=128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_backup_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_logs")),
    )
    with op.batch_alter_table("job_logs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_logs_job_id"), ["job_id"], unique=False)

    op.create_table(
        "nodes",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("heartbeat_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_nodes")),
    )
    op.create_table(
        "task_limits",
        sa.Column("task_type", sa.String(length=128), nullable=False),
        sa.Column("max_running", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("task_type", name=op.f("pk_task_limits")),
    )
    op.create_table(
        "trigger_firings",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("descriptor", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column(
            "workflow_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("fired_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trigger_firings")),
        sa.UniqueConstraint("descriptor", "key", name=op.f("uq_trigger_firings_descriptor_key")),
    )
    op.create_table(
        "workflow_descriptors",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_descriptors")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_workflow_descriptors_name_version")),
    )
    op.create_table(
        "solutions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("output_type", sa.String(length=128), nullable=False),
        sa.Column("generation_time", sa.Double(), nullable=False),
        sa.Column("automatically_generated", sa.Boolean(), nullable=False),
        sa.Column("software_version", sa.String(length=64), nullable=False),
        sa.Column("task_type", sa.String(length=128), nullable=True),
        sa.Column(
            "configuration_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.ForeignKeyConstraint(
            ["configuration_id"],
            ["configurations.id"],
            name=op.f("fk_solutions_configuration_id_configurations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_solutions")),
    )
    op.create_table(
        "workflows",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column(
            "descriptor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("persistence_id", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "transfer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("data_type", sa.String(length=128), nullable=False),
        sa.Column("obmt_start_ns", sa.BigInteger(), nullable=False),
        sa.Column("obmt_end_ns", sa.BigInteger(), nullable=False),
        sa.Column("ccd", sa.Integer(), nullable=True),
        sa.Column("fov", sa.Integer(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=64), nullable=False),
        sa.Column("n_jobs", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["descriptor_id"],
            ["workflow_descriptors.id"],
            name=op.f("fk_workflows_descriptor_id_workflow_descriptors"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
    )
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workflows_status_id"), ["status", "id"], unique=False)

    op.create_table(
        "datasets",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("data_type", sa.String(length=128), nullable=False),
        sa.Column("type_version", sa.Integer(), nullable=False),
        sa.Column("obmt_start_ns", sa.BigInteger(), nullable=False),
        sa.Column("obmt_end_ns", sa.BigInteger(), nullable=False),
        sa.Column("ccd", sa.Integer(), nullable=True),
        sa.Column("fov", sa.Integer(), nullable=True),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("checksum", sa.String(length=80), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column(
            "solution_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "transfer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["solution_id"], ["solutions.id"], name=op.f("fk_datasets_solution_id_solutions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
    )
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_datasets_data_type_obmt_start_ns"),
            ["data_type", "obmt_start_ns"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_datasets_solution_id"), ["solution_id"], unique=False)

    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "workflow_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=128), nullable=False),
        sa.Column("task_type", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("data_type", sa.String(length=128), nullable=False),
        sa.Column("obmt_start_ns", sa.BigInteger(), nullable=False),
        sa.Column("obmt_end_ns", sa.BigInteger(), nullable=False),
        sa.Column("ccd", sa.Integer(), nullable=True),
        sa.Column("fov", sa.Integer(), nullable=True),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("cores", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("time_limit_s", sa.Double(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("pending_deps", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.Double(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("ready_at", sa.Double(), nullable=True),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.Column("lease_token", sa.String(length=32), nullable=True),
        sa.Column("lease_until", sa.Double(), nullable=True),
        sa.Column("node", sa.String(length=64), nullable=True),
        sa.Column(
            "solution_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.Column("error_class", sa.String(length=128), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["workflow_id"], ["workflows.id"], name=op.f("fk_jobs_workflow_id_workflows")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("workflow_id", "seq", name=op.f("uq_jobs_workflow_id_seq")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_jobs_workflow_id_status_id"),
            ["workflow_id", "status", "id"],
            unique=False,
        )

    op.create_table(
        "solution_inputs",
        sa.Column(
            "solution_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "input_solution_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("input_type", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["input_solution_id"],
            ["solutions.id"],
            name=op.f("fk_solution_inputs_input_solution_id_solutions"),
        ),
        sa.ForeignKeyConstraint(
            ["solution_id"], ["solutions.id"], name=op.f("fk_solution_inputs_solution_id_solutions")
        ),
        sa.PrimaryKeyConstraint(
            "solution_id", "input_solution_id", name=op.f("pk_solution_inputs")
        ),
    )
    with op.batch_alter_table("solution_inputs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_solution_inputs_input_solution_id"), ["input_solution_id"], unique=False
        )

    op.create_table(
        "workflow_job_counts",
        sa.Column(
            "workflow_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_job_counts_workflow_id_workflows"),
        ),
        sa.PrimaryKeyConstraint("workflow_id", "status", name=op.f("pk_workflow_job_counts")),
    )
    op.create_table(
        "job_deps",
        sa.Column("job_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "upstream_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_deps_job_id_jobs")),
        sa.ForeignKeyConstraint(
            ["upstream_id"], ["jobs.id"], name=op.f("fk_job_deps_upstream_id_jobs")
        ),
        sa.PrimaryKeyConstraint("job_id", "upstream_id", name=op.f("pk_job_deps")),
    )
    with op.batch_alter_table("job_deps", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_deps_upstream_id"), ["upstream_id"], unique=False)

    # Expression index (priority DESC): autogenerate cannot compare it, so it is here.
    op.execute("CREATE INDEX ix_jobs_queue ON jobs (status, priority DESC, id)")
    _create_count_triggers()


def downgrade() -> None:
    _drop_count_triggers()
    op.execute("DROP INDEX ix_jobs_queue")
    with op.batch_alter_table("job_deps", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_deps_upstream_id"))

    op.drop_table("job_deps")
    op.drop_table("workflow_job_counts")
    with op.batch_alter_table("solution_inputs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_solution_inputs_input_solution_id"))

    op.drop_table("solution_inputs")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_workflow_id_status_id"))

    op.drop_table("jobs")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_datasets_solution_id"))
        batch_op.drop_index(batch_op.f("ix_datasets_data_type_obmt_start_ns"))

    op.drop_table("datasets")
    with op.batch_alter_table("workflows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workflows_status_id"))

    op.drop_table("workflows")
    op.drop_table("solutions")
    op.drop_table("workflow_descriptors")
    op.drop_table("trigger_firings")
    op.drop_table("task_limits")
    op.drop_table("nodes")
    with op.batch_alter_table("job_logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_logs_job_id"))

    op.drop_table("job_logs")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_object_type_object_id"))

    op.drop_table("events")
    op.drop_table("cursors")
    op.drop_table("configurations")


# Per-status job counts are kept by triggers so they never drift from the jobs table,
# whatever statement changed a status (one row or a million).
_SQLITE_TRIGGERS = [
    """
    CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
      INSERT INTO workflow_job_counts (workflow_id, status, n)
      VALUES (NEW.workflow_id, NEW.status, 1)
      ON CONFLICT (workflow_id, status) DO UPDATE SET n = n + 1;
    END
    """,
    """
    CREATE TRIGGER jobs_count_update AFTER UPDATE OF status ON jobs
    WHEN OLD.status <> NEW.status BEGIN
      UPDATE workflow_job_counts SET n = n - 1
      WHERE workflow_id = OLD.workflow_id AND status = OLD.status;
      INSERT INTO workflow_job_counts (workflow_id, status, n)
      VALUES (NEW.workflow_id, NEW.status, 1)
      ON CONFLICT (workflow_id, status) DO UPDATE SET n = n + 1;
    END
    """,
    """
    CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
      UPDATE workflow_job_counts SET n = n - 1
      WHERE workflow_id = OLD.workflow_id AND status = OLD.status;
    END
    """,
]

# PostgreSQL counts per statement from transition tables: a per-row trigger would update
# one counts row once per job, and repeated updates of one row in one transaction slow
# down as its version chain grows (inserting 10^5 jobs took minutes).
_POSTGRESQL_TRIGGERS = [
    """
    CREATE FUNCTION dpct_job_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO workflow_job_counts (workflow_id, status, n)
      SELECT workflow_id, status, count(*) FROM new_rows GROUP BY workflow_id, status
      ON CONFLICT (workflow_id, status) DO UPDATE SET n = workflow_job_counts.n + EXCLUDED.n;
      RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION dpct_job_counts_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      WITH changed AS (
        SELECT o.workflow_id, o.status AS old_status, n.status AS new_status
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE o.status IS DISTINCT FROM n.status
      ), deltas AS (
        SELECT workflow_id, old_status AS status, -count(*) AS d FROM changed
        GROUP BY workflow_id, old_status
        UNION ALL
        SELECT workflow_id, new_status, count(*) FROM changed GROUP BY workflow_id, new_status
      )
      INSERT INTO workflow_job_counts (workflow_id, status, n)
      SELECT workflow_id, status, sum(d) FROM deltas GROUP BY workflow_id, status
      ORDER BY workflow_id, status
      ON CONFLICT (workflow_id, status) DO UPDATE SET n = workflow_job_counts.n + EXCLUDED.n;
      RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION dpct_job_counts_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      UPDATE workflow_job_counts c SET n = c.n - g.n
      FROM (SELECT workflow_id, status, count(*) AS n FROM old_rows
            GROUP BY workflow_id, status) g
      WHERE c.workflow_id = g.workflow_id AND c.status = g.status;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dpct_job_counts_insert()
    """,
    """
    CREATE TRIGGER jobs_count_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dpct_job_counts_update()
    """,
    """
    CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dpct_job_counts_delete()
    """,
]


def _create_count_triggers() -> None:
    dialect = op.get_bind().dialect.name
    statements = _POSTGRESQL_TRIGGERS if dialect == "postgresql" else _SQLITE_TRIGGERS
    for statement in statements:
        op.execute(statement)


def _drop_count_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for kind in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS jobs_count_{kind} ON jobs")
            op.execute(f"DROP FUNCTION IF EXISTS dpct_job_counts_{kind}()")
    else:
        for name in ("jobs_count_insert", "jobs_count_update", "jobs_count_delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
