"""Runs: definition, workflows, status derived from them, ignoring; on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.helpers import register

from dpct.config import Settings
from dpct.datamanagement import service
from dpct.datamodel import NS_PER_DAY
from dpct.errors import BadInput, InvalidState, NotFound
from dpct.events import service as event_service
from dpct.processing import run_inline
from dpct.storage import Database
from dpct.storage._runs import derive_run_status
from dpct.testing import FakeClock
from dpct.workflows import service as rms

DAY = 6000


@pytest.mark.parametrize(
    ("workflows", "current", "expected"),
    [
        ([], "DEFINED", "DEFINED"),
        ([], "SUCCESS", "SUCCESS"),  # a run without workflows keeps what it was given
        (["NEW"], "DEFINED", "RUNNING"),
        (["SUCCESS", "RUNNING"], "DEFINED", "RUNNING"),
        (["SUCCESS", "SUCCESS"], "RUNNING", "SUCCESS"),
        (["SUCCESS", "FAILED"], "RUNNING", "PARTIALLYSUCCESS"),
        (["PARTIALLYSUCCESS"], "RUNNING", "PARTIALLYSUCCESS"),
        (["FAILED", "CANCELLED"], "RUNNING", "FAILED"),
    ],
)
def test_run_status_follows_its_workflows(
    workflows: list[str], current: str, expected: str
) -> None:
    assert derive_run_status(workflows, current) == expected


def test_create_list_show_runs(db: Database, clock: FakeClock) -> None:
    first = service.create_run(
        db, "aim", DAY * NS_PER_DAY, (DAY + 1) * NS_PER_DAY, note="day 1", now=clock()
    )
    second = service.create_run(db, "BAM", 10, 20, now=clock())
    assert (first.sw, first.status, first.closed, first.ignored) == ("AIM", "DEFINED", False, False)
    assert (first.obmt_start_ns, first.obmt_end_ns, first.note) == (
        DAY * NS_PER_DAY,
        (DAY + 1) * NS_PER_DAY,
        "day 1",
    )
    assert [r.id for r in service.runs(db)] == [second.id, first.id]
    assert [r.id for r in service.runs(db, sw="BAM")] == [second.id]
    assert service.run(db, first.id) == first
    defined = event_service.events(db, kind="run.defined")
    assert sorted(int(e.object_id) for e in defined) == [first.id, second.id]


def test_bad_runs_are_refused_by_name(db: Database) -> None:
    with pytest.raises(BadInput, match="unknown pipeline 'XYZ'"):
        service.create_run(db, "XYZ", 0, 10)
    with pytest.raises(BadInput, match="end 10 is not after start 20"):
        service.create_run(db, "AIM", 20, 10)
    with pytest.raises(BadInput, match="end 10 is not after start 10"):
        service.create_run(db, "AIM", 10, 10)
    with pytest.raises(NotFound, match="workflows 998, 999 not found"):
        service.create_run(db, "AIM", 0, 10, workflow_ids=[999, 998])
    with pytest.raises(NotFound, match="run 42 does not exist"):
        service.run(db, 42)
    with pytest.raises(NotFound, match="run 42 does not exist"):
        service.ignore_run(db, 42)
    with pytest.raises(BadInput, match="unknown run status 'DONE'"):
        service.set_run_status(db, 1, "DONE")
    assert service.runs(db) == []  # nothing half-made


def test_status_from_workflows_stored_on_refresh(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    register(db, tmp_path, "Ok", [{"name": "n", "task": "testing.noop", "partition": "6h"}])
    register(
        db,
        tmp_path,
        "Bad",
        [{"name": "f", "task": "testing.fail", "params": {"kind": "permanent"}}],
    )
    spec = rms.day_spec("testing_counts", DAY)
    ok = rms.submit(db, "Ok", spec, now=clock())
    bad = rms.submit(db, "Bad", spec, now=clock())
    mixed = service.create_run(db, "AIM", spec.start_ns, spec.end_ns, workflow_ids=[ok, bad])
    clean = service.create_run(db, "BAM", spec.start_ns, spec.end_ns, workflow_ids=[ok])
    assert mixed.workflow_ids == (ok, bad)
    assert mixed.status == "RUNNING" and mixed.ended_at is None  # NEW workflows: work to do
    # A workflow belongs to one run: attaching it elsewhere moves it.
    assert service.run(db, mixed.id).workflow_ids == (bad,)
    assert service.run(db, clean.id).workflow_ids == (ok,)
    service.attach_workflows(db, mixed.id, [ok], now=clock())
    assert service.run(db, clean.id).workflow_ids == ()

    run_inline(db, settings, clock)
    assert rms.workflow(db, ok).workflow.status == "SUCCESS"
    assert rms.workflow(db, bad).workflow.status == "FAILED"
    # The run's stored status followed its last workflow's end, in that transaction.
    stored = service.run(db, mixed.id)
    assert stored.status == "PARTIALLYSUCCESS" and stored.ended_at == clock()
    clock.advance(60)
    assert service.refresh_runs(db, [mixed.id, clean.id], now=clock()) == {}
    assert [e.message for e in event_service.events(db, kind="run.partiallysuccess")] == [
        "RUNNING → PARTIALLYSUCCESS"
    ]
    with pytest.raises(InvalidState, match="its status follows theirs"):
        service.set_run_status(db, mixed.id, "SUCCESS")


def test_manual_status_and_ignore(db: Database, clock: FakeClock) -> None:
    row = service.create_run(db, "GSR", 0, 100, now=clock())
    clock.advance(5)
    done = service.set_run_status(db, row.id, "SUCCESS", now=clock())
    assert done.status == "SUCCESS" and done.ended_at == clock()
    again = service.set_run_status(db, row.id, "RUNNING", now=clock())
    assert again.status == "RUNNING" and again.ended_at is None

    ignored = service.ignore_run(db, row.id, note="failed run, redone as the next", now=clock())
    assert ignored.ignored and ignored.note == "failed run, redone as the next"
    assert not service.ignore_run(db, row.id, ignored=False, now=clock()).ignored
    assert service.run(db, row.id).note == "failed run, redone as the next"
    kinds = [e.kind for e in event_service.events(db, object_type="run", object_id=str(row.id))]
    assert kinds == ["run.unignored", "run.ignored", "run.running", "run.success", "run.defined"]
