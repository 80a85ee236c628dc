"""Ingest workflows on a simulated delivery, checked against the simulator's truth."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dpct.config import Settings
from dpct.datamodel import NS_PER_DAY, NS_PER_S, DataSpec
from dpct.pipelines.ingest import HkConfig, coverage, hk_stats, merge_qualifiers
from dpct.processing import run_inline
from dpct.sim import SimConfig, Simulator, TelemetryGap
from dpct.sim.delivery import write_days
from dpct.storage import (
    Database,
    find_datasets,
    read_product,
)
from dpct.testing import FakeClock
from dpct.transfer import pull, read_manifest
from dpct.workflows import service

DAY = 700
T0 = DAY * NS_PER_DAY
GAP = (T0 + 1200 * NS_PER_S, T0 + 1500 * NS_PER_S)  # 300 s without any telemetry


@pytest.fixture(scope="module")
def delivery(tmp_path_factory: pytest.TempPathFactory):
    config = SimConfig.model_validate(
        {
            "seed": 5,
            "scale": 0.003,
            "quality": {"bad_intervals_per_day": 200.0},
            "anomalies": [TelemetryGap(start_obmt_ns=GAP[0], stop_obmt_ns=GAP[1])],
        }
    )
    (result,) = write_days(Simulator(config), DAY, 1, tmp_path_factory.mktemp("sim"), hours=1)
    return result


def _table(delivery, data_type: str) -> pa.Table:
    manifest = read_manifest(delivery.folder)
    (entry,) = [f for f in manifest.files if f.data_type == data_type]
    return pq.read_table(delivery.folder / entry.file)


def test_hk_statistics_match_numpy_and_count_a_spike(delivery) -> None:
    hk = _table(delivery, "hk")
    stats = hk_stats(hk, HkConfig()).to_pylist()
    by_channel = {row["channel"]: row for row in stats}
    x = hk.column("fpa_temp_k").to_numpy()
    row = by_channel["fpa_temp_k"]
    assert row["samples"] == x.size and row["min"] == x.min() and row["max"] == x.max()
    assert row["mean"] == pytest.approx(x.mean(), rel=1e-12)
    assert row["std"] == pytest.approx(np.std(x, ddof=1), rel=1e-9)

    spiked = x.copy()
    spiked[[3, 7]] += 50.0  # two absurd readings
    hk2 = hk.set_column(hk.column_names.index("fpa_temp_k"), "fpa_temp_k", pa.array(spiked))
    counts = {r["channel"]: r["outliers"] for r in hk_stats(hk2, HkConfig()).to_pylist()}
    assert counts["fpa_temp_k"] == by_channel["fpa_temp_k"]["outliers"] + 2


def test_qualifier_pieces_merge_into_whole_intervals(delivery) -> None:
    pieces = _table(delivery, "data_qualifiers")
    merged = merge_qualifiers(pieces)
    assert merged.num_rows == len(set(pieces.column("dq_id").to_pylist()))
    # Independent check: for each id, pieces tile [min start, max stop) with no hole.
    for row in merged.to_pylist():
        mine = sorted(
            (p["start_obmt_ns"], p["stop_obmt_ns"])
            for p in pieces.to_pylist()
            if p["dq_id"] == row["dq_id"]
        )
        assert (mine[0][0], mine[-1][1]) == (row["start_obmt_ns"], row["stop_obmt_ns"])
        assert all(a[1] == b[0] for a, b in itertools.pairwise(mine))
    # The injected gap is among the qualifiers, whole.
    gaps = [r for r in merged.to_pylist() if r["reason"] == "telemetry_gap"]
    assert [(r["start_obmt_ns"], r["stop_obmt_ns"]) for r in gaps] == [GAP]


def test_coverage_finds_the_injected_gap(delivery) -> None:
    spec = DataSpec("af_windows", T0, T0 + 3600 * NS_PER_S)
    for data_type in ("af_windows", "bam_images", "gsr_observations"):
        (row,) = coverage(_table(delivery, data_type), data_type, spec, 60.0).to_pylist()
        t = _table(delivery, data_type).column("obmt_ns").to_numpy()
        assert not np.any((t >= GAP[0]) & (t < GAP[1]))
        assert row["rows"] == t.size and row["gaps"] >= 1 and row["largest_gap_s"] >= 300.0
        if data_type == "af_windows":  # dense: the largest pause is the injected gap
            assert row["largest_gap_s"] < 300.0 + 60.0


def test_a_pulled_delivery_starts_the_ingest_workflows(
    db: Database, settings: Settings, clock: FakeClock, delivery
) -> None:
    rows = service.install_pipeline(db, "ingest", now=clock())
    assert {r.name for r in rows} == {
        "HKIngestAutWorkflow",
        "DataQualifierIngestAutWorkflow",
        "InputDataUpdateIngestAutWorkflow",
    }
    report = pull(db, settings, delivery.folder, clock=clock)
    assert report.status == "DONE" and len(report.with_status("REGISTERED")) == 6
    run_inline(db, settings, clock)
    views = service.workflows(db, how_many=10)
    assert sorted(v.workflow.name for v in views) == sorted(r.name for r in rows)
    assert all(v.workflow.status == "SUCCESS" for v in views), [
        (v.workflow.name, v.workflow.status) for v in views
    ]
    assert {v.workflow.transfer_id for v in views} == {report.id}
    span = DataSpec("hk_stats", T0, T0 + 3600 * NS_PER_S)
    with db.read() as conn:
        (stats,) = find_datasets(conn, span)
        (bad,) = find_datasets(conn, span.with_type("bad_intervals"))
        coverage_sets = find_datasets(conn, span.with_type("input_coverage"))
    assert read_product(stats.location, "hk_stats").num_rows == 5
    assert GAP in [
        (r["start_obmt_ns"], r["stop_obmt_ns"])
        for r in read_product(bad.location, "bad_intervals").to_pylist()
    ]
    covered = pa.concat_tables(read_product(d.location, "input_coverage") for d in coverage_sets)
    assert sorted(covered.column("data_type").to_pylist()) == [
        "af_windows",
        "bam_images",
        "gsr_observations",
    ]
    assert Path(stats.location).is_relative_to(settings.store_root)
