"""Run check closure: gaps, overlaps, ignored runs, and deleting intermediate data.

Expected gaps and overlaps come from counting, point by point, how many runs cover
each nanosecond of a small range; expected deletions from the test's own jobs.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa
from tests.helpers import register

from dpct.config import Settings
from dpct.datamanagement import service
from dpct.datamodel import DATA_TYPES, NS_PER_DAY, DataSpec, data_type
from dpct.errors import BadInput, Conflict, InvalidState, NotFound
from dpct.events import service as event_service
from dpct.processing import run_inline
from dpct.storage import Database
from dpct.storage import service as storage_service
from dpct.storage._closure import find_problems
from dpct.storage._records import RunRow
from dpct.storage._schema import datasets as datasets_table
from dpct.tasks import task
from dpct.testing import FakeClock
from dpct.workflows import service as rms

DAY = 7000

SCRATCH = data_type(
    "tests_closure_scratch",
    1,
    [("obmt_ns", "int64", "ns", "sample time"), ("value", "float64", "", "a value")],
    time_column="obmt_ns",
    intermediate=True,
)
FINAL = data_type(
    "tests_closure_final",
    1,
    [("samples", "int64", "", "how many"), ("total", "float64", "", "their sum")],
)


@task("tests.closure_scratch", outputs={"samples": "tests_closure_scratch"})
def make_scratch(spec: DataSpec) -> pa.Table:
    """Intermediate samples over the job's interval."""
    t = np.linspace(spec.start_ns, spec.end_ns - 1, 4).astype(np.int64)
    return pa.table({"obmt_ns": t, "value": np.ones(4)})


@task(
    "tests.closure_final",
    inputs={"samples": "tests_closure_scratch"},
    outputs={"final": "tests_closure_final"},
)
def make_final(samples: pa.Table) -> pa.Table:
    """The day's kept product, made from the intermediate samples."""
    values = samples.column("value").to_numpy()
    return pa.table({"samples": [len(values)], "total": [float(values.sum())]})


# ---------------------------------------------------------------- the check itself


def _run(run_id: int, start: int, end: int, status: str = "SUCCESS") -> RunRow:
    return RunRow(run_id, "AIM", start, end, status, False, False, "", 0.0, None)


def _points(intervals: list[tuple[int, int]]) -> set[int]:
    return {t for lo, hi in intervals for t in range(lo, hi)}


def _by_counting(
    runs: list[tuple[int, int]], start: int, end: int
) -> tuple[list[tuple[int, int]], set[int]]:
    """Gaps as maximal intervals, and the points covered twice or more."""
    count = {t: sum(lo <= t < hi for lo, hi in runs) for t in range(start, end)}
    gaps: list[tuple[int, int]] = []
    for t in range(start, end):
        if count[t] == 0:
            if gaps and gaps[-1][1] == t:
                gaps[-1] = (gaps[-1][0], t + 1)
            else:
                gaps.append((t, t + 1))
    return gaps, {t for t, n in count.items() if n >= 2}


def test_problems_match_counting_coverage() -> None:
    rng = random.Random(11)
    for _ in range(300):
        start, end = rng.randrange(0, 20), rng.randrange(25, 60)
        spans = []
        for _ in range(rng.randrange(0, 6)):
            lo = rng.randrange(-5, 65)
            spans.append((lo, lo + rng.randrange(1, 25)))
        spans = [(lo, hi) for lo, hi in spans if lo < end and hi > start]
        runs = [_run(k + 1, lo, hi) for k, (lo, hi) in enumerate(spans)]
        problems = find_problems(runs, start, end)
        gaps, twice = _by_counting(spans, start, end)
        assert [(p.start_ns, p.end_ns) for p in problems if p.kind == "GAP"] == gaps
        overlaps = [p for p in problems if p.kind == "OVERLAP"]
        assert _points([(p.start_ns, p.end_ns) for p in overlaps]) == twice
        for p in overlaps:  # each names the two runs that both cover it
            a, b = (spans[i - 1] for i in p.run_ids)
            assert max(a[0], b[0], start) == p.start_ns and min(a[1], b[1], end) == p.end_ns
        assert not [p for p in problems if p.kind not in ("GAP", "OVERLAP")]


def test_touching_runs_close_and_unfinished_runs_do_not() -> None:
    assert find_problems([_run(1, 0, 100), _run(2, 100, 200)], 0, 200) == []
    assert find_problems([_run(1, -50, 100), _run(2, 100, 900)], 0, 200) == []
    (problem,) = find_problems([_run(1, 0, 100), _run(2, 100, 300, "RUNNING")], 0, 200)
    assert (problem.kind, problem.start_ns, problem.end_ns, problem.run_ids) == (
        "UNFINISHED",
        100,
        200,
        (2,),
    )


def _runs(db: Database, clock: FakeClock, spans: list[tuple[int, int]], sw: str = "AIM"):
    ids = []
    for lo, hi in spans:
        row = service.create_run(db, sw, lo, hi, now=clock())
        service.set_run_status(db, row.id, "SUCCESS", now=clock())
        ids.append(row.id)
    return ids


def test_gap_and_overlap_in_the_error_view(db: Database, clock: FakeClock) -> None:
    a, b, c, d, _far = _runs(db, clock, [(0, 100), (100, 200), (250, 400), (350, 500), (500, 600)])
    _runs(db, clock, [(0, 450)], sw="BAM")  # another pipeline's runs do not count
    report = service.check_closure(db, "AIM", 0, 450, now=clock())
    check = report.check
    assert (check.sw, check.start_check_ns, check.end_check_ns) == ("AIM", 0, 450)
    assert (check.check_status, check.delete_status) == ("ERROR", "SKIPPED")
    assert check.note == f"1 gap, 1 overlap; nothing deleted (see `dpct closure errors {check.id}`)"
    view = [(e.kind, e.obmt_start_ns, e.obmt_end_ns, e.run_ids) for e in report.errors]
    assert view == [("GAP", 200, 250, ()), ("OVERLAP", 350, 400, (c, d))]
    assert service.closure_errors(db, check.id) == report.errors
    assert service.closure_checks(db) == [check]
    assert report.closed_runs == [] and not any(r.closed for r in service.runs(db))
    (event,) = event_service.events(db, kind="closure.error")
    assert event.object_id == str(check.id)
    assert {a, b} <= {r.id for r in service.runs(db)}


def test_touching_runs_pass_ignored_runs_are_left_out(db: Database, clock: FakeClock) -> None:
    first, second = _runs(db, clock, [(0, 100), (100, 200)])
    (extra,) = _runs(db, clock, [(50, 150)])
    report = service.check_closure(db, "AIM", 0, 200, now=clock())
    assert [(e.kind, e.obmt_start_ns, e.obmt_end_ns, e.run_ids) for e in report.errors] == [
        ("OVERLAP", 50, 100, (first, extra)),
        ("OVERLAP", 100, 150, (second, extra)),
    ]
    service.ignore_run(db, extra, note="failed run", now=clock())
    report = service.check_closure(db, "AIM", 0, 200, now=clock())
    assert (report.check.check_status, report.check.delete_status) == ("OK", "NOTHING")
    assert report.errors == [] and report.closed_runs == [first, second]
    closed = {r.id: r.closed for r in service.runs(db)}
    assert closed == {first: True, second: True, extra: False}
    with pytest.raises(InvalidState, match=f"run {first} is closed"):
        service.ignore_run(db, first)

    # An ignored run covers nothing: ignoring the second leaves its range a gap.
    (third,) = _runs(db, clock, [(200, 300)])
    service.ignore_run(db, third, now=clock())
    report = service.check_closure(db, "AIM", 150, 300, now=clock())
    assert [(e.kind, e.obmt_start_ns, e.obmt_end_ns) for e in report.errors] == [("GAP", 200, 300)]


def test_no_runs_is_one_gap_and_bad_ranges_are_refused(db: Database, clock: FakeClock) -> None:
    report = service.check_closure(db, "GSR", 10, 20, now=clock())
    assert [(e.kind, e.obmt_start_ns, e.obmt_end_ns) for e in report.errors] == [("GAP", 10, 20)]
    with pytest.raises(BadInput, match="end 5 is not after start 10"):
        service.check_closure(db, "GSR", 10, 5)
    with pytest.raises(BadInput, match="unknown pipeline 'FOO'"):
        service.check_closure(db, "FOO", 0, 5)
    with pytest.raises(NotFound, match="run check 99 does not exist"):
        service.closure_errors(db, 99)
    assert len(service.closure_checks(db)) == 1


# ---------------------------------------------------------------- closing deletes


def _location_state(db: Database) -> dict[int, tuple[str, str, float | None]]:
    d = datasets_table.c
    with db.read() as conn:
        rows = conn.execute(sa.select(d.id, d.location, d.state, d.deleted_at)).all()
    return {r.id: (r.location, r.state, r.deleted_at) for r in rows}


def test_closing_deletes_intermediate_data_of_the_closed_runs_only(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    register(
        db,
        tmp_path,
        "ClosureDaily",
        [
            {"name": "scratch", "task": "tests.closure_scratch", "partition": "6h"},
            {
                "name": "final",
                "task": "tests.closure_final",
                "partition": "day",
                "depends_on": ["scratch"],
            },
        ],
        data_type="tests_closure_scratch",
    )
    runs: dict[str, tuple[int, int]] = {}  # name → (run, workflow)
    for name, sw, day in [("d0", "AIM", DAY), ("d1", "AIM", DAY + 1), ("later", "AIM", DAY + 5)]:
        spec = rms.day_spec("tests_closure_scratch", day)
        wf = rms.submit(db, "ClosureDaily", spec, now=clock())
        run = service.create_run(db, sw, spec.start_ns, spec.end_ns, workflow_ids=[wf])
        runs[name] = (run.id, wf)
    # Another pipeline's run over the same day keeps its data.
    spec = rms.day_spec("tests_closure_scratch", DAY)
    other_wf = rms.submit(db, "ClosureDaily", spec, now=clock())
    other = service.create_run(db, "BAM", spec.start_ns, spec.end_ns, workflow_ids=[other_wf])
    runs["bam"] = (other.id, other_wf)
    run_inline(db, settings, clock)
    assert all(r.status == "SUCCESS" for r in service.runs(db))

    # Truth from the test's own jobs: the scratch products of the d0 and d1 workflows.
    made_by = {
        j.id: name for name, (_, wf) in runs.items() for j in rms.jobs(db, wf, page_size=100)
    }
    products = storage_service.datasets(db, limit=1000)
    assert len(products) == 4 * (4 + 1)
    doomed = {
        p.id
        for p in products
        if made_by[p.job_id] in ("d0", "d1") and p.spec.data_type == "tests_closure_scratch"
    }
    assert len(doomed) == 8
    before = _location_state(db)
    assert all(Path(loc).exists() for loc, _, _ in before.values())

    clock.advance(100)
    report = service.check_closure(db, "AIM", DAY * NS_PER_DAY, (DAY + 2) * NS_PER_DAY, now=clock())
    assert (report.check.check_status, report.check.delete_status) == ("OK", "DELETED")
    assert report.closed_runs == [runs["d0"][0], runs["d1"][0]]
    assert {d.id for d in report.deleted} == doomed and report.files_removed == 8
    assert report.check.note == (
        f"2 runs closed ({runs['d0'][0]}, {runs['d1'][0]}); 8 intermediate datasets deleted"
    )
    after = _location_state(db)
    for dataset_id, (location, state, deleted_at) in after.items():
        if dataset_id in doomed:
            assert (state, deleted_at) == ("DELETED", clock())
            assert not Path(location).exists()
        else:
            assert (state, deleted_at) == ("AVAILABLE", None)
            assert Path(location).exists()
    closed = {r.id for r in service.runs(db) if r.closed}
    assert closed == {runs["d0"][0], runs["d1"][0]}
    deleted_events = event_service.events(db, kind="dataset.deleted", limit=100)
    assert sorted(int(e.object_id) for e in deleted_events) == sorted(doomed)

    again = service.check_closure(db, "AIM", DAY * NS_PER_DAY, (DAY + 2) * NS_PER_DAY)
    assert (again.check.check_status, again.check.delete_status) == ("OK", "NOTHING")
    assert _location_state(db) == after


def test_intermediate_is_not_schema_metadata() -> None:
    assert SCRATCH.intermediate and not FINAL.intermediate
    assert not DATA_TYPES.get("testing_counts").intermediate
    assert SCRATCH.schema.metadata == {
        b"dpct.type": b"tests_closure_scratch",
        b"dpct.version": b"1",
    }


def test_closure_waits_for_datasets_the_triggers_have_not_seen(
    db: Database, clock: FakeClock
) -> None:
    """A run can look finished in the instant between one workflow's end and the data
    trigger starting the next; closing then would delete what the next one reads."""
    from dpct.storage import OutputFile, register_dataset
    from dpct.workflows import fire_data_triggers

    start, end = DAY * NS_PER_DAY, (DAY + 1) * NS_PER_DAY
    service.create_run(db, "AIM", start, end, now=clock())
    service.set_run_status(db, 1, "SUCCESS")
    spec = DataSpec("testing_counts", start, start + 3600 * 10**9)
    with db.write() as conn:  # registered, not yet evaluated by the data triggers
        register_dataset(
            conn,
            OutputFile("x", "testing_counts", 1, spec, 1, 1, "sha256:0", "/nowhere/x"),
            now=clock(),
            software_version="t",
        )
    report = service.check_closure(db, "AIM", start, end, now=clock())
    assert report.check.check_status == "ERROR" and report.closed_runs == []
    (error,) = service.closure_errors(db, report.check.id)
    assert (error.kind, error.obmt_start_ns, error.obmt_end_ns) == (
        "PENDING",
        spec.start_ns,
        spec.end_ns,
    )
    fire_data_triggers(db, clock())
    assert service.check_closure(db, "AIM", start, end, now=clock()).closed_runs == [1]


def test_closure_waits_for_a_reprocessing_outside_any_run(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    start, end = DAY * NS_PER_DAY, (DAY + 1) * NS_PER_DAY
    service.create_run(db, "AIM", start, end, now=clock())
    service.set_run_status(db, 1, "SUCCESS")
    register(db, tmp_path, "Reprocess", [{"name": "n", "task": "testing.noop"}])
    rms.submit(db, "Reprocess", rms.day_spec("testing_counts", DAY), now=clock())
    report = service.check_closure(db, "AIM", start, end, now=clock())
    assert report.closed_runs == []
    assert [e.kind for e in service.closure_errors(db, report.check.id)] == ["ACTIVE"]
    run_inline(db, settings, clock)  # the reprocessing ends: nothing holds the day
    assert service.check_closure(db, "AIM", start, end, now=clock()).closed_runs == [1]


# ---------------------------------------------------------------- dry run, completeness, reopen


def _daily_with_scratch(db: Database, tmp_path: Path, name: str = "ClosureDaily", **extra):
    register(
        db,
        tmp_path,
        name,
        [
            {"name": "scratch", "task": "tests.closure_scratch", "partition": "6h"},
            {
                "name": "final",
                "task": "tests.closure_final",
                "partition": "day",
                "depends_on": ["scratch"],
            },
        ],
        data_type="tests_closure_scratch",
        **extra,
    )


def test_dry_run_shows_the_plan_the_check_then_executes(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    _daily_with_scratch(db, tmp_path)
    run_ids = []
    for day in (DAY, DAY + 1):
        spec = rms.day_spec("tests_closure_scratch", day)
        wf = rms.submit(db, "ClosureDaily", spec, now=clock())
        run_ids.append(
            service.create_run(db, "AIM", spec.start_ns, spec.end_ns, workflow_ids=[wf]).id
        )
    run_inline(db, settings, clock)
    scratch = storage_service.datasets(db, data_type="tests_closure_scratch", limit=100)
    assert len(scratch) == 8
    before = _location_state(db)
    start, end = DAY * NS_PER_DAY, (DAY + 2) * NS_PER_DAY

    preview = service.check_closure(db, "AIM", start, end, dry_run=True, now=clock())
    plan = preview.plan
    assert preview.check is None and plan.ok and plan.closing == run_ids
    assert {d.id for d in plan.deleting} == {d.id for d in scratch}
    assert plan.by_type() == {"tests_closure_scratch": (8, sum(d.bytes for d in scratch))}
    assert plan.bytes == sum(d.bytes for d in scratch) > 0
    # Nothing changed: no check stored, no run closed, every file and row as it was.
    assert service.closure_checks(db) == [] and not any(r.closed for r in service.runs(db))
    assert _location_state(db) == before
    assert all(Path(loc).exists() for loc, _, _ in before.values())

    # What was agreed to is what is done: a plan that changed since is refused.
    service.ignore_run(db, run_ids[1], now=clock())
    with pytest.raises(Conflict, match="changed since the preview"):
        service.check_closure(db, "AIM", start, end, expect=plan, now=clock())
    assert service.closure_checks(db) == [] and _location_state(db) == before
    service.ignore_run(db, run_ids[1], ignored=False, now=clock())

    report = service.check_closure(db, "AIM", start, end, expect=plan, now=clock())
    assert report.plan == plan  # the preview is the action
    assert report.closed_runs == plan.closing
    assert [d.id for d in report.deleted] == [d.id for d in plan.deleting]
    assert report.files_removed == 8

    # A dry run of a failing check shows what blocks it, and stores nothing either.
    blocked = service.check_closure(db, "AIM", start, end + NS_PER_DAY, dry_run=True)
    assert [p.kind for p in blocked.plan.problems] == ["GAP"]
    assert blocked.plan.closing == [] and blocked.plan.deleting == []
    assert len(service.closure_checks(db)) == 1


WEEK_DAY = 7 * 1001  # the first day of an aligned 7-day period


def _three_days_of_a_week(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> tuple[int, int, int]:
    """A week run holding the daily workflows of its first three days only."""
    _daily_with_scratch(db, tmp_path, "WeekDaily", run={"sw": "BAM", "period": "7d"})
    for day in range(WEEK_DAY, WEEK_DAY + 3):
        rms.submit(db, "WeekDaily", rms.day_spec("tests_closure_scratch", day), now=clock())
    run_inline(db, settings, clock)
    (run,) = service.runs(db, sw="BAM")
    assert run.status == "SUCCESS" and len(run.workflow_ids) == 3
    return run.id, WEEK_DAY * NS_PER_DAY, (WEEK_DAY + 7) * NS_PER_DAY


def test_a_week_with_days_still_to_come_is_refused_unless_forced(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    run_id, start, end = _three_days_of_a_week(db, settings, clock, tmp_path)
    missing = (start + 3 * NS_PER_DAY, end)

    report = service.check_closure(db, "BAM", start, end, now=clock())
    assert (report.check.check_status, report.check.delete_status) == ("ERROR", "SKIPPED")
    view = [(e.kind, e.obmt_start_ns, e.obmt_end_ns, e.run_ids) for e in report.errors]
    assert view == [("INCOMPLETE", *missing, (run_id,))]
    assert report.check.note.startswith("1 incomplete; nothing deleted")
    assert not service.run(db, run_id).closed
    scratch = storage_service.datasets(db, data_type="tests_closure_scratch", limit=100)
    assert len(scratch) == 12 and {d.state for d in scratch} == {"AVAILABLE"}
    # A range that only holds the three days does not help: closing closes whole runs.
    part = service.check_closure(db, "BAM", start, start + 3 * NS_PER_DAY, now=clock())
    assert [e.kind for e in part.errors] == ["INCOMPLETE"] and part.closed_runs == []

    forced = service.check_closure(db, "BAM", start, end, force=True, now=clock())
    assert forced.check.check_status == "OK" and forced.closed_runs == [run_id]
    assert forced.plan.forced and not forced.errors
    assert f"forced: closed incomplete runs {run_id}" in forced.check.note
    assert f"[{missing[0]}, {missing[1]})" in forced.check.note
    assert {d.id for d in forced.deleted} == {d.id for d in scratch}
    assert service.run(db, run_id).closed


def test_a_wrong_closure_is_undone_by_reopening_and_later_days_join_the_run(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    run_id, start, end = _three_days_of_a_week(db, settings, clock, tmp_path)
    closed = service.check_closure(db, "BAM", start, end, force=True, now=clock())
    lost = sorted(d.id for d in closed.deleted)
    assert len(lost) == 12
    with pytest.raises(InvalidState, match=f"dpct run reopen {run_id}"):
        service.ignore_run(db, run_id)

    with pytest.raises(BadInput, match="give the reason"):
        service.reopen_run(db, run_id, reason=" ")
    with pytest.raises(NotFound, match="run 99 does not exist"):
        service.reopen_run(db, 99, reason="x")
    clock.advance(10)
    reopened = service.reopen_run(db, run_id, reason="closed too early", now=clock())
    assert not reopened.run.closed and reopened.run.status == "SUCCESS"
    assert sorted(d.id for d in reopened.lost) == lost
    assert {d.state for d in reopened.lost} == {"DELETED"}
    assert reopened.run.note.startswith("reopened: closed too early; 12 intermediate datasets")
    (event,) = event_service.events(db, kind="run.reopened")
    assert event.object_id == str(run_id) and event.message == reopened.run.note
    with pytest.raises(InvalidState, match=f"run {run_id} is not closed"):
        service.reopen_run(db, run_id, reason="again")

    # The rest of the week joins the reopened run instead of defining an overlapping one.
    for day in range(WEEK_DAY + 3, WEEK_DAY + 7):
        rms.submit(db, "WeekDaily", rms.day_spec("tests_closure_scratch", day), now=clock())
    run_inline(db, settings, clock)
    (run,) = service.runs(db, sw="BAM")
    assert run.id == run_id and len(run.workflow_ids) == 7 and run.status == "SUCCESS"
    report = service.check_closure(db, "BAM", start, end, now=clock())
    assert report.check.check_status == "OK" and report.closed_runs == [run_id]
    assert len(report.deleted) == 4 * 4 and not report.plan.forced
