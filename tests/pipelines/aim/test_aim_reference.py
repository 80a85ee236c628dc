"""The AIM Numba kernels against the slow, readable references of
``dpct.pipelines.aim._reference`` (quadrature for the LSF, a root of the score equations
for the image parameters, dense joint normal equations for the calibration step)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

import dpct.pipelines.aim as aim
from dpct.pipelines.aim import _reference as ref
from dpct.pipelines.aim._lsf_basis import DAY_NS, window_coefficients
from dpct.pipelines.aim._lsf_calibration import _normal_equations
from dpct.sim import SimConfig, Simulator, Span, lsf_sampled

T0 = 700 * DAY_NS
HOUR_NS = 3600 * 10**9
FULL_WELL = 5.0e5


@dataclass
class Windows:
    """Windows as the kernels take them (flat samples + offsets) and their LSF."""

    table: pa.Table
    values: np.ndarray
    offsets: np.ndarray
    lsf: aim.LsfCalibration

    def samples(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]].astype(np.float64)

    def col(self, name: str) -> np.ndarray:
        return self.table.column(name).to_numpy()


@pytest.fixture(scope="module")
def windows() -> Windows:
    """≈ 300 simulated windows on six CCDs (faint to saturated stars, truncated
    windows, cosmic rays) with the simulator's true LSF projected on the basis."""
    cfg = SimConfig.model_validate({"seed": 11, "scale": 0.01, "products": ("af_windows",)})
    sim = Simulator(cfg)
    chunks = sim.chunks(Span(T0, T0 + HOUR_NS // 4))
    table = pa.concat_tables([c.products["af_windows"] for c in chunks]).combine_chunks()
    ccd = table.column("ccd_index").to_numpy()
    ccds = np.unique(ccd)[:6]
    table = table.filter(pa.array(np.isin(ccd, ccds)))
    lsf = aim.LsfCalibration.from_profiles(
        lambda x, c, colour, t: lsf_sampled(x, sim.lsf_model.params(c, colour, t)),
        ccds,
        times_obmt_ns=(T0,),
        time_ref_obmt_ns=T0,
    )
    samples = table.column("samples_e").combine_chunks()
    return Windows(
        table,
        samples.flatten().to_numpy(),
        samples.offsets.to_numpy().astype(np.int64),
        lsf,
    )


# ---------------------------------------------------------------------------- the LSF ---
@pytest.mark.parametrize("basis", [aim.LsfBasis(), aim.LsfBasis(0.7, 2.6, 11, 4)])
def test_sampled_basis_matches_quadrature(basis: aim.LsfBasis) -> None:
    """Closed-form pixel integrals (Hermite recurrences, erfc) against Gauss–Legendre
    quadrature of SciPy's Hermite functions. Both are exact to rounding (the quadrature
    to ~1e-15 of the peak), so 1e-12 absolute (the basis values are ≤ 0.5)."""
    x = np.linspace(-9.0, 9.0, 181)
    np.testing.assert_allclose(aim.sampled_basis(x, basis), ref.sampled_basis(x, basis), atol=1e-12)


def test_window_profile_matches_the_basis_sum() -> None:
    """The per-window coefficients (NumPy method and the Numba kernel the fit uses) and
    the Horner-form profile and derivative against Σ a_j P_j by quadrature and
    L(x ± ½): deterministic formulas, 1e-12 absolute."""
    rng = np.random.default_rng(3)
    cal = aim.LsfCalibration.default([3, 17], colour_degree=2, time_degree=1)
    coef = cal.coefficients + rng.normal(0, 0.02, cal.coefficients.shape)
    cal = aim.LsfCalibration(
        cal.ccd_index, coef, cal.colour_power, cal.time_power, 1.0, T0, basis=cal.basis
    )
    x = np.linspace(-7.0, 7.0, 57)
    for ccd, colour, t in ((3, 0.2, T0 + DAY_NS // 3), (17, 2.7, T0 - 2 * DAY_NS)):
        a = ref.window_coefficients(cal, ccd, colour, t)
        np.testing.assert_allclose(cal.window_coefficients(ccd, colour, t)[0], a, atol=1e-12)
        numba_a = np.empty(cal.basis.size)
        row = int(cal.rows_of(np.array([ccd]))[0])
        window_coefficients(
            cal.coefficients, row, colour - cal.colour_ref_mag,
            (t - cal.time_ref_obmt_ns) / DAY_NS, cal.colour_power, cal.time_power, numba_a,
        )  # fmt: skip
        np.testing.assert_allclose(numba_a, a, atol=1e-12)
        p, dp = cal.profile_and_derivative(x, ccd, colour, t)
        p_ref, dp_ref = ref.sampled_profile(x, a, cal.basis)
        np.testing.assert_allclose(p, p_ref, atol=1e-12)
        np.testing.assert_allclose(dp, dp_ref, atol=1e-12)


# --------------------------------------------------------------- image parameters ---
def _kernel(w: Windows, values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple:
    return aim.fit_arrays(
        values, offsets, w.col("ccd_index")[rows], w.col("bp_rp_mag")[rows],
        w.col("obmt_ns")[rows], w.col("ron_e")[rows], w.lsf, full_well_e=FULL_WELL,
    )  # fmt: skip


def _reference(w: Windows, y: np.ndarray, row: int) -> ref.WindowFit:
    a = ref.window_coefficients(
        w.lsf, int(w.col("ccd_index")[row]), float(w.col("bp_rp_mag")[row]),
        int(w.col("obmt_ns")[row]),
    )  # fmt: skip
    return ref.fit_window(
        y, float(w.col("ron_e")[row]), lambda x: ref.sampled_profile(x, a, w.lsf.basis),
        full_well_e=FULL_WELL,
    )  # fmt: skip


def _assert_agree(out: np.ndarray, iout: np.ndarray, fits: list[ref.WindowFit]) -> None:
    """Flags, sample counts and rejections equal; where a star was fitted (not
    LOW_SIGNAL: without a star the score has several roots):

    - c, F, B within 0.01 of their formal error: the kernel stops once every step is
      below 0.01 σ (``tol``) and applies that step, so it sits closer than that to the
      root (measured: ≤ 0.001 σ);
    - formal errors and χ² to 1e-3 relative: the kernel evaluates them one (sub-0.01 σ)
      step before its final estimate, the reference at the root (measured: ≤ 4e-4).
    """
    flags = np.array([f.flags for f in fits])
    np.testing.assert_array_equal(iout[:, 3], flags)
    np.testing.assert_array_equal(iout[:, 0], [f.dof for f in fits])
    np.testing.assert_array_equal(iout[:, 2], [f.n_rejected for f in fits])
    got = np.isfinite(out[:, 0])
    np.testing.assert_array_equal(got, [np.isfinite(f.centroid_px) for f in fits])
    got &= (flags & aim.LOW_SIGNAL) == 0  # no star detected: no unique centroid to agree on
    r = np.array(
        [[f.centroid_px, f.centroid_err_px, f.flux_e, f.flux_err_e, f.background_e,
          f.background_err_e, f.chi2] for f in fits]
    )[got]  # fmt: skip
    k = out[got]
    for v, e in ((0, 1), (2, 3), (4, 5)):
        assert np.all(np.abs(k[:, v] - r[:, v]) <= 0.01 * r[:, e]), v
        np.testing.assert_allclose(k[:, e], r[:, e], rtol=1e-3)
    np.testing.assert_allclose(k[:, 6], r[:, 6], rtol=1e-3)


def test_image_parameters_agree_on_simulated_windows(windows: Windows) -> None:
    w = windows
    rows = np.arange(w.table.num_rows)
    out, iout = _kernel(w, w.values, w.offsets, rows)
    fits = [_reference(w, w.samples(i), i) for i in rows]
    assert rows.size > 250
    # the sample covers the flags the fit can set on real data, and mostly clean windows
    assert np.mean(iout[:, 3] == 0) > 0.9 and np.any(iout[:, 3] & aim.COSMIC)
    _assert_agree(out, iout, fits)


def test_edge_cases_agree(windows: Windows) -> None:
    """Windows the kernel flags, made from a clean window: the same flags, and
    the same fit wherever one is made."""
    w = windows
    out, iout = _kernel(w, w.values, w.offsets, np.arange(w.table.num_rows))
    n = np.diff(w.offsets)
    clean = np.flatnonzero((iout[:, 3] == 0) & (n == 12) & (np.abs(out[:, 0] - 5.5) < 1.5))
    base = int(clean[np.argmax(out[clean, 2])])  # the brightest well-centred faint window
    y = w.samples(base)
    bkg = float(out[base, 4])
    peak = int(np.argmax(y))
    rng = np.random.default_rng(7)
    cases = {
        "nan": np.where(np.arange(12) == 5, np.nan, y),
        "saturated": np.where(np.arange(12) == peak, FULL_WELL, y),
        "mostly saturated": np.where(np.arange(12) < 9, FULL_WELL, y),
        "three samples": y[peak - 1 : peak + 2],
        "no star": bkg + rng.normal(0, np.sqrt(bkg + 20.0), 12),
        "cosmic ray": y + np.where(np.arange(12) == (peak + 4) % 12, 8_000.0, 0.0),
        "two cosmic rays": y + np.where(np.isin(np.arange(12), [0, 11]), 6_000.0, 0.0),
    }
    ys = list(cases.values())
    offsets = np.r_[0, np.cumsum([len(v) for v in ys])].astype(np.int64)
    rows = np.full(len(ys), base)
    out, iout = _kernel(w, np.concatenate(ys), offsets, rows)
    fits = [_reference(w, v, base) for v in ys]
    expected = {
        "nan": aim.NONFINITE,
        "saturated": aim.SATURATED,
        "mostly saturated": aim.SATURATED | aim.NON_CONVERGED,
        "three samples": aim.NON_CONVERGED,
        "no star": aim.LOW_SIGNAL,
        "cosmic ray": aim.COSMIC,
        "two cosmic rays": aim.COSMIC,
    }
    for (name, bit), flags in zip(expected.items(), iout[:, 3], strict=True):
        assert flags & bit, (name, flags)
    _assert_agree(out, iout, fits)


# ----------------------------------------------------------------- LSF calibration ---
def test_calibration_normal_equations_match_the_joint_system(windows: Windows) -> None:
    """Per-window Schur complements summed (kernel) against the inverse of the C block
    of the dense joint covariance of (C, every window's c, F, B). The two are equal in
    exact arithmetic; the joint matrix's condition number (~1e8) limits the reference
    to ~1e-8 relative, so the matrix is compared to 1e-7 of its largest entry and the
    step and the errors to 1e-6 (of the errors, relative)."""
    w = windows
    ccd = w.col("ccd_index")
    out, iout = _kernel(w, w.values, w.offsets, np.arange(w.table.num_rows))
    cal = w.lsf
    one = int(cal.ccd_index[0])
    rows = np.flatnonzero((ccd == one) & (iout[:, 3] == 0))
    assert rows.size >= 30
    npar = (cal.basis.size - 1) * cal.n_terms
    n_ccd = cal.ccd_index.size
    big_n, rhs = np.zeros((n_ccd, npar, npar)), np.zeros((n_ccd, npar))
    chi2, nsamp = np.zeros(n_ccd), np.zeros(n_ccd, np.int64)
    g = int(cal.rows_of(np.array([one]))[0])
    starts = np.zeros(n_ccd + 1, np.int64)
    starts[g + 1 :] = rows.size
    theta = np.ascontiguousarray(out[:, [0, 2, 4]])
    _normal_equations(
        w.values.astype(np.float64), w.offsets, rows.astype(np.int64), starts,
        cal.rows_of(ccd), w.col("bp_rp_mag").astype(np.float64) - cal.colour_ref_mag,
        (w.col("obmt_ns") - cal.time_ref_obmt_ns) / DAY_NS,
        w.col("ron_e").astype(np.float64), theta, cal.coefficients, cal.colour_power,
        cal.time_power, cal.basis.params(), big_n, rhs, chi2, nsamp,
    )  # fmt: skip
    reduced, reduced_rhs = ref.calibration_step(
        [w.samples(i) for i in rows], w.col("ron_e")[rows],
        w.col("bp_rp_mag")[rows].astype(np.float64), w.col("obmt_ns")[rows], theta[rows],
        cal, one,
    )  # fmt: skip
    kn = big_n[g]
    assert np.max(np.abs(kn - reduced)) <= 1e-7 * np.max(np.abs(kn))
    cov = np.linalg.inv(kn)
    sigma = np.sqrt(np.diag(cov))
    step = np.linalg.solve(kn, rhs[g])
    assert np.all(np.abs(step - np.linalg.solve(reduced, reduced_rhs)) <= 1e-6 * sigma)
    np.testing.assert_allclose(np.sqrt(np.diag(np.linalg.inv(reduced))), sigma, rtol=1e-6)
    assert nsamp[g] == np.diff(w.offsets)[rows].sum()


@pytest.mark.xfail(
    strict=True,
    reason="kernel: with the three peak samples saturated, its poor start makes the fit "
    "run > 3 iterations and the 'no convergence after 3 iterations' rejection removes a "
    "sound wing sample (COSMIC, centroid error 2.5× larger); the reference, which "
    "rejects only from a converged model as docs/aim.md states, keeps it",
)
def test_saturated_peak_agrees(windows: Windows) -> None:
    w = windows
    out, iout = _kernel(w, w.values, w.offsets, np.arange(w.table.num_rows))
    n = np.diff(w.offsets)
    clean = np.flatnonzero((iout[:, 3] == 0) & (n == 12) & (np.abs(out[:, 0] - 5.5) < 1.5))
    base = int(clean[np.argmax(out[clean, 2])])
    y = w.samples(base)
    y = np.where(np.abs(np.arange(12) - int(np.argmax(y))) <= 1, FULL_WELL, y)
    out, iout = _kernel(w, y, np.array([0, 12]), np.array([base]))
    _assert_agree(out, iout, [_reference(w, y, base)])
