"""``dpct run``, ``closure`` and ``retract``, invoked in-process (a smoke test of the wiring).

The subprocess tests in test_cli.py cover error rendering and exit codes for every
command; here the commands run through Typer in this process to stay quick.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from dpct.cli import app
from dpct.cli._context import settings as cli_settings
from dpct.config import Settings
from dpct.datamodel import NS_PER_DAY, DataSpec
from dpct.errors import BadInput, InvalidState, NotFound
from dpct.storage import Database, OutputFile, register_dataset

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@pytest.fixture
def dpct(db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("DPCT_HOME", str(settings.home))
    monkeypatch.setenv("DPCT_DATABASE_URL", settings.database_url)
    cli_settings.cache_clear()
    runner = CliRunner()

    def invoke(*args: str, rc: int = 0) -> Any:
        result = runner.invoke(app, list(args))
        assert result.exit_code == rc, (result.output, result.exception)
        return result

    yield invoke
    cli_settings.cache_clear()


@SQLITE_ONLY
def test_runs_closure_and_retraction_commands(dpct: Any, db: Database) -> None:
    first = json.loads(dpct("run", "create", "--sw", "AIM", "--day", "10", "--json").stdout)
    assert (first["obmt_start_ns"], first["obmt_end_ns"]) == (10 * NS_PER_DAY, 11 * NS_PER_DAY)
    dpct("run", "status", str(first["id"]), "success")
    end = str(13 * NS_PER_DAY)
    second = json.loads(
        dpct("run", "create", "--sw", "AIM", "--start", "12d", "--end", end, "--json").stdout
    )
    dpct("run", "status", str(second["id"]), "SUCCESS")
    assert "IDENTIFIER" in dpct("run", "list").stdout

    failed = dpct("closure", "check", "--sw", "AIM", "--day", "10", "--days", "3", "--json", rc=1)
    report = json.loads(failed.stdout)
    assert report["check"]["check_status"] == "ERROR"
    gap = [11 * NS_PER_DAY, 12 * NS_PER_DAY]
    assert [[e["kind"], e["obmt_start_ns"], e["obmt_end_ns"]] for e in report["errors"]] == [
        ["GAP", *gap]
    ]
    check_id = str(report["check"]["id"])
    errors = json.loads(dpct("closure", "errors", check_id, "--json").stdout)
    assert [[e["obmt_start_ns"], e["obmt_end_ns"]] for e in errors] == [gap]
    assert "Table error view" in dpct("closure", "errors", check_id).stdout
    ok = dpct("closure", "check", "--sw", "AIM", "--day", "12", "--yes").stdout
    assert "OK" in ok and "NOTHING" in ok
    assert len(json.loads(dpct("closure", "list", "--json").stdout)) == 2
    dpct("run", "ignore", str(first["id"]), "--note", "redo")

    backwards = dpct("closure", "check", "--sw", "AIM", "--start", "9", "--end", "5", rc=1)
    assert isinstance(backwards.exception, BadInput)
    assert isinstance(dpct("run", "show", "42", rc=1).exception, NotFound)

    spec = DataSpec("testing_counts", 0, 10)
    with db.write() as conn:
        dataset_id, _ = register_dataset(
            conn,
            OutputFile("x", "testing_counts", 1, spec, 1, 1, "sha256:0", "/nowhere/x"),
            now=1.0,
            software_version="t",
        )
    out = json.loads(dpct("retract", str(dataset_id), "--reason", "bad", "--yes", "--json").stdout)
    assert out["retraction"]["retracted"] == [dataset_id]
    assert out["workflow"]["workflow"]["name"] == "DataRetractionTraceExtractCleanAutWorkflow"
    missing = dpct("retract", "999", "--reason", "bad", rc=1).exception
    assert isinstance(missing, NotFound) and "dataset 999" in str(missing)


def _one_closable_run(dpct: Any, day: int) -> int:
    run = json.loads(dpct("run", "create", "--sw", "AIM", "--day", str(day), "--json").stdout)
    dpct("run", "status", str(run["id"]), "SUCCESS")
    return int(run["id"])


def test_closure_previews_asks_and_refuses_without_a_terminal(dpct: Any, db: Database) -> None:
    run_id = _one_closable_run(dpct, 30)
    preview = dpct("closure", "check", "--sw", "AIM", "--day", "30", "--dry-run").stdout
    assert f"would close runs {run_id} and delete 0 intermediate datasets" in preview
    plan = json.loads(
        dpct("closure", "check", "--sw", "AIM", "--day", "30", "--dry-run", "--json").stdout
    )
    assert plan["summary"]["ok"] and plan["summary"]["closing"] == [run_id]
    assert [r["id"] for r in plan["plan"]["runs"]] == [run_id]

    # No terminal on stdin (CliRunner's, like cron's or CI's) and no --yes: refused at once.
    refused = dpct("closure", "check", "--sw", "AIM", "--day", "30", rc=1)
    assert isinstance(refused.exception, BadInput)
    assert "stdin is not a terminal" in str(refused.exception)
    assert "pass --yes" in str(refused.exception)
    assert json.loads(dpct("closure", "list", "--json").stdout) == []  # nothing stored
    assert not json.loads(dpct("run", "show", str(run_id), "--json").stdout)["run"]["closed"]

    done = dpct("closure", "check", "--sw", "AIM", "--day", "30", "--yes", "--json").stdout
    assert json.loads(done)["closed_runs"] == [run_id]
    assert json.loads(dpct("run", "show", str(run_id), "--json").stdout)["run"]["closed"]
    # A failing check deletes nothing, so it does not ask.
    failing = dpct("closure", "check", "--sw", "AIM", "--day", "31", rc=1).stdout
    assert "GAP" in failing

    ignored = dpct("run", "ignore", str(run_id), rc=1).exception
    assert isinstance(ignored, InvalidState) and f"dpct run reopen {run_id}" in str(ignored)
    missing_reason = dpct("run", "reopen", str(run_id), rc=2)
    assert "--reason" in missing_reason.output
    out = dpct("run", "reopen", str(run_id), "--reason", "closed by mistake").stdout
    assert f"run {run_id} reopened, SUCCESS" in out
    assert not json.loads(dpct("run", "show", str(run_id), "--json").stdout)["run"]["closed"]


def test_retract_previews_and_refuses_without_a_terminal(dpct: Any, db: Database) -> None:
    spec = DataSpec("testing_counts", 0, 10)
    with db.write() as conn:
        dataset_id, _ = register_dataset(
            conn,
            OutputFile("x", "testing_counts", 1, spec, 1, 123, "sha256:0", "/nowhere/x"),
            now=1.0,
            software_version="t",
        )
    shown = dpct("retract", str(dataset_id), "--dry-run").stdout
    assert "Would be retracted" in shown and "testing_counts" in shown
    assert "/nowhere/x" in shown  # the file the cleaning would delete
    plan = json.loads(dpct("retract", str(dataset_id), "--dry-run", "--json").stdout)["plan"]
    assert [d["id"] for d in plan["datasets"]] == [dataset_id]
    assert [d["location"] for d in plan["cleaning"]] == ["/nowhere/x"]

    refused = dpct("retract", str(dataset_id), "--reason", "bad", rc=1).exception
    assert isinstance(refused, BadInput) and "stdin is not a terminal" in str(refused)
    assert "pass --yes" in str(refused)
    rows = json.loads(dpct("datasets", "--json").stdout)
    assert [r["state"] for r in rows if r["id"] == dataset_id] == ["AVAILABLE"]
    no_reason = dpct("retract", str(dataset_id), "--yes", rc=1).exception
    assert "give the reason" in str(no_reason)
    dpct("retract", str(dataset_id), "--reason", "bad", "--yes", "--no-clean")
    rows = json.loads(dpct("datasets", "--json").stdout)
    assert [r["state"] for r in rows if r["id"] == dataset_id] == ["RETRACTED"]


@pytest.mark.slow  # the real command on a pseudo-terminal
@SQLITE_ONLY
def test_closure_asks_on_a_terminal_and_no_changes_nothing(
    dpct: Any, db: Database, settings: Settings
) -> None:
    """The real command on a pseudo-terminal: the operator's answer decides."""
    run_id = _one_closable_run(dpct, 40)
    env = {
        **os.environ,
        "DPCT_HOME": str(settings.home),
        "DPCT_DATABASE_URL": settings.database_url,
    }

    command = [sys.executable, "-m", "dpct", "closure", "check", "--sw", "AIM", "--day", "40"]
    # Nobody to ask (stdin closed, as under cron): exit 2 at once, not a hang.
    alone = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=120, check=False
    )
    assert alone.returncode == 2 and b"stdin is not a terminal" in alone.stderr, alone

    def answer(text: str) -> subprocess.CompletedProcess[bytes]:
        controller, terminal = pty.openpty()
        try:
            os.write(controller, text.encode())
            return subprocess.run(
                command,
                stdin=terminal,
                capture_output=True,
                env=env,
                timeout=120,
                check=False,
            )
        finally:
            os.close(terminal)
            os.close(controller)

    declined = answer("n\n")
    assert declined.returncode == 1, declined
    assert b"Go ahead?" in declined.stdout and b"nothing changed" in declined.stdout
    assert not json.loads(dpct("run", "show", str(run_id), "--json").stdout)["run"]["closed"]
    assert json.loads(dpct("closure", "list", "--json").stdout) == []
    accepted = answer("y\n")
    assert accepted.returncode == 0, accepted
    assert json.loads(dpct("run", "show", str(run_id), "--json").stdout)["run"]["closed"]
