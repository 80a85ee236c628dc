"""Operator actions and triggers, run through the real lease/commit path in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.helpers import register

from dpct.config import Settings
from dpct.datamodel import NS_PER_DAY, DataSpec
from dpct.errors import InvalidState, NotFound
from dpct.processing import run_inline
from dpct.storage import Database
from dpct.testing import FakeClock
from dpct.workflows import obmt_ns_from_unix, service

DAY = 5000


def _jobs(db: Database, wf: int):
    return service.jobs(db, wf, page_size=1000)


def test_resume_reruns_only_failed_and_upstream_failed(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    register(
        db,
        tmp_path,
        "R",
        [
            {"name": "make", "task": "testing.make", "partition": "6h"},
            {
                "name": "check",
                "task": "testing.fail",
                "partition": "day",
                "params": {"kind": "permanent", "unless_file": str(fixed)},
            },
            {
                "name": "scale",
                "task": "testing.scale",
                "partition": "6h",
                "depends_on": ["make", "check"],
            },
            {"name": "other", "task": "testing.scale", "partition": "6h", "depends_on": ["make"]},
        ],
    )
    wf = service.submit(db, "R", service.day_spec("testing_counts", DAY), now=clock())
    run_inline(db, settings, clock)
    view = service.workflow(db, wf)
    assert view.workflow.status == "PARTIALLYSUCCESS"
    assert view.counts == {"SUCCESS": 8, "FAILED": 1, "UPSTREAM_FAILED": 4}
    before = {j.id: j for j in _jobs(db, wf)}
    failed = next(j for j in before.values() if j.status == "FAILED")
    assert failed.attempts == 1 and failed.error_class == "PermanentTaskError"

    fixed.touch()
    clock.advance(100)
    assert service.resume(db, wf, now=clock()) == {"failed": 1, "upstream_failed": 4}
    rerun = run_inline(db, settings, clock)
    assert sorted(rerun) == sorted(j.id for j in before.values() if j.status != "SUCCESS")
    after = {j.id: j for j in _jobs(db, wf)}
    for job_id, job in before.items():
        if job.status == "SUCCESS":
            assert after[job_id].started_at == job.started_at
            assert after[job_id].solution_id == job.solution_id
    assert service.workflow(db, wf).workflow.status == "SUCCESS"
    with pytest.raises(InvalidState, match="no failed jobs"):
        service.resume(db, wf)


def test_priority_change_reorders_starts_on_one_slot(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    register(db, tmp_path, "P", [{"name": "n", "task": "testing.noop", "partition": "6h"}])
    first = service.submit(db, "P", service.day_spec("testing_counts", DAY), now=clock())
    second = service.submit(db, "P", service.day_spec("testing_counts", DAY + 1), now=clock())
    assert service.change_priority(db, second, 50, now=clock()) == 4
    order = run_inline(db, settings, clock, slots=1)
    owner = {j.id: wf for wf in (first, second) for j in _jobs(db, wf)}
    assert [owner[j] for j in order] == [second] * 4 + [first] * 4
    with pytest.raises(InvalidState, match="has ended"):
        service.change_priority(db, second, 1)


def test_cancel_queued_jobs(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    register(db, tmp_path, "C", [{"name": "n", "task": "testing.noop", "partition": "6h"}])
    wf = service.submit(db, "C", service.day_spec("testing_counts", DAY), now=clock())
    assert service.cancel(db, wf, now=clock())["QUEUED"] == 4
    assert run_inline(db, settings, clock) == []
    view = service.workflow(db, wf)
    assert view.workflow.status == "CANCELLED" and view.counts == {"CANCELLED": 4}
    with pytest.raises(InvalidState):
        service.cancel(db, wf)
    with pytest.raises(NotFound):
        service.cancel(db, 999)


def test_calendar_trigger_fires_once_per_tick(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    clock.now = 1_800_000_000.0 - 1_800_000_000.0 % 86_400 + 3_000  # 00:50 UTC
    register(
        db,
        tmp_path,
        "Cal",
        [{"name": "n", "task": "testing.noop"}],
        trigger={"kind": "calendar", "cron": "0 2 * * *", "span": "1d"},
    )
    run_inline(db, settings, clock)  # first sight: starts the schedule, fires nothing
    assert service.workflows(db) == []
    clock.advance(3_600)  # 01:50
    run_inline(db, settings, clock)
    assert service.workflows(db) == []
    clock.advance(900)  # 02:05: one tick passed
    run_inline(db, settings, clock)
    (view,) = service.workflows(db)
    obmt = obmt_ns_from_unix(clock.now - 300)  # at the tick
    assert view.workflow.spec.end_ns == obmt - obmt % NS_PER_DAY
    assert view.workflow.spec.duration_ns == NS_PER_DAY
    assert view.workflow.status == "SUCCESS" and view.workflow.trigger.startswith("calendar")
    clock.advance(3 * 86_400)  # three more ticks while "down": each fires once
    run_inline(db, settings, clock)
    views = service.workflows(db)
    assert len(views) == 4
    assert len({v.workflow.spec.start_ns for v in views}) == 4


def test_chained_data_triggers_and_lineage(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    register(db, tmp_path, "Make", [{"name": "m", "task": "testing.make", "partition": "6h"}])
    register(
        db,
        tmp_path,
        "Scale",
        [{"name": "s", "task": "testing.scale"}],
        trigger={
            "kind": "data",
            "data_type": "testing_counts",
            "mode": "interval",
            "interval": "1d",
        },
    )
    first = service.submit(db, "Make", service.day_spec("testing_counts", DAY), now=clock())
    run_inline(db, settings, clock)
    views = {v.workflow.name: v for v in service.workflows(db)}
    # Scale's own output is testing_counts too: it covers the same day, which already
    # fired, so the chain stops instead of looping.
    assert set(views) == {"Make", "Scale"}
    assert views["Scale"].workflow.status == "SUCCESS"
    (scale_job,) = _jobs(db, views["Scale"].workflow.id)
    make_jobs = _jobs(db, first)
    lineage = service.solution_lineage(db, scale_job.solution_id)
    assert lineage.ancestors == sorted(j.solution_id for j in make_jobs)
    down = service.solution_lineage(db, make_jobs[0].solution_id)
    assert down.descendants == [scale_job.solution_id]


def test_day_complete_trigger_waits_for_the_whole_day(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    register(db, tmp_path, "Make", [{"name": "m", "task": "testing.make", "partition": "6h"}])
    register(
        db,
        tmp_path,
        "Daily",
        [{"name": "n", "task": "testing.noop"}],
        data_type="testing_counts",
        trigger={
            "kind": "data",
            "data_type": "testing_counts",
            "mode": "interval",
            "interval": "1d",
        },
    )
    quarter = NS_PER_DAY // 4
    base = DAY * NS_PER_DAY
    for k in (0, 1, 3):  # three quarters of the day: no firing
        service.submit(
            db,
            "Make",
            DataSpec("testing_counts", base + k * quarter, base + (k + 1) * quarter),
            now=clock(),
        )
    run_inline(db, settings, clock)
    assert {v.workflow.name for v in service.workflows(db)} == {"Make"}
    service.submit(
        db, "Make", DataSpec("testing_counts", base + 2 * quarter, base + 3 * quarter), now=clock()
    )
    run_inline(db, settings, clock)
    daily = [v for v in service.workflows(db) if v.workflow.name == "Daily"]
    assert len(daily) == 1
    assert daily[0].workflow.spec == DataSpec("testing_counts", base, base + NS_PER_DAY)


def test_per_dataset_trigger(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    register(db, tmp_path, "Make", [{"name": "m", "task": "testing.make", "partition": "6h"}])
    register(
        db,
        tmp_path,
        "Each",
        [{"name": "n", "task": "testing.noop"}],
        trigger={"kind": "data", "data_type": "testing_counts", "mode": "dataset"},
    )
    service.submit(db, "Make", service.day_spec("testing_counts", DAY), now=clock())
    run_inline(db, settings, clock)
    each = [v for v in service.workflows(db) if v.workflow.name == "Each"]
    assert len(each) == 4
    assert sorted(v.workflow.spec.start_ns for v in each) == [
        DAY * NS_PER_DAY + k * NS_PER_DAY // 4 for k in range(4)
    ]


def test_backfill_days_once(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    register(db, tmp_path, "B", [{"name": "n", "task": "testing.noop", "partition": "day"}])
    started = service.backfill(db, "B", DAY, DAY + 2, now=clock())
    assert len(started) == 3
    days = sorted(service.workflow(db, w).workflow.spec.start_ns // NS_PER_DAY for w in started)
    assert days == [DAY, DAY + 1, DAY + 2]
    assert service.backfill(db, "B", DAY, DAY + 3, now=clock()) != []
    assert len(service.backfill(db, "B", DAY, DAY + 3, now=clock())) == 0
    assert len(service.backfill(db, "B", DAY, DAY, force=True, now=clock())) == 1
    run_inline(db, settings, clock)
    assert {v.workflow.status for v in service.workflows(db)} == {"SUCCESS"}


def test_failing_task_records_class_and_message(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    register(db, tmp_path, "F", [{"name": "f", "task": "testing.fail", "params": {"kind": "bug"}}])
    wf = service.submit(db, "F", service.day_spec("testing_counts", DAY), now=clock())
    run_inline(db, settings, clock)
    (job,) = _jobs(db, wf)
    assert job.status == "QUEUED" and job.attempts == 1  # retry after backoff
    clock.advance(10)
    run_inline(db, settings, clock)
    (job,) = _jobs(db, wf)
    assert job.status == "FAILED" and job.attempts == 2
    assert job.error_class == "RuntimeError" and job.error_message == "a bug in the task"
    log = service.job_log(db, job.id)
    assert "Traceback" in log and "a bug in the task" in log and "attempt 2" in log
