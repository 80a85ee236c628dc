"""Slow, readable reference for the BAM fringe-fitting kernels (tests only, never production).

It fits the model of ``docs/bam.md`` as stated, one profile at a time:

    I(x) = B + A E(x) [1 + V cos(2π(x − x_c)/P − φ)],

E the field's Gaussian envelope (fixed by the shape calibration), in the physical
parameters (B, A, V, φ, P) by SciPy's nonlinear least squares, weighted by the noise
model (variance = expected counts + RON²): first by the data, then by the fitted model
until the weights stop changing, samples more than ``reject_sigma`` σ off the model left
out. The formal errors are those of the physical parameters themselves (the inverse of
JᵀWJ at the solution). The kernels instead solve a linear problem in
(B, A, AV cos φ, AV sin φ) with one Gauss–Newton column for the period and propagate
the covariance of (a, b) to φ; agreement between the two is evidence that both fit the
model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from dpct.pipelines.bam._fringe import (
    COSMIC,
    FIT_FAILED,
    LOW_SIGNAL,
    NONFINITE,
    SATURATED,
    FringeShape,
)


@dataclass(frozen=True)
class ProfileFit:
    """One profile's fringe parameters with formal errors (phase in rad, the rest in e⁻
    or px)."""

    phase_rad: float
    phase_err_rad: float
    period_px: float
    period_err_px: float
    visibility: float
    visibility_err: float
    amplitude_e: float
    amplitude_err_e: float
    background_e: float
    background_err_e: float
    chi2: float
    dof: int
    n_rejected: int
    flags: int


def _failed(flags: int) -> ProfileFit:
    nan = float("nan")
    return ProfileFit(nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, 0, 0, flags)


def fringe_model(
    p: NDArray[np.float64], x: NDArray[np.float64], env: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Expected counts of the profile and their Jacobian for p = (B, A, V, φ, P)."""
    bkg, amp, vis, phi, period = p
    xc = 0.5 * (x.size - 1)
    arg = 2 * np.pi * (x - xc) / period - phi
    cos, sin = np.cos(arg), np.sin(arg)
    mu = bkg + amp * env * (1 + vis * cos)
    jac = np.stack(
        [
            np.ones_like(x),  # ∂/∂B
            env * (1 + vis * cos),  # ∂/∂A
            amp * env * cos,  # ∂/∂V
            amp * env * vis * sin,  # ∂/∂φ
            amp * env * vis * sin * 2 * np.pi * (x - xc) / period**2,  # ∂/∂P
        ],
        axis=1,
    )
    return mu, jac


def fit_profile(
    y: NDArray[np.floating],
    ron_e: float,
    shape: FringeShape,
    *,
    full_well_e: float = 350_000.0,
    reject_sigma: float = 7.0,
    min_snr: float = 5.0,
    max_rounds: int = 10,
) -> ProfileFit:
    """Fit one profile with its field's ``shape`` (envelope and starting period)."""
    y = np.asarray(y, dtype=np.float64)
    if not np.all(np.isfinite(y)):
        return _failed(NONFINITE)
    flags = SATURATED if y.max() >= full_well_e else 0
    n = y.size
    x = np.arange(n, dtype=np.float64)
    env = shape.envelope(n)
    r2 = float(ron_e) ** 2
    # start: the model is linear in (B, A, AV cos φ, AV sin φ) at the calibrated period
    th = 2 * np.pi * (x - 0.5 * (n - 1)) / shape.period_px
    lin = np.stack([np.ones(n), env, env * np.cos(th), env * np.sin(th)], axis=1)
    b0, a0, c0, s0 = np.linalg.lstsq(lin, y, rcond=None)[0]
    vis0 = math.hypot(c0, s0) / a0 if a0 > 0 else 0.0  # no envelope: no fringes either
    p = np.array([b0, a0, vis0, math.atan2(s0, c0), shape.period_px])
    var = np.maximum(y, 1.0) + r2  # first weights: the data
    use = np.ones(n, dtype=bool)
    for _ in range(max_rounds):

        def resid(q: NDArray[np.float64], use: NDArray[np.bool_], var: NDArray[np.float64]):
            return ((y - fringe_model(q, x, env)[0]) / np.sqrt(var))[use]

        def jac(q: NDArray[np.float64], use: NDArray[np.bool_], var: NDArray[np.float64]):
            return -(fringe_model(q, x, env)[1] / np.sqrt(var)[:, None])[use]

        sol = least_squares(resid, p, jac=jac, args=(use, var), xtol=1e-12, ftol=1e-12)
        if not np.all(np.isfinite(sol.x)):
            return _failed(flags | FIT_FAILED)
        p = sol.x
        mu = fringe_model(p, x, env)[0]
        new_var = np.maximum(mu, 1e-3) + r2
        new_use = use & (np.abs(y - mu) / np.sqrt(new_var) <= reject_sigma)
        settled = np.array_equal(new_use, use) and np.allclose(new_var, var, rtol=1e-9)
        var, use = new_var, new_use
        if settled:
            break
    mu, jac_p = fringe_model(p, x, env)
    normal = jac_p[use].T @ (jac_p[use] / var[use, None])
    bkg, amp, vis, phi, period = p
    try:
        cov = np.linalg.inv(normal)
    except np.linalg.LinAlgError:
        # without fringes (A·V = 0) phase and period are undefined: in these parameters
        # that is a singular matrix, in the kernels' (a, b) a zero fringe amplitude
        return _failed(flags | (LOW_SIGNAL if amp * vis == 0 else FIT_FAILED))
    if vis < 0:  # the same fringes with the phase half a turn on
        vis, phi = -vis, phi + math.pi
    phi = math.atan2(math.sin(phi), math.cos(phi))
    # the fringes' size A·V and its error, for the signal test
    fringe = amp * vis
    g = np.array([vis, amp])
    fringe_err = math.sqrt(max(float(g @ cov[1:3, 1:3] @ g), 0.0))
    if amp <= 0 or abs(fringe) < min_snr * fringe_err:
        flags |= LOW_SIGNAL
    n_rej = int(n - use.sum())
    if n_rej:
        flags |= COSMIC
    err = np.sqrt(np.diag(cov))
    return ProfileFit(
        phase_rad=phi,
        phase_err_rad=float(err[3]),
        period_px=float(period),
        period_err_px=float(err[4]),
        visibility=float(vis),
        visibility_err=float(err[2]),
        amplitude_e=float(amp),
        amplitude_err_e=float(err[1]),
        background_e=float(bkg),
        background_err_e=float(err[0]),
        chi2=float(((y - mu) ** 2 / (np.maximum(mu, 1e-3) + r2))[use].sum()),
        dof=int(use.sum()) - 5,
        n_rejected=n_rej,
        flags=flags,
    )
