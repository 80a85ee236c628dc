"""Alarms a task raises become EMS events with the attempt that commits, and only then."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import register

from dpct.config import Settings
from dpct.events import service as events
from dpct.processing import run_inline
from dpct.storage import Database
from dpct.testing import FakeClock
from dpct.workflows import service as rms

DAY = 3


def test_an_alarm_is_committed_once_with_the_successful_attempt(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    marker = tmp_path / "first-attempt-failed"
    params = {"message": "background above its limit", "fail_first_attempt_file": str(marker)}
    register(db, tmp_path, "Alarm", [{"name": "a", "task": "testing.alarm", "params": params}])
    workflow = rms.submit(db, "Alarm", rms.day_spec("testing_counts", DAY), now=clock())
    run_inline(db, settings, clock)
    assert marker.exists()  # the first attempt raised its alarm, then failed
    assert not events.events(db, kind="alarm.*")  # ... and its alarm went with it
    clock.advance(60)
    run_inline(db, settings, clock)
    assert rms.workflow(db, workflow).workflow.status == "SUCCESS"
    (event,) = events.events(db, kind="alarm.*")
    assert (event.kind, event.subsystem, event.message) == (
        "alarm.testing",
        "EMS",
        "background above its limit",
    )
    (job,) = rms.jobs(db, workflow)
    assert event.object_type == "job" and event.object_id == str(job.id)
