"""Chunks: determinism, parallel workers, span clipping, schemas, anomalies, HK and DQ."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from dpct.sim import (
    SCHEMAS,
    BackgroundJump,
    QualityConfig,
    SimConfig,
    Simulator,
    Span,
    TelemetryGap,
    ThermalEvent,
    simulate,
)

from .conftest import HOUR_NS, START, columns, concat

UNIT_SUFFIXES = (
    "_ns",
    "_e",
    "_px",
    "_mas",
    "_uas",
    "_rad",
    "_deg",
    "_mag",
    "_k",
    "_v",
    "_s",
    "_days",
    "_masyr",
    "_uasyr",
    "_per_mag",
    "_per_day",
    "_per_year",
    "_arcsec_s",
)


def test_tables_have_their_schemas(small_run, small_sim):
    for chunk in small_run:
        for group in (chunk.products, chunk.truth):
            for name, table in group.items():
                assert table.schema.equals(SCHEMAS[name], check_metadata=True), name
    for name, table in small_sim.static_truth().items():
        assert table.schema.equals(SCHEMAS[name], check_metadata=True), name
    # physical columns say their unit in their name
    for name, schema in SCHEMAS.items():
        for field in schema:
            unit = field.metadata[b"unit"].decode()
            if unit and not pa.types.is_list(field.type) and unit not in ("uas/uas",):
                assert field.name.endswith(UNIT_SUFFIXES), (name, field.name, unit)


def test_chunks_are_reproducible_alone_in_spans_and_in_workers(small_config):
    cfg = small_config.model_copy(update={"scale": 0.002})
    sim = Simulator(cfg)
    span = Span(START + HOUR_NS // 8, START + HOUR_NS // 2)  # not on the chunk grid
    serial = list(sim.chunks(span))
    parallel = list(simulate(cfg, span, workers=2))
    alone = sim.chunk(serial[1].index)
    assert [c.index for c in serial] == [c.index for c in parallel]
    for a, b in zip(serial, parallel, strict=True):
        for name in a.products:
            assert a.products[name].equals(b.products[name]), name
        for name in a.truth:
            assert a.truth[name].equals(b.truth[name]), name
    for name in alone.products:
        assert alone.products[name].equals(serial[1].products[name])
    # clipped ends
    first = serial[0].products["af_windows"].column("obmt_ns")
    assert pc.min(first).as_py() >= span.start_obmt_ns
    assert serial[0].start_obmt_ns == span.start_obmt_ns
    other_seed = Simulator(cfg.model_copy(update={"seed": cfg.seed + 1})).chunk(serial[1].index)
    assert not other_seed.products["af_windows"].equals(serial[1].products["af_windows"])


def test_injected_anomalies_and_events():
    t_jump = START + HOUR_NS // 4
    gap = TelemetryGap(start_obmt_ns=START + HOUR_NS // 2, stop_obmt_ns=START + 3 * HOUR_NS // 4)
    cfg = SimConfig(
        seed=41,
        scale=0.02,
        products=("af_windows", "bam_images", "hk", "data_qualifiers"),
        quality=QualityConfig(bad_intervals_per_day=200.0),
        anomalies=(
            BackgroundJump(ccd_index=20, start_obmt_ns=t_jump, delta_e=500.0),
            ThermalEvent(obmt_ns=t_jump, amplitude_k=2.0, tau_s=1800.0, bav_jump_uas=80.0),
            gap,
        ),
    )
    sim = Simulator(cfg)
    chunks = list(sim.chunks(Span(START, START + HOUR_NS)))
    win = columns(concat(chunks, "products", "af_windows"))
    tr = columns(concat(chunks, "truth", "af_truth"))
    # gap: no telemetry of any kind inside, and a qualifier says so
    for name in ("af_windows", "bam_images", "hk"):
        t = concat(chunks, "products", name).column("obmt_ns").to_numpy()
        assert t.size and not np.any((t >= gap.start_obmt_ns) & (t < gap.stop_obmt_ns)), name
    dq = columns(concat(chunks, "products", "data_qualifiers"))
    assert "telemetry_gap" in set(dq["reason"].tolist())
    # background jump on CCD 20 after t_jump, seen in the truth and in the samples' wings
    on = (win["ccd_index"] == 20) & (win["obmt_ns"] >= t_jump) & ~tr["corrupted"]
    off = (win["ccd_index"] == 20) & (win["obmt_ns"] < t_jump) & ~tr["corrupted"]
    assert on.sum() > 20 and off.sum() > 20
    jump = np.median(tr["background_e"][on]) - np.median(tr["background_e"][off])
    assert jump == pytest.approx(500.0, abs=60.0)
    first = np.array([s[0] for s in win["samples_e"].to_pylist()])
    assert np.median(first[on]) - np.median(first[off]) == pytest.approx(500.0, abs=100.0)
    # bad intervals: windows inside are flagged corrupted, others are not
    af_dq = dq["instrument"] == "AF"
    assert af_dq.sum() > 0
    inside = np.zeros(win["obmt_ns"].size, dtype=bool)
    for s, e, c, f in zip(
        dq["start_obmt_ns"][af_dq],
        dq["stop_obmt_ns"][af_dq],
        dq["ccd_index"][af_dq],
        dq["fov"][af_dq],
        strict=True,
    ):
        inside |= (
            (win["obmt_ns"] >= s)
            & (win["obmt_ns"] < e)
            & ((c < 0) | (win["ccd_index"] == c))
            & ((f < 0) | (win["fov"] == f))
        )
    assert np.array_equal(inside, tr["corrupted"])
    # thermal event: payload temperature steps by 2 K; the basic angle jumps by 80 µas
    hk = columns(concat(chunks, "products", "hk"))
    before = hk["payload_temp_k"][hk["obmt_ns"] < t_jump][-1]
    after = hk["payload_temp_k"][hk["obmt_ns"] >= t_jump][0]
    assert after - before == pytest.approx(2.0, abs=0.1)
    jumps = columns(concat(chunks, "truth", "bav_jumps"))
    assert 80.0 in jumps["amplitude_uas"][jumps["obmt_ns"] == t_jump].tolist()
    bav = sim.bav_uas(np.array([t_jump - 1, t_jump]))
    assert bav[1] - bav[0] == pytest.approx(80.0, abs=0.01)
    static = columns(sim.static_truth()["anomalies"])
    assert sorted(static["kind"].tolist()) == ["background_jump", "gap", "thermal_event"]


def test_long_chunks_find_the_same_transits_as_short_ones() -> None:
    """The spin axis drifts by degrees a day: candidates predicted from one attitude at
    the middle of a 2 h chunk used to miss stars near the field's edges (5 % of them).
    The same stars must cross the same CCDs whatever the chunk length."""

    def crossings(chunk_s: int) -> set[tuple[int, int, int]]:
        config = SimConfig.model_validate(
            {"seed": 3, "scale": 0.005, "chunk_s": chunk_s, "products": ("af_windows",)}
        )
        chunks = Simulator(config).chunks(Span(START, START + 2 * HOUR_NS))
        windows = pa.concat_tables([c.products["af_windows"] for c in chunks])
        return set(
            zip(
                windows.column("source_id").to_pylist(),
                windows.column("fov").to_pylist(),
                windows.column("ccd_index").to_pylist(),
                strict=True,
            )
        )

    short, long = crossings(900), crossings(7200)
    assert len(short) > 1000
    assert long == short
