"""Fringe fitting: phase, period, visibility and background of every BAM profile.

The profile model is ``I(x) = B + A E(x) [1 + V cos(θ(x) − φ)]`` with ``θ = 2π(x − x_c)/P``
(``x_c`` the window centre) and a Gaussian envelope ``E``. Written as
``B + A E + E (a cos θ + b sin θ)`` (``a = AV cos φ``, ``b = AV sin φ``) it is linear
once ``P`` and ``E`` are fixed, so each profile is a 4-parameter weighted least-squares
problem plus one Gauss-Newton step for the period: no iterations to converge, no start
values to guess. Ordinary profiles share one estimator matrix per field (their weights
are the mean profile's), so a day of 1.6·10⁵ profiles is a few matrix products
(:func:`_fast_path`); the others (NaNs, saturation, cosmic rays, unusual amplitude)
get a fit of their own with per-profile weights (Numba, parallel).

The envelope and the starting period are calibrated per field of view from the day's
mean profile (:func:`calibrate_shape`): the pattern moves by a few hundredths of a pixel
in a day, so the mean is a sharp, high-signal profile. Weights follow the noise model
(variance = expected counts + RON²): a first pass weights by the data, the second by
the first pass's model, which makes the fit as good as maximum likelihood here
(the tests compare the phase scatter with the Cramér–Rao bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

# Quality flags (bits of FringeFit.flags)
NONFINITE = 1
"""The profile holds NaN or infinite samples: not fitted."""
LOW_SIGNAL = 2
"""The fringe amplitude is under ``min_snr`` times its error, or the envelope is ≤ 0."""
SATURATED = 4
"""A sample reached the full well."""
COSMIC = 8
"""Samples far off the model were left out (cosmic rays); the fit is kept."""
BAD_INTERVAL = 16
"""The image falls in a data-qualifier bad interval."""
FIT_FAILED = 32
"""The normal equations were singular."""

BAD_FLAGS = NONFINITE | LOW_SIGNAL | SATURATED | BAD_INTERVAL | FIT_FAILED
"""Images with any of these are left out of the BAV."""


@dataclass(frozen=True)
class FringeShape:
    """What stays fixed for a field of view over a day: period and Gaussian envelope (px).

    The mean profile's background, amplitude, visibility and phase are kept too, as
    start values for fits that need them (the per-profile fit does not).
    """

    period_px: float
    envelope_centre_px: float
    envelope_sigma_px: float
    background_e: float = 0.0
    amplitude_e: float = 0.0
    visibility: float = 0.0
    phase_rad: float = 0.0

    def envelope(self, n: int) -> NDArray[np.float64]:
        x = np.arange(n, dtype=np.float64)
        return np.exp(-0.5 * ((x - self.envelope_centre_px) / self.envelope_sigma_px) ** 2)


@dataclass(frozen=True)
class FringeFit:
    """Per-profile results (arrays of one length); phases in rad, the rest in e⁻ or px."""

    phase_rad: NDArray[np.float64]
    phase_err_rad: NDArray[np.float64]
    period_px: NDArray[np.float64]
    period_err_px: NDArray[np.float64]
    visibility: NDArray[np.float64]
    amplitude_e: NDArray[np.float64]
    background_e: NDArray[np.float64]
    chi2: NDArray[np.float64]
    dof: NDArray[np.int64]
    n_rejected: NDArray[np.int64]
    flags: NDArray[np.int64]


def _model(p: NDArray[np.float64], x: NDArray[np.float64], xc: float) -> NDArray[np.float64]:
    b, a, v, phi, period, centre, sigma = p
    env = np.exp(-0.5 * ((x - centre) / sigma) ** 2)
    return b + a * env * (1.0 + v * np.cos(2 * np.pi * (x - xc) / period - phi))


def calibrate_shape(
    profiles: NDArray[np.floating], ron_e: float, *, max_profiles: int = 2000
) -> FringeShape:
    """Fit the full 7-parameter model to the mean of a field's profiles (one day).

    At most ``max_profiles`` profiles, spread over the day, are averaged: a mean of
    2000 already has a fringe signal-to-noise ratio in the thousands.
    """
    step = max(1, len(profiles) // max_profiles)
    y = np.nanmean(np.asarray(profiles[::step], dtype=np.float64), axis=0)
    n = y.size
    x = np.arange(n, dtype=np.float64)
    xc = 0.5 * (n - 1)
    background = float(np.median(np.concatenate([y[: n // 20], y[-n // 20 :]])))
    signal = np.clip(y - background, 0, None)
    centre = float((x * signal).sum() / signal.sum())
    sigma = float(np.sqrt(((x - centre) ** 2 * signal).sum() / signal.sum()))
    # the fringe period from the strongest peak of the spectrum (above the envelope's)
    spectrum = np.abs(
        np.fft.rfft((y - background) - np.convolve(y - background, np.ones(15) / 15, "same"))
    )
    freq = np.fft.rfftfreq(n)
    k = int(np.argmax(spectrum[3:])) + 3
    period = 1.0 / freq[k]
    # the phase (and the fringes' size) from a linear fit with this period and envelope,
    # so that one local fit of all seven parameters starts in the right valley
    env = np.exp(-0.5 * ((x - centre) / sigma) ** 2)
    th = 2 * np.pi * (x - xc) / period
    basis = np.stack([np.ones(n), env, env * np.cos(th), env * np.sin(th)], axis=1)
    b0, a0, ca, sa = np.linalg.lstsq(basis, y, rcond=None)[0]
    start = [b0, a0, np.hypot(ca, sa) / a0, np.arctan2(sa, ca), period, centre, sigma]
    best = least_squares(
        lambda p: (_model(p, x, xc) - y) / np.sqrt(np.maximum(y, 1.0) + ron_e**2),
        start,
        x_scale="jac",
    )
    b, a, v, phi, period, centre, sigma = (float(p) for p in best.x)
    if v < 0:  # the same profile with the phase half a turn on
        v, phi = -v, phi + math.pi
    phi = math.atan2(math.sin(phi), math.cos(phi))
    return FringeShape(period, centre, abs(sigma), b, a, v, phi)


def calibrate_shapes(
    samples: NDArray[np.floating],
    ron_e: NDArray[np.floating],
    field: NDArray[np.integer],
    *,
    fields: int = 2,
    max_profiles: int = 2000,
) -> tuple[FringeShape, ...]:
    """One :class:`FringeShape` per field of view, from profiles spread over the day."""
    shapes = []
    for f in range(fields):
        rows = np.flatnonzero(field == f)
        if rows.size == 0:
            raise ValueError(f"no profiles of field {f} to calibrate its fringe shape")
        rows = rows[:: max(1, rows.size // max_profiles)]
        shapes.append(calibrate_shape(samples[rows], float(np.median(ron_e[rows]))))
    return tuple(shapes)


@nb.njit(cache=True, inline="always")
def _solve_sym(m: np.ndarray, rhs: np.ndarray, k: int, inv: np.ndarray) -> bool:
    """Invert the k×k symmetric positive matrix ``m`` into ``inv`` (Gauss-Jordan) and
    return False when it is singular; ``rhs`` is replaced by the solution."""
    a = np.empty((k, 2 * k))
    for i in range(k):
        for j in range(k):
            a[i, j] = m[i, j]
            a[i, k + j] = 1.0 if i == j else 0.0
    for c in range(k):
        p = c
        for r in range(c + 1, k):
            if abs(a[r, c]) > abs(a[p, c]):
                p = r
        if a[p, c] == 0.0 or not math.isfinite(a[p, c]):
            return False
        if p != c:
            for j in range(2 * k):
                a[c, j], a[p, j] = a[p, j], a[c, j]
        d = 1.0 / a[c, c]
        for j in range(2 * k):
            a[c, j] *= d
        for r in range(k):
            if r != c and a[r, c] != 0.0:
                f = a[r, c]
                for j in range(2 * k):
                    a[r, j] -= f * a[c, j]
    sol = np.zeros(k)
    for i in range(k):
        for j in range(k):
            inv[i, j] = a[i, k + j]
            sol[i] += a[i, k + j] * rhs[j]
    for i in range(k):
        rhs[i] = sol[i]
    return True


@nb.njit(parallel=True, cache=True)
def _fit_all(
    y: np.ndarray, ron: np.ndarray, field: np.ndarray, env: np.ndarray, period0: np.ndarray,
    cos_f: np.ndarray, sin_f: np.ndarray, theta_f: np.ndarray,
    full_well: float, reject_sigma: float, min_snr: float, out: np.ndarray, iout: np.ndarray,
) -> None:  # fmt: skip
    m, n = y.shape
    for i in nb.prange(m):
        f = field[i]
        e = env[f]
        p0 = period0[f]
        cos_t = cos_f[f]
        sin_t = sin_f[f]
        theta = theta_f[f]
        r2 = np.float64(ron[i]) ** 2
        flags = 0
        bad = False
        ymax = -1e300
        for x in range(n):
            v = np.float64(y[i, x])
            if not math.isfinite(v):
                bad = True
            elif v > ymax:
                ymax = v
        if bad:
            for j in range(out.shape[1]):
                out[i, j] = np.nan
            iout[i, 0] = 0
            iout[i, 1] = 0
            iout[i, 2] = NONFINITE
            continue
        if ymax >= full_well:
            flags |= SATURATED
        w = np.empty(n)
        for x in range(n):
            w[x] = 1.0 / (max(np.float64(y[i, x]), 1.0) + r2)
        mat = np.zeros((5, 5))
        inv = np.zeros((5, 5))
        rhs = np.zeros(5)
        col = np.zeros(5)
        sol = np.zeros(5)
        ok = True
        n_rej = 0
        # pass 0: data weights, period fixed; passes 1-2: model weights, period free
        for it in range(3):
            k = 4 if it == 0 else 5
            a_prev, b_prev = sol[2], sol[3]
            for r in range(5):
                rhs[r] = 0.0
                for c in range(5):
                    mat[r, c] = 0.0
            for x in range(n):
                if w[x] == 0.0:
                    continue
                col[0] = 1.0
                col[1] = e[x]
                col[2] = e[x] * cos_t[x]
                col[3] = e[x] * sin_t[x]
                col[4] = e[x] * (a_prev * sin_t[x] - b_prev * cos_t[x]) * theta[x] / p0
                wy = w[x] * np.float64(y[i, x])
                for r in range(k):
                    wr = w[x] * col[r]
                    rhs[r] += col[r] * wy
                    for c in range(r, k):
                        mat[r, c] += wr * col[c]
            for r in range(k):
                for c in range(r):
                    mat[r, c] = mat[c, r]
            sub = mat[:k, :k].copy()
            subinv = np.zeros((k, k))
            res = rhs[:k].copy()
            if not _solve_sym(sub, res, k, subinv):
                ok = False
                break
            for r in range(5):
                sol[r] = res[r] if r < k else 0.0
                for c in range(5):
                    inv[r, c] = subinv[r, c] if (r < k and c < k) else 0.0
            # new weights from the model; far outliers (cosmic rays) get weight 0
            for x in range(n):
                if w[x] == 0.0 and it > 0:
                    continue
                mu = sol[0] + e[x] * (sol[1] + sol[2] * cos_t[x] + sol[3] * sin_t[x])
                if k == 5:
                    mu += sol[4] * e[x] * (a_prev * sin_t[x] - b_prev * cos_t[x]) * theta[x] / p0
                var = max(mu, 1e-3) + r2
                z = (np.float64(y[i, x]) - mu) / math.sqrt(var)
                if it > 0 and abs(z) > reject_sigma:
                    w[x] = 0.0
                    n_rej += 1
                else:
                    w[x] = 1.0 / var
        if not ok:
            for j in range(out.shape[1]):
                out[i, j] = np.nan
            iout[i, 0] = 0
            iout[i, 1] = 0
            iout[i, 2] = flags | FIT_FAILED
            continue
        bkg, amp, a, b, dp = sol[0], sol[1], sol[2], sol[3], sol[4]
        chi2 = 0.0
        used = 0
        for x in range(n):
            if w[x] == 0.0:
                continue
            mu = bkg + e[x] * (amp + a * cos_t[x] + b * sin_t[x])
            mu += dp * e[x] * (a * sin_t[x] - b * cos_t[x]) * theta[x] / p0
            rr = np.float64(y[i, x]) - mu
            chi2 += rr * rr / (max(mu, 1e-3) + r2)
            used += 1
        ab2 = a * a + b * b
        phase = math.atan2(b, a)
        # var(φ) from var(a), var(b), cov(a, b) of the last pass
        var_phi = (b * b * inv[2, 2] + a * a * inv[3, 3] - 2 * a * b * inv[2, 3]) / (ab2 * ab2)
        fringe = math.sqrt(ab2)
        var_fringe = (a * a * inv[2, 2] + b * b * inv[3, 3] + 2 * a * b * inv[2, 3]) / ab2
        if amp <= 0.0 or fringe < min_snr * math.sqrt(max(var_fringe, 0.0)):
            flags |= LOW_SIGNAL
        if n_rej > 0:
            flags |= COSMIC
        out[i, 0] = phase
        out[i, 1] = math.sqrt(max(var_phi, 0.0))
        out[i, 2] = p0 + dp
        out[i, 3] = math.sqrt(max(inv[4, 4], 0.0))
        out[i, 4] = fringe / amp if amp != 0.0 else np.nan
        out[i, 5] = amp
        out[i, 6] = bkg
        out[i, 7] = chi2
        iout[i, 0] = used - 5
        iout[i, 1] = n_rej
        iout[i, 2] = flags


def fit_fringes(
    samples: NDArray[np.floating],
    ron_e: NDArray[np.floating],
    field: NDArray[np.integer],
    shapes: tuple[FringeShape, ...],
    *,
    full_well_e: float = 350_000.0,
    reject_sigma: float = 7.0,
    min_snr: float = 5.0,
) -> FringeFit:
    """Fit every profile (rows of ``samples``) with its field's shape; see the module doc.

    ``field`` indexes ``shapes`` per row. Profiles with NaNs are flagged, not fitted;
    the others are fitted whatever their flags, so a report can show them.
    """
    y = np.ascontiguousarray(samples, dtype=np.float32)
    ron = np.ascontiguousarray(ron_e, dtype=np.float32)
    field = np.ascontiguousarray(field, np.int64)
    m, n = y.shape
    env = np.stack([s.envelope(n) for s in shapes])
    period0 = np.array([s.period_px for s in shapes])
    # the basis is the same for every profile of a field: computed once, not per profile
    theta = 2 * np.pi * (np.arange(n) - 0.5 * (n - 1))[None, :] / period0[:, None]
    out = np.empty((m, 8))
    iout = np.zeros((m, 3), dtype=np.int64)
    done = np.zeros(m, dtype=bool)
    for f, shape in enumerate(shapes):
        _fast_path(
            f, shape, y, ron, field, env[f], theta[f], out, iout, done,
            full_well_e, reject_sigma, min_snr,
        )  # fmt: skip
    rest = np.flatnonzero(~done)
    if rest.size:
        out_r = np.empty((rest.size, 8))
        iout_r = np.empty((rest.size, 3), dtype=np.int64)
        _fit_all(
            np.ascontiguousarray(y[rest]), np.ascontiguousarray(ron[rest]),
            np.ascontiguousarray(field[rest]), env, period0, np.cos(theta), np.sin(theta),
            np.ascontiguousarray(theta), float(full_well_e), float(reject_sigma),
            float(min_snr), out_r, iout_r,
        )  # fmt: skip
        out[rest] = out_r
        iout[rest] = iout_r
    return FringeFit(
        phase_rad=out[:, 0],
        phase_err_rad=out[:, 1],
        period_px=out[:, 2],
        period_err_px=out[:, 3],
        visibility=out[:, 4],
        amplitude_e=out[:, 5],
        background_e=out[:, 6],
        chi2=out[:, 7],
        dof=iout[:, 0],
        n_rejected=iout[:, 1],
        flags=iout[:, 2],
    )


@nb.njit(parallel=True, cache=True)
def _apply_estimator(
    y: np.ndarray, rows: np.ndarray, h: np.ndarray, xt: np.ndarray, sqrt_w: np.ndarray,
    params: np.ndarray, stats: np.ndarray,
) -> None:  # fmt: skip
    """``params = H y`` per profile, then chi², the largest |z| and the largest sample."""
    n = y.shape[1]
    for k in nb.prange(rows.size):
        i = rows[k]
        p0 = p1 = p2 = p3 = p4 = 0.0
        top = -1e300
        for x in range(n):
            v = np.float64(y[i, x])
            p0 += h[0, x] * v
            p1 += h[1, x] * v
            p2 += h[2, x] * v
            p3 += h[3, x] * v
            p4 += h[4, x] * v
            top = max(top, v)
        chi2 = 0.0
        zmax = 0.0
        for x in range(n):
            mu = p0 * xt[0, x] + p1 * xt[1, x] + p2 * xt[2, x] + p3 * xt[3, x] + p4 * xt[4, x]
            z = (np.float64(y[i, x]) - mu) * sqrt_w[x]
            chi2 += z * z
            zmax = max(zmax, abs(z))
        params[k, 0] = p0
        params[k, 1] = p1
        params[k, 2] = p2
        params[k, 3] = p3
        params[k, 4] = p4
        stats[k, 0] = chi2
        stats[k, 1] = zmax if math.isfinite(chi2) else np.inf
        stats[k, 2] = top


def _fast_path(
    f: int,
    shape: FringeShape,
    y: NDArray[np.float32],
    ron: NDArray[np.float32],
    field: NDArray[np.int64],
    env: NDArray[np.float64],
    theta: NDArray[np.float64],
    out: NDArray[np.float64],
    iout: NDArray[np.int64],
    done: NDArray[np.bool_],
    full_well: float,
    reject_sigma: float,
    min_snr: float,
) -> None:
    """Fit a field's ordinary profiles with one precomputed estimator, as matrix products.

    A field's profiles differ by hundredths of a pixel in a day, so the weights of the
    day's mean profile (its expected counts + RON²) are every profile's maximum-likelihood
    weights, and the weighted least-squares estimator ``H = (XᵀWX)⁻¹XᵀW`` is the same
    matrix for all of them: each fit is one product with ``H``. A profile that does not
    fit this picture (NaNs, saturation, an outlying sample, another read-out noise or
    an amplitude off the mean's) is left to the per-profile fit.
    """
    rows = np.flatnonzero(field == f)
    if rows.size == 0 or shape.amplitude_e <= 0:
        return  # no mean profile to take the weights from (a shape made by hand)
    r0 = float(np.median(ron[rows]))
    c, s = np.cos(theta), np.sin(theta)
    a0 = shape.amplitude_e * shape.visibility * np.cos(shape.phase_rad)
    b0 = shape.amplitude_e * shape.visibility * np.sin(shape.phase_rad)
    mu = shape.background_e + env * (shape.amplitude_e + a0 * c + b0 * s)
    w = 1.0 / (np.maximum(mu, 1e-3) + r0**2)
    x = np.stack(
        [np.ones_like(env), env, env * c, env * s,
         env * (a0 * s - b0 * c) * theta / shape.period_px],
        axis=1,
    )  # fmt: skip
    xw = x * w[:, None]
    cov = np.linalg.inv(x.T @ xw)
    estimator = cov @ xw.T  # (5, n)
    params = np.empty((rows.size, 5))
    stats = np.empty((rows.size, 3))  # chi2, max |z|, max sample
    _apply_estimator(y, rows, np.ascontiguousarray(estimator), np.ascontiguousarray(x.T),
                     np.sqrt(w), params, stats)  # fmt: skip
    with np.errstate(invalid="ignore"):
        ok = (
            np.isfinite(stats[:, 0])
            & (stats[:, 1] <= reject_sigma)
            & (stats[:, 2] < full_well)
            & (np.abs(ron[rows] - r0) <= 1e-6 * max(r0, 1.0))
            & (np.abs(params[:, 1] - shape.amplitude_e) <= 0.2 * shape.amplitude_e)
        )
    sel, p, chi2 = rows[ok], params[ok], stats[ok, 0]
    bkg, amp, a, b, dp = p.T
    ab2 = a * a + b * b
    var_phi = (b * b * cov[2, 2] + a * a * cov[3, 3] - 2 * a * b * cov[2, 3]) / ab2**2
    var_fringe = (a * a * cov[2, 2] + b * b * cov[3, 3] + 2 * a * b * cov[2, 3]) / ab2
    fringe = np.sqrt(ab2)
    out[sel, 0] = np.arctan2(b, a)
    out[sel, 1] = np.sqrt(var_phi)
    out[sel, 2] = shape.period_px + dp
    out[sel, 3] = np.sqrt(cov[4, 4])
    out[sel, 4] = fringe / amp
    out[sel, 5] = amp
    out[sel, 6] = bkg
    out[sel, 7] = chi2
    iout[sel, 0] = y.shape[1] - 5
    iout[sel, 1] = 0
    low = (amp <= 0) | (fringe < min_snr * np.sqrt(var_fringe))
    iout[sel, 2] = np.where(low, LOW_SIGNAL, 0)
    done[sel] = True
