"""AIM numeric core against the simulator's truth: image parameters at the Cramér–Rao
bound, an LSF calibration that recovers the true LSF within its errors, flags for bad
windows and clear errors for bad input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import dpct.pipelines.aim as aim
from dpct.sim import (
    LsfParams,
    SimConfig,
    Simulator,
    Span,
    lsf_sampled,
    lsf_sampled_derivative,
)

pytestmark = pytest.mark.slow  # science validation: truth recovery, pulls over seeds

DAY = 700
DAY_NS = 86_400 * 10**9
HOUR_NS = 3600 * 10**9
T0 = DAY * DAY_NS


@dataclass
class Day:
    sim: Simulator
    windows: pa.Table
    truth: dict[str, np.ndarray]
    qualifiers: pa.Table


def simulate(seed: int, scale: float, hours: float, start_ns: int = T0, **config: object) -> Day:
    cfg = SimConfig.model_validate(
        {"seed": seed, "scale": scale, "products": ("af_windows", "data_qualifiers"), **config}
    )
    sim = Simulator(cfg)
    chunks = list(sim.chunks(Span(start_ns, start_ns + round(hours * HOUR_NS))))
    tel = pa.concat_tables([c.products["af_windows"] for c in chunks]).combine_chunks()
    truth = pa.concat_tables([c.truth["af_truth"] for c in chunks])
    dq = pa.concat_tables([c.products["data_qualifiers"] for c in chunks])
    return Day(sim, tel, {n: truth.column(n).to_numpy() for n in truth.column_names}, dq)


def true_lsf(sim: Simulator, time_ns: int) -> aim.LsfCalibration:
    """The simulator's true LSF of every CCD, projected onto the AIM basis (to < 5·10⁻⁴ of
    the peak; the projection is part of what the tests check)."""
    model = sim.lsf_model
    return aim.LsfCalibration.from_profiles(
        lambda x, ccd, colour, t: lsf_sampled(x, model.params(ccd, colour, t)),
        range(62),
        times_obmt_ns=(time_ns,),
        time_ref_obmt_ns=time_ns,
    )


def column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy().astype(np.float64)


def cramer_rao(day: Day, rows: np.ndarray) -> np.ndarray:
    """σ of (centroid, flux, background) per window from the truth: the inverse Fisher
    matrix of the three parameters, variance = expected counts + RON² (science.md §2.4)."""
    t = day.truth
    n_samp = day.windows.column("n_samples").to_numpy()[rows]
    ron = column(day.windows, "ron_e")[rows]
    out = np.empty((rows.size, 3))
    for n in np.unique(n_samp):
        sel = np.flatnonzero(n_samp == n)
        r = rows[sel]
        p = LsfParams(
            *(t[k][r][:, None] for k in ("lsf_sigma_core_px", "lsf_sigma_halo_px",
                                         "lsf_halo_weight", "lsf_asym_px"))
        )  # fmt: skip
        x = np.arange(n)[None, :] - t["centroid_px"][r][:, None]
        f = t["flux_e"][r][:, None]
        prof = lsf_sampled(x, p)
        var = f * prof + t["background_e"][r][:, None] + ron[sel][:, None] ** 2
        jac = np.stack([-f * lsf_sampled_derivative(x, p), prof, np.ones_like(prof)], -1)
        fisher = np.einsum("wki,wkj->wij", jac / var[..., None], jac)
        out[sel] = np.sqrt(np.diagonal(np.linalg.inv(fisher), axis1=1, axis2=2))
    return out


@pytest.fixture(scope="module")
def busy_hour() -> Day:
    """≈ 1.7·10⁵ windows: an hour of a fifth of the mission's star density."""
    return simulate(11, 0.2, 1.0)


def test_image_parameters_reach_the_cramer_rao_bound(busy_hour: Day) -> None:
    day = busy_hour
    fit = aim.fit_image_parameters(day.windows, true_lsf(day.sim, T0 + HOUR_NS // 2))
    assert fit.num_rows == day.windows.num_rows
    assert fit.column("window_id").to_pylist() == day.windows.column("window_id").to_pylist()
    flags = fit.column("flags").to_numpy()
    clean = flags == 0
    assert clean.mean() > 0.95
    est = np.stack([column(fit, k) for k in ("centroid_px", "flux_e", "background_e")], 1)
    err = np.stack(
        [column(fit, k) for k in ("centroid_err_px", "flux_err_e", "background_err_e")], 1
    )
    true = np.stack([day.truth[k] for k in ("centroid_px", "flux_e", "background_e")], 1)
    g = column(day.windows, "g_mag")
    rows = np.flatnonzero(clean)
    bound = cramer_rao(day, rows)
    d = (est - true)[rows]
    snr = true[rows, 1] / bound[:, 1]
    checked = 0
    for lo in np.arange(8.0, 21.0, 1.0):
        b = (g[rows] >= lo) & (g[rows] < lo + 1)
        if b.sum() < 300 or np.median(snr[b]) < 10:
            continue
        checked += 1
        rms_bound = np.sqrt(np.mean(bound[b] ** 2, axis=0))
        scatter = d[b].std(axis=0)
        assert np.all(scatter <= 1.1 * rms_bound), (lo, scatter / rms_bound)
        assert abs(d[b, 0].mean()) < 0.01, (lo, d[b, 0].mean())  # px
        # flux and background: no bias beyond a fifth of their bound (measured: ≤ 0.05
        # for G ≥ 14; ≈ 0.15 of the background's for G 12–13, where the basis's
        # truncation of the halo wings starts to show)
        assert np.all(np.abs(d[b, 1:].mean(axis=0)) < 0.2 * rms_bound[1:]), lo
    assert checked >= 4
    z = d / err[rows]
    assert np.all((z.std(axis=0) > 0.9) & (z.std(axis=0) < 1.1)), z.std(axis=0)
    chi2 = column(fit, "chi2")[rows].sum() / column(fit, "dof")[rows].sum()
    assert 0.97 < chi2 < 1.03


def test_calibrated_lsf_pulls_over_30_seeds() -> None:
    """Pull = (calibrated − true sampled profile) / formal error, at 13 offsets (|x| ≤ 3
    px, the 12-sample window's core) and three colours per CCD, for 30 independent
    instruments and skies. The true profile is the simulator's exact core + halo, not
    its projection on the basis, so the basis truncation error counts against the pulls
    (it is ≲ 5·10⁻⁴ of the peak, well below the errors of a half-hour calibration)."""
    pulls = []
    x = np.linspace(-3.0, 3.0, 13)
    for seed in range(30):
        day = simulate(200 + seed, 0.05, 0.5)
        cal = aim.calibrate_lsf(day.windows, aim.LsfCalibration.default())
        assert cal.covariance is not None
        t = cal.time_ref_obmt_ns
        for ccd in np.flatnonzero(cal.n_windows > 0):
            for colour in (0.7, 1.0, 1.4):
                truth = lsf_sampled(x, day.sim.lsf_model.params(int(ccd), colour, t))
                fitted = cal.profile(x, int(ccd), colour, t)
                pulls.append((fitted - truth) / cal.profile_error(x, int(ccd), colour, t))
    z = np.concatenate(pulls)
    assert z.size > 30 * 50 * 3 * 13
    assert 0.9 < np.std(z) < 1.1, np.std(z)
    assert abs(np.mean(z)) < 0.1


@pytest.fixture(scope="module")
def calibrated() -> tuple[Day, aim.LsfCalibration]:
    """Two hours of one day at a fifth of the density, calibrated from the default LSF."""
    day = simulate(5, 0.2, 2.0)
    fit = aim.fit_image_parameters(day.windows, aim.LsfCalibration.default(), day.qualifiers)
    cal = aim.calibrate_lsf(
        day.windows, aim.LsfCalibration.default(), image_params=fit, intervals=day.qualifiers,
        solution_id=42,
    )  # fmt: skip
    return day, cal


def test_the_next_days_fit_uses_the_calibration(calibrated: tuple[Day, aim.LsfCalibration]) -> None:
    """Next day, same instrument: the calibrated LSF removes the centroid bias of the
    default one. Bias is measured without noise: each window's expected counts (from
    the truth) are fitted, so fit − truth is the systematic error alone."""
    _, cal = calibrated
    day = simulate(5, 0.2, 0.5, start_ns=T0 + DAY_NS)
    noisy = aim.fit_image_parameters(day.windows, cal, day.qualifiers)
    flags = noisy.column("flags").to_numpy()
    clean = np.flatnonzero(flags == 0)
    chi2 = column(noisy, "chi2")[clean].sum() / column(noisy, "dof")[clean].sum()
    assert abs(chi2 - 1) < 0.05, chi2
    assert np.all(noisy.column("lsf_solution_id").to_numpy() == 42)
    # noise-free replicas of the clean windows with S/N ≥ 20
    snr = column(noisy, "flux_e") / column(noisy, "flux_err_e")
    rows = clean[snr[clean] >= 20]
    ideal = expected_counts(day, rows)
    c_true = day.truth["centroid_px"][rows]
    phase = np.mod(c_true, 1.0)
    bins = np.minimum((phase * 10).astype(int), 9)
    rms = {}
    for name, lsf in (("default", aim.LsfCalibration.default()), ("calibrated", cal)):
        fit = aim.fit_image_parameters(ideal, lsf)
        err = column(fit, "centroid_px") - c_true
        per_bin = np.array([err[bins == b].mean() for b in range(10)])
        rms[name] = (np.sqrt(np.mean(per_bin**2)), np.sqrt(np.mean(err**2)))
    assert rms["calibrated"][0] * 2 <= rms["default"][0], rms
    assert rms["calibrated"][1] * 2 <= rms["default"][1], rms


def expected_counts(day: Day, rows: np.ndarray) -> pa.Table:
    """The windows ``rows`` with their samples replaced by the truth's expected counts."""
    t = day.truth
    tel = day.windows.take(pa.array(rows))
    n = tel.column("n_samples").to_numpy().astype(np.int64)
    offsets = np.r_[0, np.cumsum(n)]
    k = np.arange(offsets[-1]) - np.repeat(offsets[:-1], n)
    w = np.repeat(rows, n)
    p = LsfParams(
        t["lsf_sigma_core_px"][w], t["lsf_sigma_halo_px"][w], t["lsf_halo_weight"][w],
        t["lsf_asym_px"][w],
    )  # fmt: skip
    lam = t["flux_e"][w] * lsf_sampled(k - t["centroid_px"][w], p) + t["background_e"][w]
    samples = pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32)), pa.array(lam, pa.float32())
    )
    return tel.set_column(tel.schema.get_field_index("samples_e"), "samples_e", samples)


def test_calibration_is_a_versionable_table(calibrated: tuple[Day, aim.LsfCalibration]) -> None:
    _, cal = calibrated
    table = cal.to_table()
    assert table.schema.equals(aim.LSF_CALIBRATION_SCHEMA)
    back = aim.LsfCalibration.from_table(
        table.take(np.random.default_rng(0).permutation(table.num_rows))
    )
    np.testing.assert_array_equal(back.coefficients, cal.coefficients)
    np.testing.assert_array_equal(back.covariance, cal.covariance)
    np.testing.assert_array_equal(back.n_windows, cal.n_windows)
    assert back.solution_id == 42 and back.basis == cal.basis
    assert back.time_ref_obmt_ns == cal.time_ref_obmt_ns
    assert cal.covariance is not None
    assert np.all(np.linalg.eigvalsh(cal.covariance[cal.n_windows > 0]) > 0)
    assert np.all(np.abs(cal.chi2_dof[cal.n_windows > 0] - 1) < 0.1)
    with pytest.raises(ValueError, match="rows"):
        aim.LsfCalibration.from_table(table.slice(1))
    with pytest.raises(ValueError, match="empty"):
        aim.LsfCalibration.from_table(table.slice(0, 0))
    default = aim.LsfCalibration.from_table(aim.LsfCalibration.default().to_table())
    assert default.covariance is None and default.solution_id == 0


def test_bad_windows_are_flagged_and_the_rest_kept(busy_hour: Day) -> None:
    day = busy_hour
    lsf = true_lsf(day.sim, T0 + HOUR_NS // 2)
    clean_fit = aim.fit_image_parameters(day.windows, lsf)
    ok = np.flatnonzero(
        (clean_fit.column("flags").to_numpy() == 0)
        & (day.windows.column("n_samples").to_numpy() == 12)
    )[:50]
    tel = day.windows.take(pa.array(ok))
    n = 12
    y = tel.column("samples_e").combine_chunks().flatten().to_numpy().reshape(-1, n).copy()
    y[0, 5] = np.nan  # a telemetry gap
    y[1, 4:7] = 5.0e5  # saturated (clipped at the full well)
    y[2, 9] += 8_000.0  # a cosmic ray off the peak
    y[3, :] = np.float32(day.truth["background_e"][ok[3]])  # no star at all
    sat = tel.column("saturated").to_numpy(zero_copy_only=False).copy()
    sat[1] = True
    trunc = tel.column("truncated").to_numpy(zero_copy_only=False).copy()
    trunc[4] = True  # as told by the on-board window
    bad_t = int(tel.column("obmt_ns")[5].as_py())
    tel = tel.set_column(
        tel.schema.get_field_index("samples_e"),
        "samples_e",
        pa.ListArray.from_arrays(
            pa.array(np.arange(0, y.size + 1, n, dtype=np.int32)), pa.array(y.ravel())
        ),
    )
    tel = tel.set_column(tel.schema.get_field_index("saturated"), "saturated", pa.array(sat))
    tel = tel.set_column(tel.schema.get_field_index("truncated"), "truncated", pa.array(trunc))
    fit = aim.fit_image_parameters(tel, lsf, np.array([[bad_t, bad_t + 1]]))
    flags = fit.column("flags").to_numpy()
    ref = clean_fit.take(pa.array(ok))
    assert flags[0] == aim.NONFINITE and np.isnan(fit.column("centroid_px")[0].as_py())
    assert flags[1] & aim.SATURATED
    assert flags[2] == aim.COSMIC and fit.column("n_rejected")[2].as_py() == 1
    c2, r2, e2 = (x[2].as_py() for x in (fit.column("centroid_px"), ref.column("centroid_px"),
                                         fit.column("centroid_err_px")))  # fmt: skip
    assert abs(c2 - r2) < 3 * e2
    assert flags[3] & aim.LOW_SIGNAL
    assert flags[4] == aim.TRUNCATED
    assert flags[5] == aim.BAD_INTERVAL
    # every other window is untouched
    assert np.all(flags[6:] == 0)
    np.testing.assert_array_equal(column(fit, "centroid_px")[6:], column(ref, "centroid_px")[6:])
    assert np.all(flags[[0, 1, 3, 5]] & aim.BAD_FLAGS)


def test_simulated_anomalies_are_flagged() -> None:
    """The simulator's own cosmic rays, truncated windows and bad intervals, fitted with
    a good LSF (with the default one, 2 % of the windows, nearly all G < 18, also get a
    COSMIC flag: their peaks are off the wrong LSF by more than 6 σ + 2 %)."""
    day = simulate(3, 0.05, 2.0, quality={"bad_intervals_per_day": 100.0})
    assert day.qualifiers.num_rows > 0 and day.truth["corrupted"].any()
    fit = aim.fit_image_parameters(day.windows, true_lsf(day.sim, T0 + HOUR_NS), day.qualifiers)
    flags = fit.column("flags").to_numpy()
    t = day.truth
    np.testing.assert_array_equal((flags & aim.BAD_INTERVAL) != 0, t["corrupted"])
    np.testing.assert_array_equal(
        (flags & aim.TRUNCATED) != 0, day.windows.column("truncated").to_numpy()
    )
    # a hit above 20 σ of its sample's noise is found; few false alarms elsewhere
    ok = ~t["corrupted"]
    hit = (t["cosmic_ray_sample"] >= 0) & ok
    noise = np.sqrt(t["flux_e"] * 0.42 + t["background_e"] + column(day.windows, "ron_e") ** 2)
    strong = hit & (t["cosmic_ray_e"] > 20 * noise)
    assert strong.sum() > 20
    assert np.mean((flags[strong] & aim.COSMIC) != 0) > 0.95
    assert np.mean((flags[ok & ~hit] & aim.COSMIC) != 0) < 0.001
    # the rest of the day is kept: centroids of unflagged windows are sound
    good = (flags & (aim.BAD_FLAGS | aim.COSMIC)) == 0
    assert good.mean() > 0.9
    d = column(fit, "centroid_px")[good] - t["centroid_px"][good]
    assert np.median(np.abs(d / column(fit, "centroid_err_px")[good])) < 1.0


def test_bad_input_is_a_clear_error(busy_hour: Day) -> None:
    tel = busy_hour.windows.slice(0, 20)
    lsf = aim.LsfCalibration.default()
    with pytest.raises(ValueError, match="empty"):
        aim.fit_image_parameters(tel.slice(0, 0), lsf)
    wrong = pc.add(tel.column("n_samples"), pa.scalar(1, pa.int16()))
    bad = tel.set_column(tel.schema.get_field_index("n_samples"), "n_samples", wrong)
    with pytest.raises(ValueError, match="samples but n_samples"):
        aim.fit_image_parameters(bad, lsf)
    with pytest.raises(ValueError, match="no LSF calibration"):
        aim.fit_image_parameters(tel, None)
    with pytest.raises(ValueError, match="no coefficients for CCD"):
        aim.fit_image_parameters(tel, aim.LsfCalibration.default(ccd_index=[99]))
    with pytest.raises(ValueError, match="lacks column"):
        aim.fit_image_parameters(tel.drop_columns(["ron_e"]), lsf)
    with pytest.raises(ValueError, match="no window qualifies"):
        aim.calibrate_lsf(tel, lsf, min_snr=1e9)


def test_precision_per_magnitude_bin_at_full_density() -> None:
    """The must-show at its stated size: every magnitude bin with ≥ 5,000 windows and
    S/N ≥ 10 at the Cramér–Rao bound, from 4 h of the full mission density (≈ 2.5·10⁶
    windows, true LSF; 20 s, 3.8 GB). Prints the table for the docs (`pytest -s`)."""
    day = simulate(5, 1.0, 4.0)
    fit = aim.fit_image_parameters(day.windows, true_lsf(day.sim, T0 + 2 * HOUR_NS))
    clean = fit.column("flags").to_numpy() == 0
    rows = np.flatnonzero(clean)
    names = ("centroid_px", "flux_e", "background_e")
    est = np.stack([column(fit, k)[rows] for k in names], 1)
    errors = ("centroid_err_px", "flux_err_e", "background_err_e")
    err = np.stack([column(fit, k)[rows] for k in errors], 1)
    true = np.stack([day.truth[k][rows] for k in names], 1)
    bound = cramer_rao(day, rows)
    g = column(day.windows, "g_mag")[rows]
    d = est - true
    checked = 0
    print("\nG  windows  S/N  σc/CR σF/CR σB/CR  bias_c(px)  biasF/CR biasB/CR  z-std(c,F,B)")
    for lo in np.arange(8.0, 21.0, 1.0):
        b = (g >= lo) & (g < lo + 1)
        if not b.any():
            continue
        snr = float(np.median(true[b, 1] / bound[b, 1]))
        rms = np.sqrt(np.mean(bound[b] ** 2, axis=0))
        ratio = d[b].std(axis=0) / rms
        bias = d[b].mean(axis=0)
        z = (d[b] / err[b]).std(axis=0)
        print(f"{lo:4.0f} {b.sum():7d} {snr:6.0f}  {ratio[0]:.2f} {ratio[1]:.2f} {ratio[2]:.2f}"
              f"  {bias[0]:+.1e}  {bias[1] / rms[1]:+.3f}  {bias[2] / rms[2]:+.3f}  "
              f"{z[0]:.2f} {z[1]:.2f} {z[2]:.2f}")  # fmt: skip
        if b.sum() < 5000 or snr < 10:
            continue
        checked += 1
        assert np.all(ratio <= 1.1), (lo, ratio)
        assert abs(bias[0]) < 0.01, (lo, bias[0])
        assert np.all(np.abs(bias[1:]) < 0.2 * rms[1:]), (lo, bias / rms)
        assert np.all((z > 0.9) & (z < 1.1)), (lo, z)
    assert checked >= 5
