"""``dpct run``, ``closure`` and ``retract``, invoked in-process (a smoke test of the wiring).

The subprocess tests in test_cli.py cover error rendering and exit codes for every
command; here the commands run through Typer in this process to stay quick.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from dpct.cli import app
from dpct.cli._context import settings as cli_settings
from dpct.config import Settings
from dpct.datamodel import NS_PER_DAY, DataSpec
from dpct.errors import BadInput, NotFound
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
