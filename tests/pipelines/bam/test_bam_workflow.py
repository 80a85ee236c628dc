"""BAMDailyProcessingWorkflow on a pulled simulated day, against the simulator's truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from dpct.config import Settings
from dpct.datamodel import NS_PER_DAY, DataSpec
from dpct.processing import run_inline
from dpct.sim import BamJump, SimConfig, Simulator, TelemetryGap
from dpct.sim.delivery import write_days
from dpct.storage import Database, find_datasets, read_product
from dpct.testing import FakeClock
from dpct.transfer import pull
from dpct.workflows import service

DAY = 700
T0 = DAY * NS_PER_DAY
JUMP_NS = T0 + 5 * 3600 * 10**9
GAP = (T0 + 9 * 3600 * 10**9, T0 + 9 * 3600 * 10**9 + 600 * 10**9)


@pytest.fixture(scope="module")
def delivery(tmp_path_factory: pytest.TempPathFactory):
    config = SimConfig.model_validate(
        {
            "seed": 8,
            "scale": 0.05,
            "products": ("bam_images", "hk", "data_qualifiers"),
            "bam": {"jumps_per_day": 0.0},
            "hk": {"thermal_events_per_day": 0.0},
            "anomalies": [
                BamJump(obmt_ns=JUMP_NS, amplitude_uas=800.0),
                TelemetryGap(start_obmt_ns=GAP[0], stop_obmt_ns=GAP[1]),
            ],
        }
    )
    sim = Simulator(config)
    (day,) = write_days(sim, DAY, 1, tmp_path_factory.mktemp("upstream"), truth=False)
    return sim, day


def _product(db: Database, data_type: str) -> pa.Table:
    with db.read() as conn:
        found = find_datasets(conn, DataSpec(data_type, T0, T0 + NS_PER_DAY))
    return pa.concat_tables([read_product(d.location, data_type) for d in found])


def test_a_pulled_day_of_bam_images_is_processed(
    db: Database, settings: Settings, clock: FakeClock, delivery, tmp_path: Path
) -> None:
    sim, day = delivery
    service.install_pipeline(db, "bam", now=clock())
    report = pull(db, settings, day.folder, clock=clock)
    assert report.status == "DONE"
    run_inline(db, settings, clock)
    (view,) = service.workflows(db, name="BAMDailyProcessingWorkflow")
    assert view.workflow.status == "SUCCESS" and view.workflow.transfer_id == report.id

    fringes = _product(db, "bam_fringes")
    t = fringes.column("obmt_ns").to_numpy()
    flags = fringes.column("flags").to_numpy()
    in_gap = (t >= GAP[0]) & (t < GAP[1])
    assert np.all(flags[in_gap] & 16)  # the telemetry-gap qualifier, honoured
    assert not np.any(flags[~in_gap] & 16)

    jumps = _product(db, "bam_jumps")
    bav = _product(db, "bam_bav")
    bav_t = bav.column("obmt_ns").to_numpy()
    first_after = int(bav_t[np.searchsorted(bav_t, JUMP_NS)])
    assert jumps.column("obmt_ns").to_pylist() == [first_after]
    assert not np.any((bav_t >= GAP[0]) & (bav_t < GAP[1]))

    harmonics = _product(db, "bam_harmonics").sort_by("k")
    model = sim.static_truth()["bav_model"].to_pydict()
    z = np.concatenate(
        [
            (harmonics.column("cos_uas").to_numpy() - np.array(model["cos_uas"][1:9]))
            / harmonics.column("cos_err_uas").to_numpy(),
            (harmonics.column("sin_uas").to_numpy() - np.array(model["sin_uas"][1:9]))
            / harmonics.column("sin_err_uas").to_numpy(),
        ]
    )
    assert (z**2).sum() < stats.chi2.isf(0.001, z.size)
    resid = bav.column("residual_uas").to_numpy() / bav.column("err_uas").to_numpy()
    assert 0.9 < np.std(resid) < 1.1

    # the report workflow followed the day's harmonics; its series are the products'
    (rep,) = service.workflows(db, name="BAMReportAutWorkflow")
    assert rep.workflow.status == "SUCCESS"
    report = _product(db, "bam_report")
    series = report.column("series").to_numpy()
    amp = report.filter(pa.array(series == "harmonic amplitude")).sort_by("x")
    assert amp.column("x").to_pylist() == list(range(1, 9))
    np.testing.assert_allclose(
        amp.column("y").to_numpy(), harmonics.column("amplitude_uas").to_numpy()
    )
    (jump,) = report.filter(pa.array(series == "jump")).to_pylist()
    assert jump["x"] == first_after and jump["y"] == jumps.column("jump_uas")[0].as_py()
    hourly = report.filter(pa.array(series == "hourly bav_uas"))
    assert hourly.num_rows == 24  # one point per hour of the day, the gap hour included
    b = bav.column("bav_uas").to_numpy()
    w = 1 / bav.column("err_uas").to_numpy() ** 2
    first = bav_t < bav_t.min() + 3600 * 10**9
    assert hourly.column("y")[0].as_py() == pytest.approx((w * b)[first].sum() / w[first].sum())
    assert report.filter(pa.array(series == "bav vs bam bench temperature")).num_rows == 24
    logs = list(settings.logs_dir.rglob("*.bam_report.*"))
    assert {p.suffix for p in logs} == {".png", ".html"}
    assert logs[0].stat().st_size > 0
