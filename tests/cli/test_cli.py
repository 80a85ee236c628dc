"""The `dpct` command against a fresh database per test.

Each test checks the exit code and the text an operator reads; JSON output is compared
with what the service functions (and the tables behind them) say in this process.
Commands run through ``dpct.cli.main`` in this process (``cli``); the real command as a
subprocess (``process``, marked slow) where the process is the point: the environment
of a fresh interpreter and the demo's own processing nodes. Jobs are run in-process
with ``run_inline`` so the tests stay fast and deterministic.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.cli.runners import Cli, InProcess, cli_env

from dpct.config import Settings
from dpct.events import service as event_service
from dpct.processing import run_inline
from dpct.storage import Database, head_revision, node_down, node_up
from dpct.storage._schema import jobs as jobs_table
from dpct.storage._schema import metadata
from dpct.tasks import TASK_TYPES
from dpct.testing import FakeClock
from dpct.workflows import service

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
DAY = 5000
UNREACHABLE = "postgresql://nobody:s3cret@127.0.0.1:1/x"

CHAIN = """\
name = "CliChain"
version = 1
description = "make four quarter-day chunks, then scale the whole day"
data_type = "testing_counts"
priority = 7

[[steps]]
name = "make"
task = "testing.make"
partition = "6h"
params = { rows = 5 }

[[steps]]
name = "scale"
task = "testing.scale"
partition = "day"
depends_on = ["make"]
params = { factor = 3.0 }
"""


@pytest.fixture
def cli(settings: Settings) -> InProcess:
    return InProcess(cli_env(settings.home, settings.database_url))


@pytest.fixture
def process(settings: Settings, tmp_path: Path) -> Cli:
    """The real command, where a process of its own is the point."""
    return Cli(cli_env(settings.home, settings.database_url), tmp_path)


def _run_jobs(db: Database, settings: Settings, clock: FakeClock) -> list[int]:
    """Run ready jobs in this process; the CLI stamps submissions with the wall clock."""
    clock.now = max(clock.now, time.time() + 1.0)
    return run_inline(db, settings, clock)


def _dump(db: Database) -> dict[str, list[tuple]]:
    """Every row of every table, in a stable order, to compare before and after."""
    with db.read() as conn:
        out = {
            table.name: [
                tuple(r)
                for r in conn.execute(sa.select(table).order_by(*table.primary_key.columns))
            ]
            for table in metadata.sorted_tables
        }
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    out["alembic_version"] = [tuple(r) for r in version]
    return out


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------- database state


def test_schema_lifecycle_empty_upgrade_status_old(
    cli: InProcess, db_url: str, backend: str
) -> None:
    """Missing or empty database → told to upgrade; upgrade; status current; older schema →
    told again; a revision this dpct does not know → told not to migrate it."""
    line = cli.error("workflow", "list", rc=5)
    if backend == "sqlite":  # no file yet: reading commands must not create one
        assert "there is no metadata database at" in line
        assert line.endswith("create it with `dpct db upgrade`")
        assert not Path(db_url.removeprefix("sqlite:///")).exists()
    else:
        assert "is empty" in line and line.endswith("run `dpct db upgrade`")

    out = cli.run("db", "upgrade").stdout
    assert f"empty → {head_revision()}" in out
    status = cli.json("db", "status")
    assert status == {
        "url": status["url"],
        "backend": backend,
        "revision": head_revision(),
        "head": head_revision(),
        "current": True,
    }

    cli.run("db", "downgrade", "base")  # the oldest schema there is: none
    line = cli.error("workflow", "list", rc=5)
    assert "is empty" in line and f"needs revision {head_revision()}" in line
    assert line.endswith("run `dpct db upgrade`")
    cli.run("db", "upgrade")

    db = Database(db_url)
    try:
        with db.write() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0000'")
    finally:
        db.dispose()
    line = cli.error("workflow", "list", rc=5)
    assert "at schema revision '0000', which this dpct does not know" in line
    line = cli.error("db", "upgrade", rc=5)
    assert "refusing to migrate it" in line


@pytest.mark.slow
@SQLITE_ONLY
def test_unreachable_database_is_one_clear_line(process: Cli) -> None:
    process.env["DPCT_DATABASE_URL"] = UNREACHABLE
    line = process.error("workflow", "list", rc=5)
    assert "cannot reach the metadata database at " in line
    assert "127.0.0.1:1/x" in line
    assert "check DPCT_DATABASE_URL and that the server runs" in line
    assert "s3cret" not in line  # the password is never printed


# ---------------------------------------------------------------- descriptors


BAD_DESCRIPTORS = {
    "unknown_task.toml": (
        """\
name = "CliChain"
version = 2
data_type = "testing_counts"
[[steps]]
name = "calib[v2]"
task = "nope.missing"
""",
        ["step 'calib[v2]'", "field 'task'", "unknown task type 'nope.missing'"],
    ),
    "cycle.toml": (
        """\
name = "CliChain"
version = 2
data_type = "testing_counts"
[[steps]]
name = "first"
task = "testing.noop"
depends_on = ["second"]
[[steps]]
name = "second"
task = "testing.noop"
depends_on = ["first"]
""",
        ["field 'depends_on'", "dependency cycle through"],
    ),
    "bad_param.toml": (
        """\
name = "CliChain"
version = 2
data_type = "testing_counts"
[[steps]]
name = "make"
task = "testing.make"
params = { rows = "many" }
""",
        ["step 'make'", "field 'params'", "task type 'testing.make'", "rows"],
    ),
}


@SQLITE_ONLY
def test_bad_descriptors_name_file_step_field_and_lose_nothing(
    cli: InProcess, db: Database, settings: Settings, tmp_path: Path, clock: FakeClock
) -> None:
    good = _write(tmp_path / "chain.toml", CHAIN)
    service.register_descriptor(db, good)
    service.submit(db, "CliChain", service.day_spec("testing_counts", DAY))
    _run_jobs(db, settings, clock)
    listed_before = cli.run("workflow", "list", "--json").stdout
    stored_before = _dump(db)
    assert stored_before["jobs"] and stored_before["datasets"]
    assert json.loads(listed_before)[0]["workflow"]["status"] == "SUCCESS"

    paths = [_write(tmp_path / name, text) for name, (text, _) in BAD_DESCRIPTORS.items()]
    lines = cli.errors([["workflow", "register", str(path)] for path in paths], rc=2)
    for path, line, (_, expected) in zip(paths, lines, BAD_DESCRIPTORS.values(), strict=True):
        assert line.startswith(f"error: file {path}"), line
        for part in expected:
            assert part in line, f"{path.name}: {part!r} not in {line!r}"

    # Same name and version with other content: refused; raising the version is the way.
    changed = _write(tmp_path / "changed.toml", CHAIN.replace("rows = 5", "rows = 6"))
    line = cli.error("workflow", "register", str(changed), rc=4)
    assert "'CliChain' version 1 is already registered with different content" in line
    assert "raise the version number" in line

    assert cli.run("workflow", "list", "--json").stdout == listed_before
    assert _dump(db) == stored_before


# ---------------------------------------------------------------- views after a run


def _run_chain(db: Database, settings: Settings, clock: FakeClock, tmp_path: Path) -> int:
    service.register_descriptor(db, _write(tmp_path / "chain.toml", CHAIN))
    wf = service.submit(db, "CliChain", service.day_spec("testing_counts", DAY))
    _run_jobs(db, settings, clock)
    return wf


@SQLITE_ONLY
def test_json_views_reflect_the_database(
    cli: InProcess, db: Database, settings: Settings, tmp_path: Path, clock: FakeClock
) -> None:
    registered = cli.json("workflow", "register", str(_write(tmp_path / "chain.toml", CHAIN)))
    assert [(d["name"], d["version"], d["active"]) for d in registered] == [("CliChain", 1, True)]
    submitted = cli.json("workflow", "submit", "CliChain", "--day", str(DAY))
    _run_jobs(db, settings, clock)
    wf = submitted["workflow"]["id"]
    assert submitted["workflow"]["name"] == "CliChain"
    assert submitted["workflow"]["status"] == "NEW"
    assert submitted["workflow"]["n_jobs"] == 5
    assert submitted["workflow"]["priority"] == 7
    assert submitted["workflow"]["spec"]["text"].endswith(f"day {DAY}")
    assert submitted["counts"] == {"QUEUED": 4, "WAITING": 1}

    jobs = service.jobs(db, wf, page_size=100)
    make = [j for j in jobs if j.step == "make"]
    (scale,) = [j for j in jobs if j.step == "scale"]
    assert len(make) == 4 and all(j.status == "SUCCESS" for j in jobs)
    now = clock()
    with db.write() as conn:
        for name in ("pfs.pr1", "pfs.pr2"):
            node_up(conn, name=name, role="node", host="h", pid=4242, slots=2, now=now)
        node_down(conn, "pfs.pr2", now, "test")

    commands = [
        ["workflow", "list", "--json"],
        ["workflow", "show", str(wf), "--json"],
        ["job", "list", str(wf), "--json"],
        ["job", "show", str(scale.id), "--json"],
        ["events", "-n", "1000", "--json"],
        ["node", "list", "--json"],
        ["tasks", "--json"],
        ["lineage", str(scale.solution_id), "--json"],
        ["lineage", str(make[0].solution_id), "--json"],
        ["job", "show", str(scale.id)],
    ]
    out = [p.stdout for p in cli.many(commands)]
    wf_list, wf_show, job_list, job_show, events, nodes, tasks, down, up = (
        json.loads(o) for o in out[:-1]
    )
    job_text = out[-1]

    # workflow list / show: the stored workflow, its counts kept by the triggers.
    view = service.workflow(db, wf)
    (listed,) = wf_list
    assert listed["workflow"]["id"] == wf and listed["workflow"]["status"] == "SUCCESS"
    assert listed["workflow"]["persistence_id"] == view.workflow.persistence_id == 1
    assert listed["counts"] == view.counts == {"SUCCESS": 5}
    with db.read() as conn:  # the trigger-kept counts agree with the jobs themselves
        counted = conn.execute(
            sa.select(jobs_table.c.status, sa.func.count())
            .where(jobs_table.c.workflow_id == wf)
            .group_by(jobs_table.c.status)
        ).all()
    assert dict(counted) == listed["counts"]
    assert wf_show["workflow"] == listed["workflow"]
    assert wf_show["counts"] == {"SUCCESS": 5}
    assert [j["id"] for j in wf_show["jobs"]] == [j.id for j in jobs]

    # job list / show: ids, statuses, solution ids, attempts, node, upstream jobs.
    assert [
        (j["id"], j["step"], j["status"], j["solution_id"], j["attempts"], j["node"])
        for j in job_list
    ] == [(j.id, j.step, j.status, j.solution_id, j.attempts, j.node) for j in jobs]
    assert job_list == wf_show["jobs"]
    assert job_show["job"] == job_list[-1]
    assert sorted(job_show["upstream"]) == sorted(j.id for j in make)
    assert job_show["job"]["spec"]["data_type"] == "testing_counts"
    assert job_show["job"]["log_path"].endswith(f"workflow-{wf}/job-{scale.id}.log")
    assert re.search(rf"│ {scale.id} +│ SUCCESS +│ {scale.solution_id} +│ log ", job_text)
    assert f"step scale; params {scale.params}" in job_text
    assert f"depends on {sorted(j.id for j in make)}" in job_text

    # events: exactly the stored rows, newest first; the kind filter keeps job events.
    stored = [dataclasses.asdict(e) for e in event_service.events(db, limit=1000)]
    assert events == stored
    kinds = [e["kind"] for e in events]
    assert kinds.count("job.started") == 5 and kinds.count("job.success") == 5
    assert kinds.count("dataset.registered") == 5
    assert {"workflow.submitted", "workflow.running", "workflow.success"} <= set(kinds)
    assert "node.down" in kinds and kinds.count("node.up") == 2

    # node monitor
    assert [(n["name"], n["status"], n["slots"], n["pid"]) for n in nodes] == [
        ("pfs.pr1", "UP", 2, 4242),
        ("pfs.pr2", "DOWN", 2, 4242),
    ]

    # task types: every listed type matches its declaration; plugin and demo included.
    names = {t["name"] for t in tasks}
    assert {"testing.make", "testing.scale", "example.double", "demo.ingest"} <= names
    for t in tasks:
        declared = TASK_TYPES.get(t["name"])
        assert t == {
            "name": declared.name,
            "version": declared.version,
            "inputs": dict(declared.inputs),
            "outputs": dict(declared.outputs),
            "cores": declared.cores,
            "max_attempts": declared.max_attempts,
            "time_limit_s": declared.time_limit_s,
            "max_running": declared.max_running,
        }

    # lineage: the day's scale was made from the four quarter-day makes.
    make_solutions = sorted(j.solution_id for j in make)
    assert down["solution"]["id"] == scale.solution_id
    assert down["ancestors"] == make_solutions
    assert down["descendants"] == []
    assert list(down["solution"]["input_solution_ids"]) == make_solutions
    assert down["solution"]["task_type"] == "testing.scale"
    assert down["solution"]["output_type"] == "testing_counts"
    assert down["solution"]["automatically_generated"] is True
    assert down["solution"]["software_version"].startswith("testing.scale@1 dpct@")
    assert up["ancestors"] == [] and up["descendants"] == [scale.solution_id]


@SQLITE_ONLY
def test_resume_cancel_wrong_state_and_missing_objects(
    cli: InProcess, db: Database, settings: Settings, tmp_path: Path, clock: FakeClock
) -> None:
    fixed = tmp_path / "fixed"
    failing = f"""\
name = "CliFail"
version = 1
data_type = "testing_counts"
[[steps]]
name = "check"
task = "testing.fail"
params = {{ kind = "permanent", unless_file = "{fixed}" }}
[[steps]]
name = "after"
task = "testing.noop"
depends_on = ["check"]
"""
    ok = _run_chain(db, settings, clock, tmp_path)
    service.register_descriptor(db, _write(tmp_path / "fail.toml", failing))
    bad = service.submit(db, "CliFail", service.day_spec("testing_counts", DAY))
    _run_jobs(db, settings, clock)
    failed = next(j for j in service.jobs(db, bad) if j.status == "FAILED")

    errors = {
        ("workflow", "resume", str(ok)): (4, f"workflow {ok} has no failed jobs to resume"),
        ("workflow", "cancel", "999"): (3, "workflow 999 does not exist; list them with"),
        ("lineage", "999"): (3, "solution id 999 does not exist"),
    }
    log = cli.run("job", "logs", str(failed.id))
    lines = [cli.error(*args, rc=rc) for args, (rc, _) in errors.items()]
    for line, (_, text) in zip(lines, errors.values(), strict=True):
        assert text in line, line
    assert "this input can never be processed" in log.stdout
    assert "Traceback" in log.stdout
    view = service.workflow(db, bad)
    assert view.workflow.status == "FAILED"
    assert view.counts == {"FAILED": 1, "UPSTREAM_FAILED": 1}

    fixed.touch()
    assert cli.json("workflow", "resume", str(bad)) == {"failed": 1, "upstream_failed": 1}
    _run_jobs(db, settings, clock)
    assert service.workflow(db, bad).counts == {"SUCCESS": 2}
    assert service.workflow(db, ok).workflow.status == "SUCCESS"


# ---------------------------------------------------------------- the demo


@pytest.mark.slow  # the demo starts a coordinator and nodes of its own
@SQLITE_ONLY
def test_demo_end_to_end(process: Cli, settings: Settings) -> None:
    proc = process.run("demo", "--day", "4000", "--timeout", "120", timeout=150)
    assert "demo succeeded" in proc.stdout
    # The day's triggers have fired: a second demo of that day could never complete.
    line = process.error("demo", "--day", "4000", rc=2)
    assert "the demo already ran for OBMT day 4000" in line
    views = process.json("workflow", "list")
    assert sorted((v["workflow"]["name"], v["workflow"]["status"]) for v in views) == [
        ("DemoDailyProcessingWorkflow", "SUCCESS"),
        ("DemoIngestAutWorkflow", "SUCCESS"),
        ("DemoReportAutWorkflow", "SUCCESS"),
    ]
    assert all(v["workflow"]["spec"]["text"].endswith("day 4000") for v in views)
    # The report's lineage reaches back through the summary to the ingested samples.
    db = Database(settings.url)
    try:
        by_name = {v["workflow"]["name"]: v["workflow"]["id"] for v in views}
        (report,) = service.jobs(db, by_name["DemoReportAutWorkflow"])
        ingest = service.jobs(db, by_name["DemoIngestAutWorkflow"])
        ancestors = service.solution_lineage(db, report.solution_id).ancestors
        assert {j.solution_id for j in ingest} <= set(ancestors)
        assert (settings.home / "logs" / f"workflow-{by_name['DemoReportAutWorkflow']}").is_dir()
    finally:
        db.dispose()
    # The datasets listing shows every registered product, and the files are there.
    listed = process.json("datasets", "--limit", "1000")
    assert sum(1 for d in listed if d["spec"]["data_type"] == "demo_raw") == 12
    report_ds = [d for d in listed if d["spec"]["data_type"] == "demo_report"]
    assert len(report_ds) == 1 and report_ds[0]["solution_id"] == report.solution_id
    assert all(Path(d["location"]).stat().st_size == d["bytes"] for d in listed)
