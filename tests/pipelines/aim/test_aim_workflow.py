"""Simulated days through the AIM workflows: ingest, processing, monitoring, runs.

Days arrive as deliveries of four 6 h files of AF windows. The data triggers chain
AIMDailyIngestAutWorkflow → AIMDailyProcessingWorkflow (248 image-parameter jobs, one
per CCD × chunk, then the day's LSF calibration and its delivery upstream) →
AIMMonitoringWorkflow. The second day is fitted with the first day's calibration and
raises no alarm; a day with a corrupt chunk ends PARTIALLYSUCCESS and completes after the
chunk is retracted, redelivered and the workflow resumed; a cyclic reprocessing of the
three days refits them with the newest calibration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from tests.helpers import environment_elsewhere

from dpct.config import Settings
from dpct.datamanagement import service as dm
from dpct.datamodel import NS_PER_DAY, DataSpec
from dpct.events import service as events
from dpct.processing import run_inline
from dpct.sim import SimConfig, Simulator, Span
from dpct.storage import Database, find_datasets, read_product
from dpct.testing import FakeClock
from dpct.transfer import DeliveryWriter, pull, read_manifest, transfers
from dpct.workflows import service

pytestmark = pytest.mark.slow  # the pipeline end to end over days: minutes

DAY = 700
CHUNK_NS = 6 * 3600 * 10**9


def _day_tables(sim: Simulator, day: int) -> dict[str, pa.Table]:
    span = Span(day * NS_PER_DAY, (day + 1) * NS_PER_DAY)
    chunks = list(sim.chunks(span))
    return {
        name: pa.concat_tables([c.products[name] for c in chunks])
        for name in ("af_windows", "data_qualifiers")
    }


def _corrupt(windows: pa.Table) -> pa.Table:
    """One window loses a sample while its n_samples stays: a corrupt file."""
    samples = windows.column("samples_e").to_pylist()
    samples[len(samples) // 2] = samples[len(samples) // 2][:-1]
    index = windows.column_names.index("samples_e")
    return windows.set_column(index, "samples_e", pa.array(samples, pa.list_(pa.float32())))


def _deliver(
    folder: Path, day: int, tables: dict[str, pa.Table], *, chunks=range(4), corrupt: int = -1
) -> Path:
    """A delivery of the day's qualifiers and its windows in 6 h files."""
    writer = DeliveryWriter(folder, folder.name)
    start = day * NS_PER_DAY
    if 0 in chunks:
        spec = DataSpec("data_qualifiers", start, start + NS_PER_DAY)
        writer.add_table(tables["data_qualifiers"], spec)
    t = tables["af_windows"].column("obmt_ns").to_numpy()
    for k in chunks:
        lo, hi = start + k * CHUNK_NS, start + (k + 1) * CHUNK_NS
        part = tables["af_windows"].filter(pa.array((t >= lo) & (t < hi)))
        writer.add_table(_corrupt(part) if k == corrupt else part, DataSpec("af_windows", lo, hi))
    writer.seal()
    return folder


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    config = SimConfig.model_validate(
        {"seed": 11, "scale": 0.003, "products": ("af_windows", "data_qualifiers")}
    )
    sim = Simulator(config)
    out = tmp_path_factory.mktemp("upstream")
    tables = {day: _day_tables(sim, day) for day in (DAY, DAY + 1, DAY + 2)}
    return {
        "first": _deliver(out / "d700", DAY, tables[DAY]),
        "second": _deliver(out / "d701", DAY + 1, tables[DAY + 1]),
        "corrupt": _deliver(out / "d702", DAY + 2, tables[DAY + 2], corrupt=2),
        "fixed": _deliver(out / "d702-fix", DAY + 2, tables[DAY + 2], chunks=[2]),
    }


def _spec(data_type: str, day: int) -> DataSpec:
    return DataSpec(data_type, day * NS_PER_DAY, (day + 1) * NS_PER_DAY)


def _datasets(db: Database, data_type: str, day: int):
    with db.read() as conn:
        return find_datasets(conn, _spec(data_type, day))


def _table(db: Database, data_type: str, day: int) -> pa.Table:
    return pa.concat_tables(
        [read_product(d.location, data_type) for d in _datasets(db, data_type, day)]
    )


def _statuses(db: Database, name: str) -> list[str]:
    return [v.workflow.status for v in reversed(service.workflows(db, name=name))]


def _aim_run(db: Database, day: int):
    (row,) = [r for r in dm.aim_runs(db) if r.run.obmt_start_ns == day * NS_PER_DAY]
    return row


def test_days_flow_through_ingest_processing_and_monitoring(
    db: Database,
    settings: Settings,
    clock: FakeClock,
    days: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # the delivery task uses its node's database and outbox, whatever its environment says
    elsewhere = environment_elsewhere(monkeypatch, tmp_path)
    service.install_pipeline(db, "aim", now=clock())

    # -- day 700: the default LSF, then the first calibration ------------------------
    first = pull(db, settings, days["first"], clock=clock)
    run_inline(db, settings, clock)
    assert _statuses(db, "AIMDailyIngestAutWorkflow") == ["SUCCESS"]
    assert _statuses(db, "AIMDailyProcessingWorkflow") == ["SUCCESS"]
    assert _statuses(db, "AIMMonitoringWorkflow") == ["SUCCESS"]
    params0 = _datasets(db, "aim_image_params", DAY)
    assert len(params0) == 62 * 4  # one product per CCD × 6 h chunk
    (calibration0,) = _datasets(db, "aim_lsf_calibration", DAY)
    assert set(_table(db, "aim_image_params", DAY).column("lsf_solution_id").to_pylist()) == {0}

    # the AimRun of the day: what it read, what it made, how it went
    run0 = _aim_run(db, DAY)
    windows0 = [f for f in first.files if f.data_type == "af_windows"]
    with db.read() as conn:
        delivered = find_datasets(conn, _spec("af_windows", DAY))
    assert len(delivered) == len(windows0) == 4
    assert run0.run.status == "SUCCESS" and not run0.active_processing
    assert run0.solution_ids_processed == tuple(sorted(d.solution_id for d in delivered))
    assert run0.solution_ids_to_be_processed == ()
    assert run0.solution_id == calibration0.solution_id
    history = [
        e.kind
        for e in events.events(
            db, object_type="run", object_id=str(run0.run.id), newest_first=False
        )
        if e.kind != "run.workflows"
    ]
    # DEFINED with its first workflow, RUNNING while any workflow is, SUCCESS after each
    # workflow of the chain (the next one, started by a data trigger, reopens it)
    assert history[:2] == ["run.defined", "run.running"] and history[-1] == "run.success"
    assert set(history) == {"run.defined", "run.running", "run.success"}

    # -- day 701: fitted with day 700's calibration; a clean day raises no alarm -----
    pull(db, settings, days["second"], clock=clock)
    run_inline(db, settings, clock)
    assert _statuses(db, "AIMDailyProcessingWorkflow") == ["SUCCESS", "SUCCESS"]
    params1 = _table(db, "aim_image_params", DAY + 1)
    assert set(params1.column("lsf_solution_id").to_pylist()) == {calibration0.solution_id}
    monitoring = _table(db, "aim_monitoring", DAY + 1)
    chi2 = monitoring.filter(pa.compute.equal(monitoring.column("quantity"), "chi2_dof"))
    assert chi2.num_rows == 62
    assert abs(np.median(chi2.column("value").to_numpy()) - 1) < 0.05
    assert monitoring.filter(monitoring.column("alarm")).to_pylist() == []
    alarms_after_701 = events.events(db, kind="alarm.*")
    day_701 = [e for e in alarms_after_701 if f"day {DAY + 1}" in e.message]
    assert day_701 == []
    logs = {p.name.split(".", 1)[1] for p in settings.logs_dir.rglob("*.aim_report.*")}
    assert logs == {"aim_report.png", "aim_report.html"}

    # the day's calibrations went upstream, one sealed delivery each
    pushed = transfers(db, direction="push")
    assert len(pushed) == 2 and all(t.status == "DONE" for t in pushed)
    for t in pushed:
        assert [e.data_type for e in read_manifest(t.peer).files] == ["aim_lsf_calibration"]
        assert Path(t.peer).parent == Path(settings.outbox)
    assert not elsewhere.exists()

    # -- day 702: a corrupt chunk; the other three are kept; fixed and resumed -------
    pull(db, settings, days["corrupt"], clock=clock)
    run_inline(db, settings, clock)
    ingest = service.workflows(db, name="AIMDailyIngestAutWorkflow")[0]
    assert ingest.workflow.status == "PARTIALLYSUCCESS"
    failed = [j for j in service.jobs(db, ingest.workflow.id) if j.status == "FAILED"]
    assert len(failed) == 1 and "n_samples" in (failed[0].error_message or "")
    assert "retract it" in failed[0].error_message
    assert len(_datasets(db, "aim_windows", DAY + 2)) == 3
    assert _statuses(db, "AIMDailyProcessingWorkflow") == ["SUCCESS", "SUCCESS"]  # waits
    assert _aim_run(db, DAY + 2).run.status == "PARTIALLYSUCCESS"

    corrupt = [
        d
        for d in _datasets(db, "af_windows", DAY + 2)
        if d.spec.start_ns == (DAY + 2) * NS_PER_DAY + 2 * CHUNK_NS
    ]
    dm.retract(db, [d.id for d in corrupt], reason="corrupt chunk, redelivered", now=clock())
    assert _aim_run(db, DAY + 2).solution_ids_to_be_processed == ()  # retracted: not due
    pull(db, settings, days["fixed"], clock=clock)
    (redelivered,) = [
        d
        for d in _datasets(db, "af_windows", DAY + 2)
        if d.spec.start_ns == corrupt[0].spec.start_ns
    ]
    assert _aim_run(db, DAY + 2).solution_ids_to_be_processed == (redelivered.solution_id,)
    service.resume(db, ingest.workflow.id, now=clock())
    run_inline(db, settings, clock)
    assert service.workflow(db, ingest.workflow.id).workflow.status == "SUCCESS"
    assert _statuses(db, "AIMDailyProcessingWorkflow") == ["SUCCESS"] * 3
    run2 = _aim_run(db, DAY + 2)
    assert run2.run.status == "SUCCESS" and run2.solution_ids_to_be_processed == ()

    # -- a cyclic reprocessing of the three days with the newest calibration ----------
    (newest,) = _datasets(db, "aim_lsf_calibration", DAY + 2)
    span = DataSpec("aim_windows", DAY * NS_PER_DAY, (DAY + 3) * NS_PER_DAY)
    service.submit(db, "AIMCyclicReprocessingWorkflow", span, now=clock())
    run_inline(db, settings, clock)
    assert _statuses(db, "AIMCyclicReprocessingWorkflow") == ["SUCCESS"]
    for day in (DAY, DAY + 1, DAY + 2):
        refit = _datasets(db, "aim_image_params", day)
        assert len(refit) == 62 * 4  # the old products superseded, not added to
        solutions = set(_table(db, "aim_image_params", day).column("lsf_solution_id").to_pylist())
        assert solutions == {newest.solution_id}
        (recalibrated,) = _datasets(db, "aim_lsf_calibration", day)
        assert recalibrated.solution_id > newest.solution_id

    # -- run check closure closes the three days and deletes their ingested windows ---
    closure = dm.check_closure(db, "AIM", DAY * NS_PER_DAY, (DAY + 3) * NS_PER_DAY, now=clock())
    assert closure.check.check_status == "OK" and len(closure.closed_runs) == 3
    assert {d.spec.data_type for d in closure.deleted} == {"aim_windows"}
    assert len(closure.deleted) == 12 and closure.files_removed == 12
    assert all(_datasets(db, "aim_image_params", day) for day in (DAY, DAY + 1, DAY + 2))
