"""AF windows: noise model (χ²), LSF, Cramér–Rao, timing, cosmic rays, saturation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from scipy import stats

from dpct.sim import (
    TDI_PERIOD_NS,
    AfConfig,
    LsfParams,
    SimConfig,
    Simulator,
    Span,
    cramer_rao_centroid,
    lsf_sampled,
    lsf_sampled_derivative,
)
from dpct.sim._lsf import sampled_profile

from .conftest import HOUR_NS, START, columns, concat


def _windows(run: list) -> tuple[dict, dict, pa.Array]:
    win = concat(run, "products", "af_windows")
    truth = concat(run, "truth", "af_truth")
    assert win.column("window_id").equals(truth.column("window_id"))
    return columns(win), columns(truth), win.column("samples_e").combine_chunks()


def _expected(w: dict, tr: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat λ_k (from the truth and the public LSF), RON² per sample, window index."""
    n = w["n_samples"].astype(np.int64)
    idx = np.repeat(np.arange(n.size), n)
    k = np.arange(idx.size) - np.repeat(np.cumsum(n) - n, n)
    p = LsfParams(
        tr["lsf_sigma_core_px"][idx],
        tr["lsf_sigma_halo_px"][idx],
        tr["lsf_halo_weight"][idx],
        tr["lsf_asym_px"][idx],
    )
    lam = tr["flux_e"][idx] * lsf_sampled(k - tr["centroid_px"][idx], p) + tr["background_e"][idx]
    return lam, w["ron_e"][idx].astype(np.float64) ** 2, idx


def _clean(w: dict, tr: dict) -> np.ndarray:
    return (tr["cosmic_ray_sample"] < 0) & ~tr["corrupted"] & ~w["saturated"]


def test_sample_variance_is_lambda_plus_ron2(small_run):
    """Σ z², z = (s − λ)/√(λ + RON²), against its exact mean and variance (two-sided,
    significance 0.1 %): Var z² = 2 + λ/(λ + RON²)² for Poisson + Gaussian samples."""
    w, tr, samples = _windows(small_run)
    lam, ron2, idx = _expected(w, tr)
    s = samples.flatten().to_numpy().astype(np.float64)
    keep = _clean(w, tr)[idx]
    z2 = (s - lam) ** 2 / (lam + ron2)
    var_z2 = 2 + lam / (lam + ron2) ** 2
    stat = (z2[keep].sum() - keep.sum()) / np.sqrt(var_z2[keep].sum())
    assert keep.sum() > 100_000
    assert abs(stat) < stats.norm.isf(0.0005)
    # and per brightness decade (a wrong RON shows at faint, a wrong λ at bright levels)
    for lo, hi in ((0, 100), (100, 1e3), (1e3, 1e4), (1e4, 1e7)):
        m = keep & (lam >= lo) & (lam < hi)
        if m.sum() < 1000:
            continue
        st = (z2[m].sum() - m.sum()) / np.sqrt(var_z2[m].sum())
        assert abs(st) < stats.norm.isf(0.0005), (lo, hi, st)
    # the residual mean is zero: the samples follow the true LSF
    zmean = ((s - lam) / np.sqrt(lam + ron2))[keep].mean()
    assert abs(zmean) < 4 / np.sqrt(keep.sum())


def test_sample_variance_test_detects_a_wrong_ron(small_run):
    w, tr, samples = _windows(small_run)
    lam, ron2, idx = _expected(w, tr)
    s = samples.flatten().to_numpy().astype(np.float64)
    keep = _clean(w, tr)[idx] & (lam < 100)
    z2 = (s - lam) ** 2 / (lam + 0.5 * ron2)
    stat = (z2[keep].sum() - keep.sum()) / np.sqrt((2 + lam / (lam + ron2) ** 2)[keep].sum())
    assert stat > 10


def test_window_timing_and_sizes(small_run, small_config):
    w, tr, _ = _windows(small_run)
    # transit time = obmt of sample 0 + centroid × TDI period (to rounding of the ns)
    dt = (tr["transit_obmt_ns"] - w["obmt_ns"]).astype(np.float64)
    assert np.max(np.abs(dt - tr["centroid_px"] * TDI_PERIOD_NS)) <= 1.0
    assert np.all(w["obmt_ns"] % TDI_PERIOD_NS == 0)
    af = small_config.af
    full = np.where(w["g_mag"] <= af.bright_g_mag, af.bright_samples, af.faint_samples)
    assert np.all(w["n_samples"][~w["truncated"]] == full[~w["truncated"]])
    tn = w["truncated"]
    assert 0.005 < tn.mean() < 0.05
    assert np.all(w["n_samples"][tn] < full[tn]) and np.all(w["n_samples"][tn] >= 6)
    # the centroid sits inside the untruncated window, near its centre
    c_full = tr["centroid_px"] + w["first_sample"]
    off = c_full - (full - 1) / 2
    assert np.all(np.abs(off) < 1.6)
    assert np.std(off) == pytest.approx(np.hypot(af.onboard_al_error_px, 1 / np.sqrt(12)), rel=0.1)


def test_cosmic_rays_are_in_the_samples(small_run):
    w, tr, samples = _windows(small_run)
    lam, ron2, _ = _expected(w, tr)
    s = samples.flatten().to_numpy().astype(np.float64)
    hit = np.flatnonzero((tr["cosmic_ray_sample"] >= 0) & ~tr["corrupted"] & ~w["saturated"])
    assert hit.size > 50
    starts = np.cumsum(w["n_samples"]) - w["n_samples"]
    pos = starts[hit] + tr["cosmic_ray_sample"][hit]
    excess = s[pos] - lam[pos] - tr["cosmic_ray_e"][hit]
    z = excess / np.sqrt(lam[pos] + ron2[pos])
    assert np.max(np.abs(z)) < 6


def test_numba_profile_matches_reference():
    rng = np.random.default_rng(3)
    out = np.empty(64)
    for _ in range(50):
        sc, ratio, a, d = (
            rng.uniform(0.6, 1.2),
            rng.uniform(2, 3),
            rng.uniform(0.05, 0.3),
            rng.normal(0, 0.1),
        )
        c = rng.uniform(4, 8)
        n = 12
        sampled_profile(c, sc, sc * ratio, a, d, n, 0, out)
        ref = lsf_sampled(np.arange(n) - c, LsfParams(sc, sc * ratio, a, d))
        assert np.max(np.abs(out[:n] - ref)) < 1e-13


def test_lsf_normalised_centred_and_derivative():
    p = LsfParams(0.85, 2.2, 0.15, 0.08)
    x = np.arange(-60, 61) + 0.3
    prof = lsf_sampled(x, p)
    assert prof.sum() == pytest.approx(1.0, abs=1e-12)
    # first moment of the pixel-sampled LSF is zero up to aliasing (e^{−2π²σ²} ≈ 10⁻⁶)
    assert abs((x * prof).sum()) < 1e-5
    h = 1e-6
    fd = (lsf_sampled(x + h, p) - lsf_sampled(x - h, p)) / (2 * h)
    assert np.max(np.abs(fd - lsf_sampled_derivative(x, p))) < 1e-8


def test_lsf_varies_with_colour_time_and_broadening():
    from dpct.sim import LsfBroadening

    start = START + 2 * HOUR_NS
    cfg = SimConfig(
        seed=5, anomalies=(LsfBroadening(start_obmt_ns=start, rate_per_day=0.1, ccd_index=7),)
    )
    sim = Simulator(cfg)
    blue = sim.lsf_params(7, 0.0, START).sigma_core_px
    red = sim.lsf_params(7, 3.0, START).sigma_core_px
    assert red > blue
    later = sim.lsf_params(7, 1.0, START + 400 * 86_400 * 10**9).sigma_core_px
    assert later > sim.lsf_params(7, 1.0, START).sigma_core_px
    # injected broadening: +10 %/day on CCD 7 only, after its start
    day = 86_400 * 10**9

    def sigma(ccd: int, t: int) -> float:
        return float(sim.lsf_params(ccd, 1.0, t).sigma_core_px)

    ageing = sigma(8, start + day) / sigma(8, start - 1)  # contamination: every CCD
    # linear growth (1 + a·years) since the NSL start, a = 2 %/yr: ≈ a/365/(1 + a·years)
    assert ageing == pytest.approx(1 + cfg.af.lsf_ageing_per_year / 365.25, rel=2e-6)
    assert ageing > 1
    assert sigma(7, start + day) / sigma(7, start - 1) / ageing == pytest.approx(1.1, rel=1e-9)
    x = np.linspace(-5, 5, 11)
    assert np.allclose(
        sim.lsf_true(x, 7, 1.0, START), lsf_sampled(x, sim.lsf_params(7, 1.0, START))
    )


def test_centroid_errors_reach_the_cramer_rao_bound(small_run):
    """Known flux and background: a weighted least-squares centroid (Newton, true LSF)
    has the 1-parameter Cramér–Rao variance (χ² test of the normalised errors, 0.1 %)."""
    w, tr, samples = _windows(small_run)
    sel = np.flatnonzero(_clean(w, tr) & ~w["truncated"] & (w["g_mag"] < 18.5))
    assert sel.size > 1000
    starts = np.cumsum(w["n_samples"]) - w["n_samples"]
    flat = samples.flatten().to_numpy().astype(np.float64)
    z = []
    for i in sel:
        n = int(w["n_samples"][i])
        s = flat[starts[i] : starts[i] + n]
        p = LsfParams(
            tr["lsf_sigma_core_px"][i],
            tr["lsf_sigma_halo_px"][i],
            tr["lsf_halo_weight"][i],
            tr["lsf_asym_px"][i],
        )
        f, b, r2 = tr["flux_e"][i], tr["background_e"][i], float(w["ron_e"][i]) ** 2
        k = np.arange(n)
        c = tr["centroid_px"][i]
        var = f * lsf_sampled(k - c, p) + b + r2  # weights at the truth
        est = c + 0.05  # start off the truth
        for _ in range(6):
            model = f * lsf_sampled(k - est, p) + b
            d = -f * lsf_sampled_derivative(k - est, p)
            est += ((s - model) * d / var).sum() / (d * d / var).sum()
        sig = cramer_rao_centroid(f, b, float(w["ron_e"][i]), p, n, c, joint=False)
        z.append((est - c) / sig)
    z = np.asarray(z)
    chi2 = (z**2).sum()
    lo, hi = stats.chi2.ppf([0.0005, 0.9995], z.size)
    # The least-squares centroid is efficient only asymptotically: allow 5 % excess.
    assert lo < chi2 < hi * 1.05, chi2 / z.size
    # joint (centroid, flux, background) bound is larger than the 1-parameter one
    p = LsfParams(0.85, 2.2, 0.15, 0.1)
    # a star near the window edge: flux and background are no longer orthogonal to c
    joint = cramer_rao_centroid(1e4, 20, 4.5, p, 12, 1.0)
    assert joint > 1.01 * cramer_rao_centroid(1e4, 20, 4.5, p, 12, 1.0, joint=False)


def test_gating_and_saturation():
    span = Span(START, START + HOUR_NS // 4)
    bright = SimConfig(seed=2, scale=0.2, products=("af_windows",), catalogue={"g_max_mag": 13.0})
    gated = pa.concat_tables([c.products["af_windows"] for c in Simulator(bright).chunks(span)])
    assert gated.num_rows > 100
    # gates keep the peak below the full well down to G ≈ 7 (shortest gate: 22 lines)
    g = gated.column("g_mag").to_numpy()
    assert not gated.column("saturated").to_numpy()[g > 7.5].any()
    assert pc.min(gated.column("gate_lines")).as_py() < 4500
    raw = bright.model_copy(update={"af": AfConfig(gating=False)})
    sat = pa.concat_tables([c.products["af_windows"] for c in Simulator(raw).chunks(span)])
    flags = sat.column("saturated").to_numpy()
    assert flags.any()
    peak = np.array([max(v) for v in sat.column("samples_e").to_pylist()])
    assert np.all(peak[flags] == raw.af.full_well_e)
    assert np.all(peak[~flags] < raw.af.full_well_e)
