"""A simulated week through the BAM workflows: daily, weekly, analysis, delivery, runs.

Seven days of BAM images are pulled one delivery a day; the data triggers chain the
daily processing, the daily reports, the weekly processing (fits, report, delivery
upstream) and the analysis. The weekly fits are checked against the simulator's true
harmonics, the delivery by reading it back, the run by closing it. Then three days are
reprocessed and the week refitted: the new products supersede the old ones.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy import stats
from tests.helpers import environment_elsewhere

from dpct.config import Settings
from dpct.datamanagement import service as dm
from dpct.datamodel import NS_PER_DAY, DataSpec
from dpct.processing import run_inline
from dpct.sim import BamJump, SimConfig, Simulator
from dpct.sim.delivery import write_days
from dpct.storage import Database, SystemServices, find_datasets, read_product, sha256_file
from dpct.testing import FakeClock
from dpct.transfer import pull, read_manifest, transfers
from dpct.transfer.tasks import DeliverConfig, deliver
from dpct.workflows import service

pytestmark = pytest.mark.slow  # a week end to end: about a minute

DAY = 700  # a multiple of 7: the week [700, 707) is one aligned run period
WEEK = DataSpec("bam_images", DAY * NS_PER_DAY, (DAY + 7) * NS_PER_DAY)
JUMP_NS = (DAY + 3) * NS_PER_DAY + 14 * 3600 * 10**9
K = 8


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory):
    config = SimConfig.model_validate(
        {
            "seed": 21,
            "scale": 0.05,
            "products": ("bam_images", "hk", "data_qualifiers"),
            "bam": {"jumps_per_day": 0.0},
            "hk": {"thermal_events_per_day": 0.0},
            "anomalies": [BamJump(obmt_ns=JUMP_NS, amplitude_uas=600.0)],
        }
    )
    sim = Simulator(config)
    days = write_days(sim, DAY, 7, tmp_path_factory.mktemp("upstream"), truth=False)
    return sim, days


def _tables(db: Database, data_type: str, spec: DataSpec = WEEK) -> list[pa.Table]:
    with db.read() as conn:
        found = find_datasets(conn, spec.with_type(data_type))
    return [read_product(d.location, data_type) for d in found]


def _one(db: Database, data_type: str) -> pa.Table:
    (table,) = _tables(db, data_type)
    return table


def _chi2_ok(z: np.ndarray) -> bool:
    return bool((z**2).sum() < stats.chi2.isf(0.001, z.size))


def _truth(sim: Simulator) -> tuple[np.ndarray, np.ndarray]:
    model = sim.static_truth()["bav_model"].to_pydict()
    return np.array(model["cos_uas"][1 : K + 1]), np.array(model["sin_uas"][1 : K + 1])


def _statuses(db: Database, name: str) -> list[str]:
    return [v.workflow.status for v in service.workflows(db, name=name)]


def test_a_week_is_fitted_delivered_closed_and_reprocessed(
    db: Database,
    settings: Settings,
    clock: FakeClock,
    week,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    sim, days = week
    # the delivery task uses its node's database and outbox, whatever its environment says
    elsewhere = environment_elsewhere(monkeypatch, tmp_path)
    service.install_pipeline(db, "bam", now=clock())
    for day in days:
        assert pull(db, settings, day.folder, clock=clock).status == "DONE"
        run_inline(db, settings, clock)

    assert _statuses(db, "BAMDailyProcessingWorkflow") == ["SUCCESS"] * 7
    assert _statuses(db, "BAMReportAutWorkflow") == ["SUCCESS"] * 7
    assert _statuses(db, "BAMWeeklyProcessingWorkflow") == ["SUCCESS"]
    assert _statuses(db, "BAMAnalysisAutWorkflow") == ["SUCCESS"]

    # -- the weekly fit against the truth -------------------------------------------
    harmonics = _one(db, "bam_weekly_harmonics")
    cos_true, sin_true = _truth(sim)
    wk = harmonics.filter(pc.equal(harmonics.column("scope"), "week")).sort_by("k")
    col = {c: wk.column(c).to_numpy() for c in wk.column_names}
    z = np.concatenate(
        [(col["cos_uas"] - cos_true) / col["cos_err_uas"],
         (col["sin_uas"] - sin_true) / col["sin_err_uas"]]
    )  # fmt: skip
    assert _chi2_ok(z)
    # the true coefficients are constant: the fitted rates are noise around zero
    rates = np.concatenate(
        [col["cos_rate_uas_per_day"] / col["cos_rate_err_uas_per_day"],
         col["sin_rate_uas_per_day"] / col["sin_rate_err_uas_per_day"]]
    )  # fmt: skip
    assert _chi2_ok(rates)
    assert 0.9 < col["chi2_dof"][0] < 1.1
    daily = harmonics.filter(pc.equal(harmonics.column("scope"), "day"))
    assert sorted(set(daily.column("start_ns").to_pylist())) == [
        (DAY + d) * NS_PER_DAY for d in range(7)
    ]
    # the injected jump, found by the week's fit within one sample of its time
    (jump,) = _one(db, "bam_weekly_jumps").to_pylist()
    bav_t = np.sort(
        np.concatenate([t.column("obmt_ns").to_numpy() for t in _tables(db, "bam_bav")])
    )
    first_after = int(bav_t[np.searchsorted(bav_t, JUMP_NS)])
    assert abs(np.searchsorted(bav_t, jump["obmt_ns"]) - np.searchsorted(bav_t, first_after)) <= 1
    assert abs(jump["jump_uas"] - 600.0) < 5 * jump["err_uas"]

    # -- the weekly report's series are the products' --------------------------------
    report = _one(db, "bam_weekly_report")
    series = report.column("series").to_numpy()

    def part(name: str) -> pa.Table:
        return report.filter(pa.array(series == name)).sort_by("x")

    amp1 = part("daily amplitude k=1")
    day1 = daily.filter(pc.equal(daily.column("k"), 1)).sort_by("start_ns")
    np.testing.assert_allclose(amp1.column("y").to_numpy(), day1.column("amplitude_uas").to_numpy())
    assert part("6-hourly bav_uas").num_rows == 28
    np.testing.assert_allclose(
        part("harmonic amplitude").column("y").to_numpy(), np.hypot(col["cos_uas"], col["sin_uas"])
    )
    assert part("jump").column("x").to_pylist() == [jump["obmt_ns"]]
    logs = {p.name.split(".", 1)[1] for p in settings.logs_dir.rglob("*.bam_weekly_report.*")}
    assert logs == {"bam_weekly_report.png", "bam_weekly_report.html"}

    # -- the analysis: stable harmonics, trends consistent with none ----------------
    analysis = _one(db, "bam_analysis")
    rows = analysis.to_pylist()
    trends = np.array([r["value"] / r["error"] for r in rows if r["quantity"].endswith("trend")])
    assert trends.size == 2 * K and _chi2_ok(trends)
    means = {(r["quantity"], r["k"]): r for r in rows if r["quantity"].endswith("mean")}
    for k in range(1, K + 1):
        c = means[("cos mean", k)]
        assert abs(c["value"] - cos_true[k - 1]) < 5 * c["error"]
    assert any(r["quantity"] == "residual vs bench temperature" for r in rows)

    # -- the delivery upstream: sealed, complete, byte-identical ----------------------
    trace = _one(db, "dts_delivery")
    (folder,) = set(trace.column("target").to_pylist())
    manifest = read_manifest(folder)
    assert Path(folder).parent == Path(settings.outbox)
    assert sorted(e.data_type for e in manifest.files) == ["bam_bav"] * 7 + ["bam_weekly_harmonics"]
    for entry in manifest.files:
        assert "sha256:" + sha256_file(Path(folder) / entry.file) == entry.checksum
    delivered = pa.concat_tables(
        [pq.read_table(Path(folder) / e.file) for e in manifest.files if e.data_type == "bam_bav"]
    )
    assert delivered.num_rows == bav_t.size
    (push,) = transfers(db, direction="push")
    assert push.status == "DONE" and push.id == trace.column("transfer_id")[0].as_py()
    # a retry of the delivery finds it sealed and does not send it again
    config = DeliverConfig(data_types=["bam_bav", "bam_weekly_harmonics"], prefix="BAM-BAV")
    again = deliver(
        config, WEEK.with_type("bam_bav"), logging.getLogger("test"), SystemServices(db, settings)
    )
    assert again.column("transfer_id").to_pylist() == [0] * 8
    assert len(transfers(db, direction="push")) == 1
    assert not elsewhere.exists()

    # -- the week's run gathers its workflows ----------------------------------------
    (run,) = dm.runs(db, sw="BAM")
    assert (run.obmt_start_ns, run.obmt_end_ns) == (WEEK.start_ns, WEEK.end_ns)
    assert len(run.workflow_ids) == 7 + 7 + 1 + 1 and run.status == "SUCCESS"

    # -- cyclic reprocessing of three days, then the week again -----------------------
    old_bav = {d.id for d in _datasets(db, "bam_bav")}
    three = DataSpec("bam_images", WEEK.start_ns, WEEK.start_ns + 3 * NS_PER_DAY)
    service.install_pipeline(db, "bam", now=clock())  # idempotent
    service.submit(db, "BAMCyclicReprocessingWorkflow", three, now=clock())
    run_inline(db, settings, clock)
    assert _statuses(db, "BAMCyclicReprocessingWorkflow") == ["SUCCESS"]
    now_bav = _datasets(db, "bam_bav")
    assert len(now_bav) == 7  # one current dataset a day: three new, four kept
    assert len({d.id for d in now_bav} - old_bav) == 3
    service.submit(db, "BAMWeeklyProcessingWorkflow", WEEK.with_type("bam_bav"), now=clock())
    run_inline(db, settings, clock)
    assert _statuses(db, "BAMWeeklyProcessingWorkflow") == ["SUCCESS", "SUCCESS"]
    assert len(_tables(db, "bam_weekly_harmonics")) == 1  # the refit superseded the first
    assert len(_tables(db, "dts_delivery")) == 2  # traces of both deliveries
    pushes = transfers(db, direction="push")
    assert len(pushes) == 2 and len(set(p.peer for p in pushes)) == 2  # a new delivery

    # -- run check closure closes the week and deletes its fringes --------------------
    (run,) = dm.runs(db, sw="BAM")
    assert run.status == "SUCCESS"
    closure = dm.check_closure(db, "BAM", WEEK.start_ns, WEEK.end_ns, now=clock())
    assert closure.check.check_status == "OK" and closure.closed_runs == [run.id]
    assert {d.spec.data_type for d in closure.deleted} == {"bam_fringes"}
    assert len(closure.deleted) == 7 + 3  # superseded fringes included
    assert closure.files_removed == len(closure.deleted)
    assert _datasets(db, "bam_fringes") == []
    assert len(_datasets(db, "bam_bav")) == 7  # the products stay


def _datasets(db: Database, data_type: str):
    with db.read() as conn:
        return find_datasets(conn, WEEK.with_type(data_type))
