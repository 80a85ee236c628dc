"""BAM numeric core against the simulator's truth: phases at the Cramér–Rao bound,
harmonics and jumps of the basic-angle variation, flags for bad profiles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

import dpct.pipelines.bam as bam
from dpct.sim import BamJump, SimConfig, Simulator, Span

pytestmark = pytest.mark.slow  # science validation: truth recovery, pulls over seeds

DAY = 700
DAY_NS = 86_400 * 10**9
T0 = DAY * DAY_NS
JUMP_NS = T0 + 7 * 3600 * 10**9
JUMP_UAS = 600.0  # > 5 per-sample σ of ΔΓ (≈ 90 µas)
QUIET = {"bam": {"jumps_per_day": 0.0}, "hk": {"thermal_events_per_day": 0.0}}


@dataclass
class Day:
    sim: Simulator
    samples: np.ndarray
    fov: np.ndarray
    ron: np.ndarray
    image_id: np.ndarray
    obmt_ns: np.ndarray
    truth: dict[str, np.ndarray]


def simulate(seed: int, scale: float, days: float = 1.0, **config: object) -> Day:
    cfg = SimConfig.model_validate(
        {"seed": seed, "scale": scale, "products": ("bam_images",), **config}
    )
    sim = Simulator(cfg)
    chunks = list(sim.chunks(Span(T0, T0 + round(days * DAY_NS))))
    tel = pa.concat_tables([c.products["bam_images"] for c in chunks])
    truth = pa.concat_tables([c.truth["bam_truth"] for c in chunks])
    n = len(tel.column("samples_e")[0])
    samples = tel.column("samples_e").combine_chunks().flatten().to_numpy().reshape(-1, n)
    return Day(
        sim,
        samples,
        tel.column("fov").to_numpy(),
        tel.column("ron_e").to_numpy(),
        tel.column("image_id").to_numpy(),
        tel.column("obmt_ns").to_numpy(),
        {name: truth.column(name).to_numpy() for name in truth.column_names},
    )


def process(day: Day, **fit_options: object) -> tuple[bam.FringeFit, bam.BavSeries]:
    shapes = bam.calibrate_shapes(day.samples, day.ron, day.fov)
    fit = bam.fit_fringes(day.samples, day.ron, day.fov, shapes, **fit_options)
    good = (fit.flags & bam.BAD_FLAGS) == 0
    series = bam.bav_series(
        day.image_id, day.obmt_ns, day.fov, fit.phase_rad, fit.phase_err_rad, fit.period_px, good
    )
    return fit, series


@pytest.fixture(scope="module")
def jump_day() -> Day:
    return simulate(21, 0.1, anomalies=[BamJump(obmt_ns=JUMP_NS, amplitude_uas=JUMP_UAS)], **QUIET)


def cramer_rao_phase_var(day: Day) -> np.ndarray:
    """The phase's Cramér–Rao variance per profile, from the truth, with background,
    amplitude, visibility, phase and period all unknown (Gaussian approximation of the
    Poisson + read-out noise: variance = expected counts + RON²)."""
    t = day.truth
    n = day.samples.shape[1]
    x = np.arange(n, dtype=np.float64)
    xc = 0.5 * (n - 1)
    out = np.empty(t["phase_rad"].size)
    for i in range(out.size):
        env = np.exp(-0.5 * ((x - t["envelope_centre_px"][i]) / t["envelope_sigma_px"][i]) ** 2)
        a_, v_, p_, f_ = t["peak_e"][i], t["visibility"][i], t["period_px"][i], t["phase_rad"][i]
        th = 2 * np.pi * (x - xc) / p_ - f_
        mu = t["background_e"][i] + a_ * env * (1 + v_ * np.cos(th))
        jac = np.stack(
            [
                np.ones(n),  # background
                env * (1 + v_ * np.cos(th)),  # amplitude
                a_ * env * np.cos(th),  # visibility
                a_ * env * v_ * np.sin(th),  # phase
                a_ * env * v_ * np.sin(th) * 2 * np.pi * (x - xc) / p_**2,  # period
            ],
            axis=1,
        )
        fisher = jac.T @ (jac / (mu + day.ron[i] ** 2)[:, None])
        out[i] = np.linalg.inv(fisher)[3, 3]
    return out


def test_phases_reach_the_cramer_rao_bound(jump_day: Day) -> None:
    fit, _ = process(jump_day)
    assert np.all(fit.flags & bam.BAD_FLAGS == 0)
    d = np.angle(np.exp(1j * (fit.phase_rad - jump_day.truth["phase_rad"])))
    sample = slice(0, 400)  # the bound varies little between profiles: 400 are plenty
    bound = np.sqrt(np.mean(cramer_rao_phase_var(_subset(jump_day, sample))))
    assert np.std(d[sample]) <= 1.1 * bound
    assert np.std(d) <= 1.1 * bound
    z = d / fit.phase_err_rad
    assert 0.9 < np.std(z) < 1.1
    # period and visibility too, against the truth
    assert np.median(np.abs(fit.period_px - jump_day.truth["period_px"])) < 1e-3
    assert np.median(np.abs(fit.visibility - jump_day.truth["visibility"])) < 2e-3
    assert 0.97 < np.mean(fit.chi2 / fit.dof) < 1.03


def _subset(day: Day, rows: slice) -> Day:
    return Day(
        day.sim,
        day.samples[rows],
        day.fov[rows],
        day.ron[rows],
        day.image_id[rows],
        day.obmt_ns[rows],
        {k: v[rows] for k, v in day.truth.items()},
    )


def test_the_injected_jump_and_the_harmonics_are_recovered(jump_day: Day) -> None:
    _, series = process(jump_day)
    omega = bam.spin_phase_rad(series.obmt_ns)
    exact = jump_day.sim.spin_phase_rad(series.obmt_ns)
    assert np.max(np.abs(np.angle(np.exp(1j * (omega - exact))))) < 1e-7  # rad
    fit = bam.detect_jumps(series, omega)
    # exactly one jump, at the first image after the true time
    first_after = int(np.searchsorted(series.obmt_ns, JUMP_NS))
    assert fit.jump_obmt_ns.tolist() == [int(series.obmt_ns[first_after])]
    assert fit.jump_uas[0] == pytest.approx(JUMP_UAS, abs=4 * fit.jump_err_uas[0])
    model = jump_day.sim.static_truth()["bav_model"].to_pydict()
    z = np.concatenate(
        [
            (fit.cos_uas - np.array(model["cos_uas"][1:9])) / fit.cos_err_uas,
            (fit.sin_uas - np.array(model["sin_uas"][1:9])) / fit.sin_err_uas,
        ]
    )
    assert (z**2).sum() < stats.chi2.isf(0.001, z.size)
    assert 0.95 < fit.chi2 / fit.dof < 1.05


def test_bad_profiles_are_flagged_and_the_rest_kept(jump_day: Day) -> None:
    day = _subset(jump_day, slice(0, 40))
    y = day.samples.astype(np.float32).copy()
    y[0, 10] = np.nan  # a gap in the telemetry
    y[1, 500:503] = 400_000.0  # saturated
    y[2, :] = np.float32(day.truth["background_e"][2])  # no fringes at all
    y[3, 480] += 5_000.0  # a cosmic ray on the fringes
    shapes = bam.calibrate_shapes(jump_day.samples, jump_day.ron, jump_day.fov)
    clean = bam.fit_fringes(day.samples, day.ron, day.fov, shapes)
    fit = bam.fit_fringes(y, day.ron, day.fov, shapes)
    assert fit.flags[0] == bam.NONFINITE and np.isnan(fit.phase_rad[0])
    assert fit.flags[1] & bam.SATURATED
    assert fit.flags[2] & bam.LOW_SIGNAL
    assert fit.flags[3] == bam.COSMIC and fit.n_rejected[3] >= 1
    assert abs(fit.phase_rad[3] - clean.phase_rad[3]) < 3 * fit.phase_err_rad[3]
    # every other profile is untouched
    assert np.all(fit.flags[4:] == 0)
    np.testing.assert_allclose(fit.phase_rad[4:], clean.phase_rad[4:], rtol=0, atol=1e-9)
    # flagged images drop out of the BAV; the rest of the day stays
    good = (fit.flags & bam.BAD_FLAGS) == 0
    series = bam.bav_series(
        day.image_id, day.obmt_ns, day.fov, fit.phase_rad, fit.phase_err_rad, fit.period_px, good
    )
    lost = {int(i) for i in day.image_id[:3]}
    assert lost.isdisjoint(series.image_id.tolist())
    assert series.bav_uas.size == len(set(day.image_id.tolist()) - lost)


def test_harmonic_pulls_over_30_seeds() -> None:
    """True amplitudes and phases recovered: coefficient pulls have std 0.9–1.1."""
    pulls = []
    for seed in range(30):
        day = simulate(100 + seed, 0.03, **QUIET)
        _, series = process(day)
        fit = bam.fit_bav(series, bam.spin_phase_rad(series.obmt_ns))
        model = day.sim.static_truth()["bav_model"].to_pydict()
        pulls.append((fit.cos_uas - np.array(model["cos_uas"][1:9])) / fit.cos_err_uas)
        pulls.append((fit.sin_uas - np.array(model["sin_uas"][1:9])) / fit.sin_err_uas)
    z = np.concatenate(pulls)
    assert 0.9 < np.std(z) < 1.1
    assert abs(np.mean(z)) < 4 / np.sqrt(z.size)


def test_no_false_jump_over_a_quiet_week() -> None:
    week = simulate(7, 0.05, days=7, **QUIET)
    _, series = process(week)
    omega = bam.spin_phase_rad(series.obmt_ns)
    for day in range(7):
        mine = (series.obmt_ns >= T0 + day * DAY_NS) & (series.obmt_ns < T0 + (day + 1) * DAY_NS)
        part = bam.BavSeries(
            series.obmt_ns[mine], series.bav_uas[mine], series.err_uas[mine], series.image_id[mine]
        )
        fit = bam.detect_jumps(part, omega[mine])
        assert fit.jump_obmt_ns.size == 0, (day, fit.jump_obmt_ns, fit.jump_uas)


def test_week_fit_with_daily_zero_points_recovers_drifting_harmonics() -> None:
    """Days with their own arbitrary zero and drift, harmonics changing linearly in
    time: the segmented fit finds the rates (pulls against the truth) and the
    coefficients at mid-span, unhurt by the offsets."""
    rng = np.random.default_rng(5)
    day_ns = 86_400 * 10**9
    t0 = 700 * day_ns
    t = np.sort(rng.integers(t0, t0 + 4 * day_ns, 20_000)).astype(np.int64)
    omega = bam.spin_phase_rad(t)
    k = np.arange(1, 5)
    c0, s0 = rng.normal(0, 300, k.size), rng.normal(0, 300, k.size)
    cr, sr = rng.normal(0, 5, k.size), rng.normal(0, 5, k.size)  # µas/day
    mid = (int(t[0]) + int(t[-1])) // 2
    tau = (t - mid) / day_ns
    truth = sum(
        (c0[i] + cr[i] * tau) * np.cos(kk * omega) + (s0[i] + sr[i] * tau) * np.sin(kk * omega)
        for i, kk in enumerate(k)
    )
    day = (t - t0) // day_ns
    offsets = rng.uniform(-5e5, 5e5, 4)[day] + rng.normal(0, 20, 4)[day] * (t - t0) / day_ns
    err = np.full(t.size, 15.0)
    series = bam.BavSeries(t, truth + offsets + rng.normal(0, 1, t.size) * err, err, t)
    starts = t0 + np.arange(4) * day_ns
    fit = bam.fit_bav(
        series, omega, harmonics=4, drift_degree=1, segments_ns=starts, harmonic_degree=1
    )
    assert fit.harmonic_ref_ns == mid
    z = np.concatenate(
        [
            (fit.cos_uas - c0) / fit.cos_err_uas,
            (fit.sin_uas - s0) / fit.sin_err_uas,
            (fit.cos_rate_uas_per_day - cr) / fit.cos_rate_err_uas_per_day,
            (fit.sin_rate_uas_per_day - sr) / fit.sin_rate_err_uas_per_day,
        ]
    )
    assert (z**2).sum() < stats.chi2.isf(0.001, z.size)
    assert 0.95 < fit.chi2 / fit.dof < 1.05
    # one polynomial through all four days cannot follow their offsets
    plain = bam.fit_bav(series, omega, harmonics=4, drift_degree=1)
    assert plain.chi2 / plain.dof > 100


def test_a_nearly_empty_day_does_not_break_the_week_fit() -> None:
    """A day with two usable images (a long gap) cannot carry its own drift polynomial:
    it joins the day before instead of making the fit singular, and no jump is placed
    at a day's first image (that step is the day's own zero point)."""
    rng = np.random.default_rng(8)
    day_ns = 86_400 * 10**9
    t0 = 700 * day_ns
    t = np.sort(
        np.concatenate(
            [rng.integers(t0, t0 + day_ns, 3000), t0 + day_ns + np.array([10, 20]) * 10**9,
             rng.integers(t0 + 2 * day_ns, t0 + 3 * day_ns, 3000)]
        )
    ).astype(np.int64)  # fmt: skip
    day = (t - t0) // day_ns
    err = np.full(t.size, 10.0)
    offsets = np.array([0.0, 0.0, 4e5])[day]  # the third day has its own zero
    series = bam.BavSeries(t, offsets + rng.normal(0, 1, t.size) * err, err, t)
    fit = bam.detect_jumps(
        series,
        bam.spin_phase_rad(t),
        harmonics=4,
        drift_degree=2,
        segments_ns=t0 + np.arange(3) * day_ns,
        harmonic_degree=1,
    )
    assert fit.jump_obmt_ns.size == 0
    assert 0.9 < fit.chi2 / fit.dof < 1.1
