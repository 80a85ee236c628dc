"""The BAM fringe-fitting kernels (the per-field estimator and the per-profile Numba fit)
against the slow, readable reference of ``dpct.pipelines.bam._reference`` (nonlinear
least squares in the physical parameters, reweighted until the weights settle)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import dpct.pipelines.bam as bam
from dpct.pipelines.bam import _reference as ref
from dpct.sim import SimConfig, Simulator, Span

DAY_NS = 86_400 * 10**9
T0 = 700 * DAY_NS
QUIET = {"bam": {"jumps_per_day": 0.0}, "hk": {"thermal_events_per_day": 0.0}}
N = 120  # profiles compared (the reference takes ~10 ms each)


@pytest.fixture(scope="module")
def day() -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[bam.FringeShape, ...]]:
    cfg = SimConfig.model_validate(
        {"seed": 21, "scale": 0.02, "products": ("bam_images",), **QUIET}
    )
    chunks = Simulator(cfg).chunks(Span(T0, T0 + DAY_NS // 10))
    tel = pa.concat_tables([c.products["bam_images"] for c in chunks])
    n = len(tel.column("samples_e")[0])
    samples = tel.column("samples_e").combine_chunks().flatten().to_numpy().reshape(-1, n)
    ron, fov = tel.column("ron_e").to_numpy(), tel.column("fov").to_numpy()
    return samples, ron, fov, bam.calibrate_shapes(samples, ron, fov)


def _assert_agree(fit: bam.FringeFit, fits: list[ref.ProfileFit], sigma: float, rtol: float):
    """Flags, dof and rejections equal; phase, period, visibility, amplitude and
    background within ``sigma`` of the reference's formal errors; the phase and period
    errors and χ² to ``rtol`` relative (where no flag marks the fit as meaningless)."""
    np.testing.assert_array_equal(fit.flags, [f.flags for f in fits])
    np.testing.assert_array_equal(fit.dof, [f.dof for f in fits])
    np.testing.assert_array_equal(fit.n_rejected, [f.n_rejected for f in fits])
    ok = (fit.flags & (bam.NONFINITE | bam.LOW_SIGNAL | bam.FIT_FAILED)) == 0
    r = {
        k: np.array([getattr(f, k) for f in fits])[ok] for k in ref.ProfileFit.__dataclass_fields__
    }
    dphi = np.angle(np.exp(1j * (fit.phase_rad[ok] - r["phase_rad"])))
    assert np.all(np.abs(dphi) <= sigma * r["phase_err_rad"])
    for name, err in (
        ("period_px", "period_err_px"),
        ("visibility", "visibility_err"),
        ("amplitude_e", "amplitude_err_e"),
        ("background_e", "background_err_e"),
    ):
        assert np.all(np.abs(getattr(fit, name)[ok] - r[name]) <= sigma * r[err]), name
    np.testing.assert_allclose(fit.phase_err_rad[ok], r["phase_err_rad"], rtol=rtol)
    np.testing.assert_allclose(fit.period_err_px[ok], r["period_err_px"], rtol=rtol)
    np.testing.assert_allclose(fit.chi2[ok], r["chi2"], rtol=rtol)


def test_per_field_estimator_agrees(day) -> None:
    """The fast path (one estimator per field, weighted by the day's mean profile)
    against per-profile maximum-likelihood weights: within 0.05 σ (measured ≤ 0.02 σ;
    the difference is the weights of the mean profile, a few 10⁻⁴ off each profile's)
    and errors and χ² to 1 % (measured ≤ 0.3 %)."""
    samples, ron, fov, shapes = day
    fit = bam.fit_fringes(samples[:N], ron[:N], fov[:N], shapes)
    fits = [ref.fit_profile(samples[i], ron[i], shapes[fov[i]]) for i in range(N)]
    assert np.all(fit.flags == 0)
    _assert_agree(fit, fits, sigma=0.05, rtol=1e-2)


def test_per_profile_fit_agrees(day) -> None:
    """The per-profile Numba fit (forced on every profile by shapes without a mean
    profile): three passes and one Gauss–Newton period step leave it ≤ 0.004 σ from the
    converged reference (measured), so 0.02 σ, and errors and χ² to 1e-3."""
    samples, ron, fov, shapes = day
    bare = tuple(
        bam.FringeShape(s.period_px, s.envelope_centre_px, s.envelope_sigma_px) for s in shapes
    )
    fit = bam.fit_fringes(samples[:N], ron[:N], fov[:N], bare)
    fits = [ref.fit_profile(samples[i], ron[i], bare[fov[i]]) for i in range(N)]
    _assert_agree(fit, fits, sigma=0.02, rtol=1e-3)


def test_edge_cases_agree(day) -> None:
    """Profiles the kernel flags: NaN, a saturated sample, no fringes (a flat
    background), pure noise, a cosmic ray: the same flags, and the same fit where one
    is meaningful."""
    samples, ron, fov, shapes = day
    rng = np.random.default_rng(3)
    y = samples[:6].astype(np.float32).copy()
    y[0, 10] = np.nan
    y[1, 500] = 400_000.0
    y[2, :] = np.float32(np.median(samples[2, :50]))
    y[3, :] = np.float32(np.median(samples[3, :50])) + rng.normal(0, 10, y.shape[1])
    y[4, 480] += 5_000.0
    fit = bam.fit_fringes(y, ron[:6], fov[:6], shapes)
    fits = [ref.fit_profile(y[i], ron[i], shapes[fov[i]]) for i in range(6)]
    assert fit.flags[0] == bam.NONFINITE and fit.flags[1] & bam.SATURATED
    assert fit.flags[2] & bam.LOW_SIGNAL and fit.flags[3] & bam.LOW_SIGNAL
    assert fit.flags[4] == bam.COSMIC and fit.flags[5] == 0
    np.testing.assert_array_equal(fit.flags, [f.flags for f in fits])
    # the fits themselves where they mean something (the saturated profile: see below)
    keep = [0, 4, 5]
    sub = bam.FringeFit(*(np.asarray(v)[keep] for v in vars(fit).values()))
    _assert_agree(sub, [fits[i] for i in keep], sigma=0.05, rtol=1e-2)  # row 5: fast path


@pytest.mark.xfail(
    strict=True,
    reason="kernel: one or three samples at 4·10⁵ e⁻ distort its first (data-weighted, "
    "no-rejection) pass so much that the next pass rejects 153 or ~590 of 1000 samples as "
    "cosmic rays (three: phase 0.007 rad, 10 clean σ, off); the reference, reweighting "
    "until the rejections settle, leaves out only them. SATURATED images are not used "
    "downstream",
)
def test_saturated_run_agrees(day) -> None:
    samples, ron, fov, shapes = day
    y = samples[1:2].astype(np.float32).copy()
    y[0, 500:503] = 400_000.0
    fit = bam.fit_fringes(y, ron[1:2], fov[1:2], shapes)
    _assert_agree(fit, [ref.fit_profile(y[0], ron[1], shapes[fov[1]])], sigma=0.02, rtol=1e-3)
