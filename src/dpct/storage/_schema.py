"""The metadata database schema: every table, for SQLite and PostgreSQL alike.

Times are UTC epoch seconds (double precision): one representation on both backends,
cheap to compare, and a controllable clock in tests is a plain float. OBMT instants are
integer nanoseconds (``*_ns``), as on board.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""Primary keys: BIGINT on PostgreSQL, INTEGER on SQLite so that it aliases the rowid."""

Time = sa.Double()

configurations = sa.Table(
    "configurations",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
)

solutions = sa.Table(
    "solutions",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("output_type", sa.String(128), nullable=False),
    sa.Column("generation_time", Time, nullable=False),
    sa.Column("automatically_generated", sa.Boolean, nullable=False),
    sa.Column("software_version", sa.String(64), nullable=False),
    sa.Column("task_type", sa.String(128)),
    sa.Column("configuration_id", Id, sa.ForeignKey("configurations.id")),
    sa.Column("job_id", Id),
)

solution_inputs = sa.Table(
    "solution_inputs",
    metadata,
    sa.Column("solution_id", Id, sa.ForeignKey("solutions.id"), primary_key=True),
    sa.Column("input_solution_id", Id, sa.ForeignKey("solutions.id"), primary_key=True),
    sa.Column("input_type", sa.String(128), nullable=False),
    sa.Index(None, "input_solution_id"),
)

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("data_type", sa.String(128), nullable=False),
    sa.Column("type_version", sa.Integer, nullable=False),
    sa.Column("obmt_start_ns", sa.BigInteger, nullable=False),
    sa.Column("obmt_end_ns", sa.BigInteger, nullable=False),
    sa.Column("ccd", sa.Integer),
    sa.Column("fov", sa.Integer),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("checksum", sa.String(80), nullable=False),
    sa.Column("location", sa.Text, nullable=False),
    sa.Column("solution_id", Id, sa.ForeignKey("solutions.id")),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("job_id", Id),
    sa.Column("transfer_id", Id),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("retracted_at", Time),
    sa.Column("deleted_at", Time),
    sa.Index(None, "data_type", "obmt_start_ns"),
    sa.Index(None, "solution_id"),
    sa.Index(None, "checksum"),
    sa.Index(None, "transfer_id"),
)

workflow_descriptors = sa.Table(
    "workflow_descriptors",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.UniqueConstraint("name", "version"),
)

workflows = sa.Table(
    "workflows",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("descriptor_id", Id, sa.ForeignKey("workflow_descriptors.id"), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("persistence_id", sa.BigInteger, nullable=False),
    sa.Column("run_id", Id),
    sa.Column("transfer_id", Id),
    sa.Column("data_type", sa.String(128), nullable=False),
    sa.Column("obmt_start_ns", sa.BigInteger, nullable=False),
    sa.Column("obmt_end_ns", sa.BigInteger, nullable=False),
    sa.Column("ccd", sa.Integer),
    sa.Column("fov", sa.Integer),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("trigger", sa.String(64), nullable=False),
    sa.Column("n_jobs", sa.Integer, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("started_at", Time),
    sa.Column("ended_at", Time),
    sa.Index(None, "status", "id"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("workflow_id", Id, sa.ForeignKey("workflows.id"), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("step", sa.String(128), nullable=False),
    sa.Column("task_type", sa.String(128), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("data_type", sa.String(128), nullable=False),
    sa.Column("obmt_start_ns", sa.BigInteger, nullable=False),
    sa.Column("obmt_end_ns", sa.BigInteger, nullable=False),
    sa.Column("ccd", sa.Integer),
    sa.Column("fov", sa.Integer),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("cores", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("time_limit_s", sa.Double),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("pending_deps", sa.Integer, nullable=False),
    sa.Column("not_before", Time, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("ready_at", Time),
    sa.Column("started_at", Time),
    sa.Column("ended_at", Time),
    sa.Column("lease_token", sa.String(32)),
    sa.Column("lease_until", Time),
    sa.Column("node", sa.String(64)),
    sa.Column("solution_id", Id),
    sa.Column("log_path", sa.Text),
    sa.Column("error_class", sa.String(128)),
    sa.Column("error_message", sa.Text),
    sa.UniqueConstraint("workflow_id", "seq"),
    sa.Index(None, "workflow_id", "status", "id"),
    # Leasing reads QUEUED jobs by priority (high first), then id (oldest first): the
    # index must match that mixed order, or every lease sorts the whole queue.
    sa.Index("ix_jobs_queue", "status", sa.desc("priority"), "id"),
)

job_deps = sa.Table(
    "job_deps",
    metadata,
    sa.Column("job_id", Id, sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("upstream_id", Id, sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Index(None, "upstream_id"),
)

workflow_job_counts = sa.Table(
    "workflow_job_counts",
    metadata,
    sa.Column("workflow_id", Id, sa.ForeignKey("workflows.id"), primary_key=True),
    sa.Column("status", sa.String(24), primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)
"""Per-status job counts, kept by database triggers on ``jobs`` so they never drift."""

task_limits = sa.Table(
    "task_limits",
    metadata,
    sa.Column("task_type", sa.String(128), primary_key=True),
    sa.Column("max_running", sa.Integer, nullable=False),
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("slots", sa.Integer, nullable=False),
    sa.Column("started_at", Time, nullable=False),
    sa.Column("heartbeat_at", Time, nullable=False),
)

coordinator_lease = sa.Table(
    "coordinator_lease",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("token", sa.String(36), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("since", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
)
"""One row: which coordinator is active (its node-monitor name and token) and until when."""

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("time", Time, nullable=False),
    sa.Column("subsystem", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("object_type", sa.String(32), nullable=False),
    sa.Column("object_id", sa.String(128), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Index(None, "object_type", "object_id"),
)

job_logs = sa.Table(
    "job_logs",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("job_id", Id, nullable=False),
    sa.Column("workflow_id", Id, nullable=False),
    sa.Column("subsystem", sa.String(16), nullable=False),
    sa.Column("task_name", sa.String(128), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("max_backup_number", sa.Integer, nullable=False),
    sa.Index(None, "job_id"),
)

trigger_firings = sa.Table(
    "trigger_firings",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("descriptor", sa.String(128), nullable=False),
    sa.Column("key", sa.String(128), nullable=False),
    sa.Column("workflow_id", Id),
    sa.Column("fired_at", Time, nullable=False),
    sa.UniqueConstraint("descriptor", "key"),
)
"""One row per trigger firing: the unique key makes a firing happen at most once."""

cursors = sa.Table(
    "cursors",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("position", sa.Double, nullable=False),
)
"""Named high-water marks (last dataset id seen by data triggers, last calendar tick)."""

transfers = sa.Table(
    "transfers",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("direction", sa.String(8), nullable=False),
    sa.Column("peer", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("files", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("registered", sa.Integer, nullable=False),
    sa.Column("duplicates", sa.Integer, nullable=False),
    sa.Column("quarantined", sa.Integer, nullable=False),
    sa.Column("started_at", Time, nullable=False),
    sa.Column("ended_at", Time),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("host", sa.String(255), nullable=False, server_default=""),
    sa.Column("pid", sa.Integer, nullable=False, server_default="0"),
    sa.Column("pid_start", sa.BigInteger),
    sa.Column("heartbeat_at", Time),
)
"""DTS: one row per delivery pulled in or pushed out (the seed's TRANSFERID).

``host``, ``pid`` and ``pid_start`` (the process's start time, against pid reuse) name
the process running it, and ``heartbeat_at`` says when it last showed life: a RUNNING
transfer whose process is gone is marked FAILED by ``recover_stale_transfers``.
"""

transfer_claims = sa.Table(
    "transfer_claims",
    metadata,
    sa.Column("checksum", sa.String(80), primary_key=True),
    sa.Column("data_type", sa.String(128), primary_key=True),
    sa.Column("transfer_id", Id, sa.ForeignKey("transfers.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("location", sa.Text, nullable=False),
    sa.Column("claimed_at", Time, nullable=False),
    sa.Index(None, "transfer_id"),
)
"""DTS: which running pull owns a file's bytes (checksum and type) until it registers them.

The primary key makes the claim exclusive: two pulls never fetch, store or register the
same bytes at once. ``location`` is where the file goes in the store, written before it
is moved there, so a pull that dies leaves no store file that nothing points at.
"""

transfer_files = sa.Table(
    "transfer_files",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("transfer_id", Id, sa.ForeignKey("transfers.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("data_type", sa.String(128), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("checksum", sa.String(80), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("dataset_id", Id),
    sa.Column("location", sa.Text, nullable=False),
    sa.Index(None, "transfer_id"),
)
"""DTS: each file of a delivery, with what became of it (registered, duplicate, quarantined)."""

retention_rules = sa.Table(
    "retention_rules",
    metadata,
    sa.Column("data_type", sa.String(128), primary_key=True),
    sa.Column("keep_days", sa.Double, nullable=False),
)
"""DSS: how long the files of a data type are kept after registration."""

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("sw", sa.String(16), nullable=False),
    sa.Column("obmt_start_ns", sa.BigInteger, nullable=False),
    sa.Column("obmt_end_ns", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("closed", sa.Boolean, nullable=False),
    sa.Column("ignored", sa.Boolean, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("ended_at", Time),
    sa.Index(None, "sw", "obmt_start_ns"),
)
"""RMS/DSS: a pipeline run (the seed's RUNID) over an OBMT range; workflows.run_id points here."""

aim_runs = sa.Table(
    "aim_runs",
    metadata,
    sa.Column("run_id", Id, sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("active_processing", sa.Boolean, nullable=False),
    sa.Column("solution_id", Id),
    sa.Column("solution_ids_processed", sa.Text, nullable=False),
    sa.Column("solution_ids_to_be_processed", sa.Text, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)
"""RMS: the AimRun table, extending an AIM run (IDENTIFIER = runs.id; STATUS, CLOSED and
WORKFLOWIDS live in runs and workflows) with what it processed and what it produced."""

run_checks = sa.Table(
    "run_checks",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("sw", sa.String(16), nullable=False),
    sa.Column("start_check_ns", sa.BigInteger, nullable=False),
    sa.Column("end_check_ns", sa.BigInteger, nullable=False),
    sa.Column("check_status", sa.String(16), nullable=False),
    sa.Column("delete_status", sa.String(16), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
)
"""DSS: run check closure, the seed's table (Id, Sw, Start_check, End_check, statuses, Note)."""

run_check_errors = sa.Table(
    "run_check_errors",
    metadata,
    sa.Column("id", Id, primary_key=True),
    sa.Column("check_id", Id, sa.ForeignKey("run_checks.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("obmt_start_ns", sa.BigInteger, nullable=False),
    sa.Column("obmt_end_ns", sa.BigInteger, nullable=False),
    sa.Column("run_ids", sa.Text, nullable=False),
    sa.Index(None, "check_id"),
)
"""The error view of a closure check: each gap or overlap found, with the runs involved."""
