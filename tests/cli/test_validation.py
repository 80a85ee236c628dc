"""Bad input is refused at the edge: one line naming it, the documented exit code, no
traceback, and nothing stored changed.

Most commands run in this process through ``dpct.cli.main`` (the real error mapping,
without an interpreter start per command); a node's start, a read-only database (a
process without root's capabilities) and ``--wait`` (a second program while jobs run
here) run the real ``dpct`` as a subprocess, marked slow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.cli.runners import Cli, InProcess, cli_env
from tests.cli.test_cli import CHAIN, SQLITE_ONLY, _dump, _write
from tests.helpers import wait_for

import dpct.plugins as plugins
from dpct.config import Settings
from dpct.processing import run_inline
from dpct.storage import Database
from dpct.testing import FakeClock, sqlite_database
from dpct.workflows import service


@pytest.fixture
def dpct(db: Database, settings: Settings) -> InProcess:
    return InProcess(cli_env(settings.home, settings.database_url))


@pytest.fixture
def cli(settings: Settings, tmp_path: Path) -> Cli:
    """The real ``dpct`` as a subprocess, for what must start a fresh interpreter."""
    return Cli(cli_env(settings.home, settings.database_url), tmp_path)


# ---------------------------------------------------------------- descriptors


UNKNOWN_TYPES = {
    "workflow_type.toml": (
        'name = "Typo"\nversion = 1\ndata_type = "testing_cuonts"\n'
        '[[steps]]\nname = "s"\ntask = "testing.noop"\n',
        ["field 'data_type'", "no data type 'testing_cuonts'", "testing_counts"],
    ),
    "trigger_type.toml": (
        'name = "Never"\nversion = 1\ndata_type = "testing_counts"\n'
        '[trigger]\nkind = "data"\ndata_type = "no_such_type"\n'
        '[[steps]]\nname = "s"\ntask = "testing.noop"\n',
        ["field 'trigger.data_type'", "no data type 'no_such_type'", "DPCT_TASK_MODULES"],
    ),
    "negative_priority.toml": (
        CHAIN.replace("priority = 7", "priority = -5"),
        ["field 'priority'", "priority must be ≥ 0", "not -5"],
    ),
}


def test_descriptor_with_unknown_data_type_or_negative_priority_is_refused(
    dpct: InProcess, db: Database, tmp_path: Path
) -> None:
    """A trigger on a type nothing registers could never fire: refused, nothing stored.
    Every shipped pipeline (types declared by entry points) still installs."""
    dpct.run("workflow", "register", str(_write(tmp_path / "chain.toml", CHAIN)))
    before = _dump(db)
    for name, (text, expected) in UNKNOWN_TYPES.items():
        path = _write(tmp_path / name, text)
        line = dpct.error("workflow", "register", str(path), rc=2)
        assert line.startswith(f"error: file {path}, field "), line
        for part in expected:
            assert part in line, f"{name}: {part!r} not in {line!r}"
    assert _dump(db) == before

    shipped = sorted(service.shipped_pipelines())
    out = dpct.run("workflow", "install", *shipped, "--json").stdout
    assert {row["name"] for row in json.loads(out)} >= {
        "HKIngestAutWorkflow",
        "BAMDailyProcessingWorkflow",
        "AIMDailyProcessingWorkflow",
        "GsrRunWorkflow",
        "DemoIngestAutWorkflow",
    }


# ---------------------------------------------------------------- numbers on the command line


@SQLITE_ONLY
def test_out_of_range_numbers_and_unknown_statuses_are_one_line_and_change_nothing(
    dpct: InProcess, db: Database, tmp_path: Path
) -> None:
    dpct.run("workflow", "register", str(_write(tmp_path / "chain.toml", CHAIN)))
    wf = str(service.submit(db, "CliChain", service.day_spec("testing_counts", 5000)))
    before = _dump(db)
    refused = {
        ("node", "start", "--name", "pr1", "--slots", "0"): "--slots must be at least 1, not 0",
        ("workflow", "submit", "CliChain", "--day", "-5"): "--day must be at least 0, not -5",
        (
            "workflow",
            "submit",
            "CliChain",
            "--day",
            "5",
            "--days",
            "0",
        ): "--days must be at least 1, not 0",
        ("workflow", "submit", "CliChain", "--day", "5", "--priority", "-5"): (
            "--priority must be at least 0, not -5"
        ),
        ("workflow", "submit", "CliChain", "--day", "5", "--version", "0"): (
            "--version must be at least 1, not 0"
        ),
        ("workflow", "show", wf, "--page", "-1"): "--page must be at least 0, not -1",
        ("workflow", "show", wf, "--page-size", "0"): "--page-size must be at least 1, not 0",
        ("job", "list", wf, "--page", "-1"): "--page must be at least 0, not -1",
        ("workflow", "list", "-n", "0"): "--how-many must be at least 1, not 0",
        # A negative number used to read as an unknown option; now it reaches the check.
        ("workflow", "priority", wf, "-5"): "PRIORITY must be at least 0, not -5",
        ("workflow", "priority", wf, "--", "-5"): "PRIORITY must be at least 0, not -5",
        ("workflow", "backfill", "CliChain", "--from-day", "-5", "--to-day", "1"): (
            "--from-day must be at least 0, not -5"
        ),
        ("run", "create", "--sw", "AIM", "--day", "-1"): "--day must be at least 0, not -1",
        ("closure", "check", "--sw", "AIM", "--day", "1", "--days", "0"): (
            "--days must be at least 1, not 0"
        ),
        ("run", "list", "-n", "0"): "--how-many must be at least 1, not 0",
        ("events", "-n", "0"): "--limit must be at least 1, not 0",
        ("datasets", "-n", "-3"): "--limit must be at least 1, not -3",
        # A status filter that matches nothing used to print an empty table.
        ("workflow", "list", "--status", "FIALED"): (
            "--status: unknown workflow status 'FIALED'; use one of NEW, RUNNING, SUCCESS, "
            "FAILED, PARTIALLYSUCCESS, CANCELLED"
        ),
        ("workflow", "show", wf, "--status", "DONE"): "--status: unknown job status 'DONE'; use",
    }
    for args, message in refused.items():
        assert dpct.error(*args, rc=2).startswith(f"error: {message}"), args
    assert _dump(db) == before
    assert dpct.run("workflow", "priority", wf, "0").stdout.startswith(f"workflow {wf}: priority 0")
    assert '"QUEUED"' in dpct.run("job", "list", wf, "--status", "queued", "--json").stdout


# ---------------------------------------------------------------- configuration


@SQLITE_ONLY
def test_bad_settings_are_refused_naming_variable_and_value(dpct: InProcess) -> None:
    refused = {
        ("DPCT_LEASE_S", "-1"): "DPCT_LEASE_S=-1: Input should be greater than 0",
        ("DPCT_HEARTBEAT_S", "0"): "DPCT_HEARTBEAT_S=0: Input should be greater than 0",
        ("DPCT_COORDINATOR_TICK_S", "-0.5"): "DPCT_COORDINATOR_TICK_S=-0.5: Input should be",
        ("DPCT_RETRY_BACKOFF_S", "-1"): "DPCT_RETRY_BACKOFF_S=-1: Input should be greater",
        ("DPCT_LOG_BACKUPS", "-1"): "DPCT_LOG_BACKUPS=-1: Input should be greater",
        ("DPCT_LEASE_S", "1"): "DPCT_LEASE_S (1 s) must be longer than DPCT_HEARTBEAT_S (2 s)",
    }
    for (variable, value), message in refused.items():
        line = dpct.error("workflow", "list", rc=2, **{variable: value})
        assert line.startswith(f"error: {message}"), line
    dpct.run("workflow", "list", DPCT_RETRY_BACKOFF_S="0", DPCT_LOG_MAX_BYTES="0")


@SQLITE_ONLY
def test_unimportable_task_module_is_one_config_line(
    dpct: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugins, "_loaded_entry_points", False)  # as in a fresh process
    bad = {"DPCT_TASK_MODULES": "dpct.testing.tasks, no_such_module"}
    for _ in range(2):  # and again: a failed load is not taken for a done one
        line = dpct.error("tasks", rc=2, **bad)
        assert line == (
            "error: DPCT_TASK_MODULES names 'no_such_module', which cannot be imported "
            "(No module named 'no_such_module'); install it or fix the variable "
            "(comma-separated module names)"
        )
    dpct.run("tasks")


@pytest.mark.slow
@SQLITE_ONLY
def test_node_with_unimportable_task_module_stops_at_start(cli: Cli, db: Database) -> None:
    cli.env["DPCT_TASK_MODULES"] = "no_such_module"
    line = cli.error("node", "start", "--name", "pr1", rc=2)
    assert "DPCT_TASK_MODULES names 'no_such_module'" in line
    with db.read() as conn:  # it never registered in the node monitor
        assert not conn.exec_driver_sql("SELECT * FROM nodes").all()


# ---------------------------------------------------------------- the SQLite file


def _sqlite_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    home = tmp_path / "home"
    home.mkdir()
    db = sqlite_database(home / "dpct.sqlite3")
    db.dispose()  # no -wal or -shm left behind
    return cli_env(home, ""), home / "dpct.sqlite3"


def test_a_file_that_is_not_a_database_is_one_storage_line(tmp_path: Path) -> None:
    env, path = _sqlite_env(tmp_path)
    cli = InProcess(env)
    path.write_bytes(b"these are not the bytes of an SQLite database\n" * 100)
    content = path.read_bytes()
    for args in (("workflow", "list"), ("db", "upgrade")):
        line = cli.error(*args, rc=5)
        assert f"error: {path} is not a usable SQLite database (file is not a database)" in line
        assert "restore it from a backup" in line and "server" not in line
    assert path.read_bytes() == content


def _unprivileged(cli: Cli) -> Cli:
    """Make file permissions apply: as root, run without the capabilities that bypass them."""
    if os.geteuid() != 0:
        return cli
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions would not apply")
    drop = "-dac_override,-fowner"

    class Unprivileged(Cli):
        @staticmethod
        def command(args: tuple[str, ...]) -> list[str]:
            return [sys.executable, "-m", "dpct", *args]

        def run(
            self, *args: str, rc: int = 0, timeout: float = 60, **env: str
        ) -> subprocess.CompletedProcess:
            proc = subprocess.run(
                [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}", *self.command(args)],
                env={**self.env, **env},
                cwd=self.cwd,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            assert proc.returncode == rc, (proc.returncode, proc.stdout, proc.stderr)
            return proc

    return Unprivileged(cli.env, cli.cwd)


@pytest.mark.slow  # a process without the capabilities that bypass permissions
def test_a_read_only_database_says_so_naming_the_file(tmp_path: Path) -> None:
    env, path = _sqlite_env(tmp_path)
    cli = _unprivileged(Cli(env, tmp_path))
    descriptor = _write(tmp_path / "chain.toml", CHAIN)
    before = _dump(Database(f"sqlite:///{path}"))
    path.chmod(0o444)
    try:
        # The file is read-only: reading works, the first write is refused.
        assert "Workflows" in cli.run("workflow", "list").stdout
        line = cli.error("workflow", "register", str(descriptor), rc=5)
        assert f"error: the SQLite database {path} is read-only" in line
        assert "permissions" in line and "server" not in line
        # The folder is read-only too: SQLite cannot even open it (no -shm can be made).
        for leftover in path.parent.glob("dpct.sqlite3-*"):
            leftover.unlink()
        path.parent.chmod(0o555)
        line = cli.error("workflow", "list", rc=5)
        assert f"error: the SQLite database {path} is read-only" in line
        assert "server" not in line
    finally:
        path.parent.chmod(0o755)
        path.chmod(0o644)
    assert _dump(Database(f"sqlite:///{path}")) == before


# ---------------------------------------------------------------- submit --wait


@pytest.mark.slow
@SQLITE_ONLY
def test_submit_wait_exits_6_unless_the_workflow_succeeded(
    cli: Cli, db: Database, settings: Settings, tmp_path: Path
) -> None:
    failing = _write(
        tmp_path / "fail.toml",
        'name = "CliFail"\nversion = 1\ndata_type = "testing_counts"\n'
        '[[steps]]\nname = "check"\ntask = "testing.fail"\nparams = { kind = "permanent" }\n',
    )
    service.register_descriptor(db, failing)
    service.register_descriptor(db, _write(tmp_path / "chain.toml", CHAIN))
    waits = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dpct",
                "workflow",
                "submit",
                name,
                "--day",
                "5",
                "--wait",
                *extra,
            ],
            env=cli.env,
            cwd=cli.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, extra in (("CliFail", []), ("CliChain", ["--json"]))
    }
    try:
        wait_for(lambda: len(service.workflows(db)) == 2, what="both submissions")
        clock = FakeClock(time.time() + 1.0)  # the CLI stamps submissions with the wall clock
        run_inline(db, settings, clock)
        results = {name: proc.communicate(timeout=60) for name, proc in waits.items()}
    finally:
        for proc in waits.values():
            proc.kill()
    views = {v.workflow.name: v.workflow for v in service.workflows(db)}
    assert views["CliFail"].status == "FAILED" and views["CliChain"].status == "SUCCESS"

    _, stderr = results["CliFail"]
    assert waits["CliFail"].returncode == 6, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines() == [
        f"error: workflow {views['CliFail'].id} CliFail ended FAILED (FAILED=1); "
        f"see `dpct job list {views['CliFail'].id} --status FAILED` and `dpct job logs JOBID`"
    ]
    stdout, stderr = results["CliChain"]
    assert waits["CliChain"].returncode == 0, stderr
    assert json.loads(stdout)["workflow"]["status"] == "SUCCESS"  # --json waited too
