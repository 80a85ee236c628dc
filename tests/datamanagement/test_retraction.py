"""Retraction through lineage, and the cleaning workflow run for real, on both backends.

The expected sets come from the test's own graph, walked here, not from the database.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa
from tests.helpers import environment_elsewhere, register

from dpct.config import Settings
from dpct.datamanagement import CLEAN_WORKFLOW, service
from dpct.datamanagement._cleaning import remove_file
from dpct.datamodel import NS_PER_DAY, DataSpec, data_type
from dpct.errors import BadInput, Conflict, NotFound
from dpct.events import service as event_service
from dpct.processing import run_inline
from dpct.storage import (
    Database,
    DatasetRow,
    InputRef,
    find_datasets,
    read_product,
    register_dataset,
    store_at,
)
from dpct.storage import service as storage_service
from dpct.storage._schema import datasets as datasets_table
from dpct.tasks import JobContext, PermanentTaskError, task
from dpct.testing import FakeClock
from dpct.workflows import fire_data_triggers
from dpct.workflows import service as rms

DAY = 8000
HOUR = 3_600 * 10**9

#   R → A → B → D → E      R → S (A's sibling)      U (unrelated)
#       A → C → D
GRAPH: dict[str, list[str]] = {
    "R": [],
    "A": ["R"],
    "S": ["R"],
    "B": ["A"],
    "C": ["A"],
    "D": ["B", "C"],
    "E": ["D"],
    "U": [],
}


def _derived(names: tuple[str, ...]) -> set[str]:
    """The named nodes and all their descendants, by walking GRAPH's edges forwards."""
    found = set(names)
    frontier = list(names)
    while frontier:
        node = frontier.pop()
        for child, parents in GRAPH.items():
            if node in parents and child not in found:
                found.add(child)
                frontier.append(child)
    return found


def _build(db: Database, settings: Settings) -> dict[str, int]:
    """One product file per node, registered with its parents as inputs."""
    store = store_at(settings.store_root)
    made: dict[str, tuple[int, int]] = {}
    with db.write() as conn:
        for k, (name, parents) in enumerate(GRAPH.items()):
            start = DAY * NS_PER_DAY + k * HOUR
            spec = DataSpec("testing_counts", start, start + HOUR)
            table = pa.table({"obmt_ns": [spec.start_ns], "value": np.array([float(k)])})
            file = store.write(table, spec, name)
            inputs = [InputRef(*made[p], "testing_counts") for p in parents]
            made[name] = register_dataset(conn, file, now=1.0, software_version="t", inputs=inputs)
    return {name: dataset_id for name, (dataset_id, _) in made.items()}


def _rows(db: Database) -> dict[int, sa.Row]:
    d = datasets_table.c
    with db.read() as conn:
        query = sa.select(d.id, d.data_type, d.location, d.state, d.retracted_at, d.deleted_at)
        return {r.id: r for r in conn.execute(query)}


WHOLE_DAY = DataSpec.day("testing_counts", DAY)


@pytest.mark.parametrize("targets", [("A",), ("B",), ("C", "E"), ("E",)])
def test_retraction_marks_exactly_the_descendants_and_cleaning_deletes_their_files(
    targets: tuple[str, ...],
    db: Database,
    settings: Settings,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    ids = _build(db, settings)
    expected = {ids[n] for n in _derived(targets)}
    kept = set(ids.values()) - expected
    asked = [ids[n] for n in targets]

    result = service.retract(db, asked, reason="wrong calibration table", now=clock())
    assert result.retracted == sorted(expected)
    rows = _rows(db)
    for dataset_id in ids.values():
        state = ("RETRACTED", clock()) if dataset_id in expected else ("AVAILABLE", None)
        assert (rows[dataset_id].state, rows[dataset_id].retracted_at) == state
    events = event_service.events(db, kind="dataset.retracted", limit=100)
    assert sorted(int(e.object_id) for e in events) == sorted(expected)
    for e in events:
        origin = "dataset " if len(asked) == 1 else "datasets "
        assert e.message == (
            "wrong calibration table"
            if int(e.object_id) in asked
            else f"derived from retracted {origin}{', '.join(map(str, sorted(asked)))}: "
            "wrong calibration table"
        )
    # No longer inputs, from the moment the retraction commits.
    with db.read() as conn:
        assert {d.id for d in find_datasets(conn, WHOLE_DAY)} == kept

    # The cleaning workflow was submitted in the same transaction; run it for real.
    assert result.workflow_id is not None
    view = rms.workflow(db, result.workflow_id)
    assert view.workflow.name == CLEAN_WORKFLOW and view.workflow.trigger == "retraction"
    # the cleaning task uses the node's database, whatever its environment says
    elsewhere = environment_elsewhere(monkeypatch, tmp_path)
    run_inline(db, settings, clock)
    assert rms.workflow(db, result.workflow_id).workflow.status == "SUCCESS"
    assert not elsewhere.exists()

    after = _rows(db)
    for dataset_id in ids.values():
        row = after[dataset_id]
        if dataset_id in expected:
            assert row.state == "DELETED" and row.deleted_at is not None
            assert not Path(row.location).exists()
        else:
            assert row.state == "AVAILABLE" and row.deleted_at is None
            assert Path(row.location).exists()
    with db.read() as conn:
        assert {d.id for d in find_datasets(conn, WHOLE_DAY)} == kept
    (trace,) = storage_service.datasets(db, data_type="dss_retraction_trace")
    table = read_product(trace.location, "dss_retraction_trace")
    assert sorted(table.column("dataset_id").to_pylist()) == sorted(expected)
    assert all(table.column("file_removed").to_pylist())
    deleted = event_service.events(db, kind="dataset.deleted", limit=100)
    assert sorted(int(e.object_id) for e in deleted) == sorted(expected)

    # Again: nothing left to retract or to clean.
    again = service.retract(db, asked, reason="twice", now=clock())
    assert again.retracted == [] and again.workflow_id is None


def test_retracting_a_deleted_dataset_still_withdraws_what_was_made_from_it(
    db: Database, settings: Settings, clock: FakeClock
) -> None:
    ids = _build(db, settings)
    with db.write() as conn:
        conn.execute(
            sa.update(datasets_table)
            .where(datasets_table.c.id == ids["B"])
            .values(state="DELETED", deleted_at=clock())
        )
    result = service.retract(db, [ids["B"]], reason="bad", clean=False, now=clock())
    assert result.retracted == sorted(ids[n] for n in ("D", "E"))
    assert result.workflow_id is None
    assert _rows(db)[ids["B"]].state == "DELETED"


def test_bad_retractions_are_refused_and_change_nothing(
    db: Database, settings: Settings, clock: FakeClock
) -> None:
    ids = _build(db, settings)
    with pytest.raises(NotFound, match=r"^datasets 998, 999 not found; list them with"):
        service.retract(db, [ids["A"], 999, 998], reason="x")
    with pytest.raises(NotFound, match=r"^dataset 999 not found"):
        service.retract(db, [999], reason="x")
    with pytest.raises(BadInput, match="give the reason"):
        service.retract(db, [ids["A"]], reason="  ")
    with pytest.raises(BadInput, match="at least one dataset"):
        service.retract(db, [], reason="x")
    assert {r.state for r in _rows(db).values()} == {"AVAILABLE"}
    assert rms.workflows(db) == []


def test_a_file_that_cannot_be_removed_is_reported_not_raised(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-file"
    folder.mkdir()
    row = DatasetRow(1, WHOLE_DAY, 1, 1, 1, "sha256:0", str(folder), None, "DELETED", None, None, 0)
    result = remove_file(row)
    assert not result.file_removed and result.error and folder.exists()
    gone = remove_file(dataclasses.replace(row, location=str(tmp_path / "gone.parquet")))
    assert not gone.file_removed and not gone.error


# ---------------------------------------------------------------- preview, reports, redelivery


def test_dry_run_lists_exactly_what_the_retraction_then_does(
    db: Database, settings: Settings, clock: FakeClock
) -> None:
    ids = _build(db, settings)
    expected = {ids[n] for n in _derived(("B",))}
    # An earlier retraction not cleaned yet: its file is in the span, so it goes too.
    service.retract(db, [ids["U"]], reason="old", clean=False, now=clock())
    before = _rows(db)

    preview = service.retract(db, [ids["B"], ids["U"]], reason="", dry_run=True)
    plan = preview.plan
    assert preview.retracted == [] and preview.workflow_id is None
    assert [d.id for d in plan.datasets] == sorted(expected)
    assert plan.named == [ids["B"]]
    assert [(d.spec.data_type, d.state) for d in plan.datasets] == [
        ("testing_counts", "AVAILABLE")
    ] * len(expected)
    assert [d.id for d in plan.cleaning] == sorted(expected | {ids["U"]})
    assert plan.bytes == sum(d.bytes for d in plan.cleaning) > 0
    assert _rows(db) == before and len(rms.workflows(db)) == 0  # nothing changed

    result = service.retract(db, [ids["B"], ids["U"]], reason="bad", now=clock())
    assert result.plan == plan  # the preview is the action
    assert result.retracted == [d.id for d in plan.datasets]
    view = rms.workflow(db, result.workflow_id)
    assert (view.workflow.spec.start_ns, view.workflow.spec.end_ns) == plan.span
    lo, hi = plan.span
    assert all(lo <= d.spec.start_ns and d.spec.end_ns <= hi for d in plan.cleaning)


def test_a_retraction_that_changed_since_its_preview_is_refused(
    db: Database, settings: Settings, clock: FakeClock
) -> None:
    ids = _build(db, settings)
    preview = service.retract(db, [ids["A"]], reason="", dry_run=True)
    service.retract(db, [ids["D"]], reason="found first", clean=False, now=clock())
    before = _rows(db)
    with pytest.raises(Conflict, match="differs from the preview"):
        service.retract(db, [ids["A"]], reason="bad", expect=preview.plan, now=clock())
    assert _rows(db) == before and rms.workflows(db) == []
    again = service.retract(db, [ids["A"]], reason="", dry_run=True)
    done = service.retract(db, [ids["A"]], reason="bad", expect=again.plan, now=clock())
    assert done.retracted == sorted(ids[n] for n in ("A", "B", "C"))


REPORT_DAY = 8100

data_type(
    "tests_retraction_report",
    1,
    [("samples", "int64", "", "rows seen")],
    description="A daily product whose job also writes a plot and a page",
)


@task("tests.retraction_report", outputs={"report": "tests_retraction_report"})
def report_task(spec: DataSpec, job: JobContext) -> pa.Table:
    """Writes a PNG and an HTML page beside its log, as the GSR/BAM/AIM reports do."""
    figure = job.report_path("tests_report.png")
    figure.write_bytes(b"\x89PNG " + spec.text.encode())
    page = job.report_path("tests_report.html")
    page.write_text(f"<img src='{figure.name}'>")
    return pa.table({"samples": [1]})


def test_retraction_sets_the_retracted_jobs_report_files_aside(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    register(db, tmp_path, "Reports", [{"name": "r", "task": "tests.retraction_report"}])
    for day in (REPORT_DAY, REPORT_DAY + 1):
        rms.submit(db, "Reports", rms.day_spec("testing_counts", day), now=clock())
    run_inline(db, settings, clock)
    products = storage_service.datasets(db, data_type="tests_retraction_report")
    assert len(products) == 2
    files: dict[int, list[Path]] = {}  # dataset → its job's report files, from the job log
    for product in products:
        log = Path(rms.job(db, product.job_id)[0].log_path)
        assert log.exists()
        files[product.id] = [
            log.with_suffix(".tests_report.html"),
            log.with_suffix(".tests_report.png"),
        ]
        assert all(f.exists() for f in files[product.id])
    bad, good = sorted(files)

    preview = service.retract(db, [bad], reason="", dry_run=True)
    job = next(p.job_id for p in products if p.id == bad)
    assert preview.plan.report_files == [(job, str(f)) for f in files[bad]]
    assert all(f.exists() for f in files[bad])  # a dry run moves nothing

    result = service.retract(db, [bad], reason="wrong dark frame", clean=False, now=clock())
    assert result.retracted == [bad]
    for f in files[bad]:
        aside = f.parent / "retracted" / f.name
        assert not f.exists() and aside.exists() and str(aside) in result.reports_moved
    page, figure = (f.parent / "retracted" / f.name for f in files[bad])
    assert f"src='{figure.name}'" in page.read_text()  # the page still finds its figure
    assert all(f.exists() for f in files[good])  # the other day's reports stay
    logs = [Path(rms.job(db, p.job_id)[0].log_path) for p in products]
    assert all(log.exists() for log in logs)  # logs are not reports
    events = event_service.events(db, kind="report.retracted", limit=10)
    assert sorted(e.message.split(" ")[0] for e in events) == sorted(map(str, files[bad]))
    assert {e.object_id for e in events} == {str(job)}


RAW = data_type(
    "tests_redelivery_raw",
    1,
    [("obmt_ns", "int64", "ns", "sample time"), ("value", "float64", "", "a value")],
    time_column="obmt_ns",
    description="A delivered input, as the MOC sends it",
)
DAILY = data_type(
    "tests_redelivery_daily",
    1,
    [("total", "float64", "", "sum of the day's values")],
    description="A daily product made from the delivered input",
)


@task(
    "tests.redelivery_daily",
    inputs={"raw": "tests_redelivery_raw"},
    outputs={"daily": "tests_redelivery_daily"},
)
def redelivery_daily(raw: pa.Table) -> pa.Table:
    """The day's total; a negative value is a corrupt delivery, refused for good."""
    values = raw.column("value").to_pylist()
    if min(values) < 0:
        raise PermanentTaskError(f"corrupt input: value {min(values)}")
    return pa.table({"total": [float(sum(values))]})


REDELIVERY_DAY = 8200


def _deliver(db: Database, settings: Settings, value: float, name: str) -> int:
    """A delivered file over the whole day, registered as a transfer would."""
    spec = DataSpec.day("tests_redelivery_raw", REDELIVERY_DAY)
    table = pa.table({"obmt_ns": [spec.start_ns], "value": [value]})
    file = store_at(settings.store_root).write(table, spec, name)
    with db.write() as conn:
        dataset_id, _ = register_dataset(conn, file, now=1.0, software_version="moc")
    return dataset_id


def _daily_and_summary(db: Database, tmp_path: Path) -> None:
    register(
        db,
        tmp_path,
        "Daily",
        [{"name": "d", "task": "tests.redelivery_daily", "partition": "day"}],
        data_type="tests_redelivery_raw",
        trigger={"kind": "data", "data_type": "tests_redelivery_raw", "mode": "interval"},
    )
    register(
        db,
        tmp_path,
        "Summary",
        [{"name": "s", "task": "testing.noop"}],
        data_type="tests_redelivery_daily",
        trigger={"kind": "data", "data_type": "tests_redelivery_daily", "mode": "interval"},
    )


def test_a_corrected_redelivery_starts_the_retracted_downstream_workflows_again(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    """Data triggers fire once per interval; a retraction uncovers the interval, so the
    corrected delivery fires the daily workflow again, and its product the next one."""
    _daily_and_summary(db, tmp_path)
    wrong = _deliver(db, settings, 1.0, "wrong")
    run_inline(db, settings, clock)
    first = {v.workflow.name: v.workflow.id for v in rms.workflows(db)}
    assert sorted(first) == ["Daily", "Summary"]
    (product,) = storage_service.datasets(db, data_type="tests_redelivery_daily")
    day = DataSpec.day("tests_redelivery_raw", REDELIVERY_DAY)

    preview = service.retract(db, [wrong], reason="", dry_run=True)
    assert preview.plan.refire == [
        ("Daily", f"interval:{day.start_ns}"),
        ("Summary", f"interval:{day.start_ns}"),
    ]
    result = service.retract(db, [wrong], reason="bad gains", clean=False, now=clock())
    assert result.retracted == sorted([wrong, product.id])
    released = event_service.events(db, kind="trigger.released", limit=10)
    assert sorted(e.object_id for e in released) == ["Daily", "Summary"]
    fire_data_triggers(db, clock())
    assert len(rms.workflows(db)) == 2  # nothing to fire on until the data come again

    corrected = _deliver(db, settings, 5.0, "corrected")
    run_inline(db, settings, clock)
    views = [v.workflow for v in rms.workflows(db)]
    again = {w.name: w for w in views if w.id not in first.values()}
    assert sorted(again) == ["Daily", "Summary"]
    for name, wf in again.items():
        assert wf.status == "SUCCESS"
        assert (wf.spec.start_ns, wf.spec.end_ns) == (day.start_ns, day.end_ns), name
    (new_product,) = [
        d
        for d in storage_service.datasets(db, data_type="tests_redelivery_daily")
        if d.state == "AVAILABLE"
    ]
    assert read_product(new_product.location, "tests_redelivery_daily").column(
        "total"
    ).to_pylist() == [5.0]
    with db.read() as conn:
        assert [d.id for d in find_datasets(conn, day)] == [corrected]

    # Without a retraction a day still fires at most once.
    _deliver(db, settings, 7.0, "extra")
    run_inline(db, settings, clock)
    assert len(rms.workflows(db)) == 4


def test_a_workflow_that_failed_on_the_retracted_delivery_is_resumed_not_doubled(
    db: Database, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    """Its firing stays: resuming it redoes the failed job on the corrected delivery."""
    _daily_and_summary(db, tmp_path)
    corrupt = _deliver(db, settings, -1.0, "corrupt")
    run_inline(db, settings, clock)
    (daily,) = [v.workflow for v in rms.workflows(db)]
    assert (daily.name, daily.status) == ("Daily", "FAILED")

    result = service.retract(db, [corrupt], reason="corrupt", clean=False, now=clock())
    assert result.retracted == [corrupt] and result.plan.refire == []
    _deliver(db, settings, 3.0, "corrected")
    run_inline(db, settings, clock)
    assert [v.workflow.id for v in rms.workflows(db)] == [daily.id]  # no second Daily
    rms.resume(db, daily.id, now=clock())
    run_inline(db, settings, clock)
    views = {v.workflow.name: v.workflow for v in rms.workflows(db)}
    assert views["Daily"].id == daily.id and views["Daily"].status == "SUCCESS"
    assert views["Summary"].status == "SUCCESS" and len(views) == 2
