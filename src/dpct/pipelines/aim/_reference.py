"""Slow, readable references for the AIM Numba kernels (tests only, never production).

They follow the model of ``docs/aim.md`` as stated, not the kernels' arithmetic, so that
agreement between the two is evidence that both compute the model:

- the basis functions are Gauss–Hermite densities evaluated with SciPy's Hermite
  polynomials, and a pixel's share is their integral over the pixel by Gauss–Legendre
  quadrature (the kernels use closed-form antiderivatives and recurrences);
- a window's centroid, flux and background are a root of the shifted-Poisson score
  equations found by MINPACK's hybrid method (the kernel uses Fisher scoring with a
  trust region), with errors from the Fisher information at that root;
- the coefficient step of the LSF calibration comes from the *joint* normal equations
  of the coefficients and every window's (c, F, B), inverted densely (the kernel
  eliminates each window's parameters by a Schur complement).

One window or one CCD at a time, in plain NumPy/SciPy: thousands of times slower than
the kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import root
from scipy.special import eval_hermitenorm

from dpct.pipelines.aim._image_params import (
    COSMIC,
    LOW_SIGNAL,
    NON_CONVERGED,
    NONFINITE,
    SATURATED,
)
from dpct.pipelines.aim._lsf_basis import DAY_NS, LsfBasis, LsfCalibration

# Gauss–Legendre nodes on one pixel: the integrands vary on the core scale (0.85 px), so
# 24 nodes integrate them to ~1e-15 of the profile
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(24)


# ------------------------------------------------------------------------------ LSF ---
def gauss_hermite(n: int, u: NDArray[np.float64], s: float) -> NDArray[np.float64]:
    """H_n(u; s) = He_n(u/s) φ(u/s) / (s √n!)."""
    z = u / s
    phi = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return eval_hermitenorm(n, z) * phi / (s * math.sqrt(math.factorial(n)))


def basis_densities(u: NDArray[np.float64], basis: LsfBasis) -> NDArray[np.float64]:
    """The continuous basis functions b_j(u), shape ``u.shape + (basis.size,)``, in the
    order of :attr:`LsfBasis.names` (b₀ the nominal core)."""
    sc, sh = basis.core_scale_px, basis.halo_scale_px
    cols = [
        gauss_hermite(0, u, sc),
        gauss_hermite(0, u, sh) - gauss_hermite(0, u, sc),
        gauss_hermite(1, u, sh) / sh - gauss_hermite(1, u, sc) / sc,
    ]
    cols += [gauss_hermite(n, u, sc) for n in range(2, basis.core_order + 1)]
    cols += [gauss_hermite(n, u, sh) for n in range(2, basis.halo_order + 1)]
    return np.stack(cols, axis=-1)


def sampled_basis(x_px: NDArray[np.float64], basis: LsfBasis) -> NDArray[np.float64]:
    """P_j(x) = ∫_{x−½}^{x+½} b_j(u) du by quadrature, shape ``x.shape + (basis.size,)``."""
    x = np.asarray(x_px, dtype=np.float64)
    u = x[..., None] + 0.5 * _NODES  # nodes mapped onto [x − ½, x + ½]
    return np.einsum("...qj,q->...j", basis_densities(u, basis), 0.5 * _WEIGHTS)


def window_coefficients(
    cal: LsfCalibration, ccd_index: int, colour_mag: float, obmt_ns: int
) -> NDArray[np.float64]:
    """a_j of one window (a₀ = 1): Σ_t C[ccd, j, t] (colour − ref)^p ((t − ref)/day)^q."""
    row = int(np.flatnonzero(cal.ccd_index == ccd_index)[0])
    dcol = colour_mag - cal.colour_ref_mag
    dt = (obmt_ns - cal.time_ref_obmt_ns) / DAY_NS
    a = np.zeros(cal.basis.size)
    a[0] = 1.0
    for t, (p, q) in enumerate(zip(cal.colour_power, cal.time_power, strict=True)):
        a[1:] += cal.coefficients[row, :, t] * dcol**p * dt**q
    return a


def sampled_profile(
    x_px: NDArray[np.float64], a: NDArray[np.float64], basis: LsfBasis
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """P(x) = Σ_j a_j P_j(x) and dP/dx = L(x + ½) − L(x − ½) (the integrand at the
    pixel's edges: the fundamental theorem, no differentiation of the quadrature)."""
    x = np.asarray(x_px, dtype=np.float64)
    p = sampled_basis(x, basis) @ a
    dp = (basis_densities(x + 0.5, basis) - basis_densities(x - 0.5, basis)) @ a
    return p, dp


# ----------------------------------------------------------------- image parameters ---
@dataclass(frozen=True)
class WindowFit:
    """One window's image parameters; NaN where no fit could be made."""

    centroid_px: float
    centroid_err_px: float
    flux_e: float
    flux_err_e: float
    background_e: float
    background_err_e: float
    chi2: float
    dof: int
    n_rejected: int
    flags: int


Profile = Callable[[NDArray[np.float64]], tuple[NDArray[np.float64], NDArray[np.float64]]]
"""x ↦ (P(x), dP/dx) of the window's sampled LSF."""


def _failed(flags: int, dof: int, n_rejected: int = 0) -> WindowFit:
    nan = float("nan")
    return WindowFit(nan, nan, nan, nan, nan, nan, nan, dof, n_rejected, flags)


def fit_window(
    y: NDArray[np.floating],
    ron_e: float,
    profile: Profile,
    *,
    full_well_e: float = 5.0e5,
    reject_sigma: float = 6.0,
    lsf_tolerance: float = 0.02,
    max_reject: int = 2,
    min_snr: float = 5.0,
) -> WindowFit:
    """Centroid, flux and background of one window, as ``docs/aim.md`` defines them.

    The estimate solves Σ_k (y_k − λ_k)/(λ_k + RON²) ∂λ_k/∂θ = 0 over the usable samples
    (finite, below the full well); a sample more than ``reject_sigma`` σ above the
    solution (σ² = λ + RON² + (``lsf_tolerance`` · F P)²) is left out and the score
    solved again, at most ``max_reject`` times while more than four samples remain.
    """
    y = np.asarray(y, dtype=np.float64)
    n = y.size
    if not np.all(np.isfinite(y)):
        return _failed(NONFINITE, 0)
    flags = 0
    use = y < full_well_e
    if not use.all():
        flags |= SATURATED
    if use.sum() < 4:
        return _failed(flags | NON_CONVERGED, int(use.sum()) - 3)
    r2 = ron_e * ron_e
    k = np.arange(n, dtype=np.float64)

    def model(theta: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        c, flux, bkg = theta
        p, dp = profile(k - c)
        lam = flux * p + bkg
        jac = np.stack([-flux * dp, p, np.ones(n)], axis=1)  # ∂λ/∂(c, F, B)
        return lam, jac

    def variance(lam: NDArray[np.float64]) -> NDArray[np.float64]:
        # expected counts cannot be negative: without the floor a trial model dipping
        # below −RON² in the wings would have negative variances (and spurious roots)
        return np.maximum(lam, 0.0) + r2

    def score(theta: NDArray[np.float64], use: NDArray[np.bool_]) -> NDArray[np.float64]:
        lam, jac = model(theta)
        return ((y - lam) / variance(lam))[use] @ jac[use]

    def starts(use: NDArray[np.bool_]) -> list[NDArray[np.float64]]:
        # λ is linear in (F, B) at a fixed centroid: weighted linear least squares on a
        # quarter-pixel grid of centroids, best χ² first (robust to a saturated peak or
        # a spike, which would mislead moments)
        grid = np.arange(-0.5, n - 0.25, 0.25)
        prof = profile(k[None, :] - grid[:, None])[0]
        sw = 1.0 / np.sqrt(np.maximum(y, 1.0) + r2)
        cands = []
        for c, p in zip(grid, prof, strict=True):
            design = np.stack([p, np.ones(n)], axis=1)[use] * sw[use, None]
            (flux, bkg), *_ = np.linalg.lstsq(design, (y * sw)[use], rcond=None)
            chi2 = float((((y - flux * p - bkg) * sw)[use] ** 2).sum())
            cands.append((chi2, np.array([c, flux, bkg])))
        return [theta for _, theta in sorted(cands, key=lambda ct: ct[0])]

    def solve(use: NDArray[np.bool_]) -> NDArray[np.float64] | None:
        # MINPACK's hybrid method on the score, from the best start that converges
        for x0 in starts(use)[:8]:
            sol = root(score, x0, args=(use,), method="hybr", options={"xtol": 1e-10})
            if sol.success and np.all(np.isfinite(sol.x)) and -1.0 <= sol.x[0] <= n:
                return sol.x
        return None

    n_rej = 0
    while True:
        theta = solve(use)
        if theta is None:
            return _failed(flags | NON_CONVERGED, int(use.sum()) - 3, n_rej)
        c = theta[0]
        lam, jac = model(theta)
        star = lam - theta[2]  # F·P, the star's signal in each sample
        z = (y - lam) / np.sqrt(variance(lam) + (lsf_tolerance * star) ** 2)
        z = np.where(use & (y > lam), z, -np.inf)
        worst = int(np.argmax(z))
        if z[worst] > reject_sigma and n_rej < max_reject and use.sum() > 4:
            use[worst] = False
            n_rej += 1
            flags |= COSMIC
            continue
        break
    var = variance(lam)
    fisher = jac[use].T @ (jac[use] / var[use, None])
    err = np.sqrt(np.diag(np.linalg.inv(fisher)))
    chi2 = float(((y - lam) ** 2 / var)[use].sum())
    flux, flux_err = float(theta[1]), float(err[1])
    if flux <= 0 or flux < min_snr * flux_err:
        flags |= LOW_SIGNAL
    return WindowFit(
        float(c), float(err[0]), flux, flux_err, float(theta[2]), float(err[2]), chi2,
        int(use.sum()) - 3, n_rej, flags,
    )  # fmt: skip


# ------------------------------------------------------------------ LSF calibration ---
def calibration_step(
    y: list[NDArray[np.floating]],
    ron_e: NDArray[np.floating],
    colour_mag: NDArray[np.floating],
    obmt_ns: NDArray[np.integer],
    theta: NDArray[np.floating],
    cal: LsfCalibration,
    ccd_index: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """One CCD's joint Gauss–Newton system for the coefficients C and every window's
    (c, F, B), reduced to C by inverting the joint normal matrix.

    Returns ``(reduced_matrix, reduced_rhs)``: the inverse of the C block of the joint
    covariance, and that matrix times the C part of the joint step, i.e. the system
    ``reduced_matrix · ΔC = reduced_rhs`` whose solution is the joint step's ΔC.
    ``theta`` holds (c, F, B) per window; C is indexed j·n_terms + t.
    """
    basis = cal.basis
    nt = cal.n_terms
    npar = (basis.size - 1) * nt
    m = len(y)
    rows, resid, weights = [], [], []
    for i in range(m):
        yi = np.asarray(y[i], dtype=np.float64)
        c, flux, bkg = (float(v) for v in theta[i])
        a = window_coefficients(cal, ccd_index, float(colour_mag[i]), int(obmt_ns[i]))
        x = np.arange(yi.size) - c
        pj = sampled_basis(x, basis)  # (n, K)
        p, dp = sampled_profile(x, a, basis)
        lam = flux * p + bkg
        mono = (colour_mag[i] - cal.colour_ref_mag) ** cal.colour_power * (
            (obmt_ns[i] - cal.time_ref_obmt_ns) / DAY_NS
        ) ** cal.time_power
        jac = np.zeros((yi.size, npar + 3 * m))
        # ∂λ/∂C[j, t] = F P_j m_t (j ≥ 1); ∂λ/∂(c, F, B) of this window only
        jac[:, :npar] = (flux * pj[:, 1:, None] * mono[None, None, :]).reshape(yi.size, npar)
        jac[:, npar + 3 * i : npar + 3 * i + 3] = np.stack([-flux * dp, p, np.ones_like(p)], 1)
        rows.append(jac)
        resid.append(yi - lam)
        weights.append(1.0 / np.maximum(np.maximum(lam, 0.0) + float(ron_e[i]) ** 2, 1e-2))
    jac = np.concatenate(rows)
    w = np.concatenate(weights)
    r = np.concatenate(resid)
    normal = jac.T @ (jac * w[:, None])
    cov = np.linalg.inv(normal)
    step = cov @ (jac.T @ (w * r))
    reduced = np.linalg.inv(cov[:npar, :npar])
    return reduced, reduced @ step[:npar]
