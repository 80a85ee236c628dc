"""Image parameter determination: AL centroid, flux and background of every AF window.

Model of window sample k (k = 0 … n − 1 from the first kept sample):

    λ_k = F·P(k − c; a(ccd, colour, t)) + B,      y_k = Poisson(λ_k) + N(0, RON²),

with P the calibrated sampled LSF (:mod:`._lsf_basis`). The likelihood used is the usual
shifted-Poisson approximation y_k + RON² ~ Poisson(λ_k + RON²): same mean and variance
(λ_k + RON²) as the true compound distribution, and its score

    Σ_k (y_k − λ_k) / (λ_k + RON²) · ∂λ_k/∂θ = 0,    θ = (c, F, B),

is unbiased whatever the counts (unlike weights taken from the data, which bias faint
fluxes low). It is solved by Fisher scoring (iteratively reweighted Gauss–Newton), whose
normal matrix is the Fisher information I = Σ_k J_kᵀ J_k / (λ_k + RON²): its inverse gives
the formal errors, which reach the Cramér–Rao bound (tests). Iterations stop when every
parameter moved by less than ``tol`` times its formal error.

One compiled kernel (Numba, ``parallel=True``, blocks of windows per thread) fits every
window: no Python per window. Input windows come as the ``af_windows`` Arrow table, whose
``samples_e`` list column is read as flat values + offsets, one record batch at a time, so
memory stays bounded (a batch of 10⁶ windows needs ~0.2 GB of work space besides the
table and the output columns).

Quality flags (bits of ``flags``) say what happened; the fit is kept wherever it could be
made, so a report can show flagged windows, and downstream selects with ``BAD_FLAGS``.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike, NDArray

from dpct.datamodel import Column
from dpct.pipelines.aim._lsf_basis import (
    _POLY,
    DAY_NS,
    HERMITE_MONOMIALS,
    LsfCalibration,
    edge_profile,
    window_coefficients,
    window_polynomials,
)

# Quality flags (bits of the ``flags`` column)
NONFINITE = 1
"""A sample is NaN or infinite (or null): not fitted, outputs NaN."""
NON_CONVERGED = 2
"""No convergence in ``max_iter`` iterations, a singular normal matrix, the centroid
left the window, or fewer than four usable samples (outputs NaN in the last cases)."""
SATURATED = 4
"""A sample reached the full well (or the window was marked saturated); samples at or
above the full well are left out of the fit."""
COSMIC = 8
"""A sample lay more than ``reject_sigma`` above the model (a cosmic ray): left out and
the window refitted."""
TRUNCATED = 16
"""The window was truncated on board (a close neighbour)."""
BAD_INTERVAL = 32
"""The window falls in a data-qualifier bad interval (samples may be corrupted)."""
LOW_SIGNAL = 64
"""Flux below ``min_snr`` times its formal error, or not positive."""

BAD_FLAGS = NONFINITE | NON_CONVERGED | SATURATED | BAD_INTERVAL | LOW_SIGNAL
"""Windows with any of these bits should not be used downstream (COSMIC and TRUNCATED
fits are sound: their errors account for the samples left)."""

FLAG_NAMES = {
    NONFINITE: "NONFINITE",
    NON_CONVERGED: "NON_CONVERGED",
    SATURATED: "SATURATED",
    COSMIC: "COSMIC",
    TRUNCATED: "TRUNCATED",
    BAD_INTERVAL: "BAD_INTERVAL",
    LOW_SIGNAL: "LOW_SIGNAL",
}

IMAGE_PARAMS_COLUMNS: list[tuple[str, str, str, str]] = [
    ("window_id", "int64", "", "the AF window"),
    ("obmt_ns", "int64", "ns", "OBMT when sample 0 crossed the fiducial line"),
    ("ccd_index", "int16", "", "AF CCD 0 … 61"),
    ("centroid_px", "float64", "px", "AL centroid in sample units from sample 0's centre"),
    ("centroid_err_px", "float32", "px", "formal error of the centroid"),
    ("flux_e", "float32", "e-", "star electrons in the window"),
    ("flux_err_e", "float32", "e-", "formal error of the flux"),
    ("background_e", "float32", "e-", "background per sample"),
    ("background_err_e", "float32", "e-", "formal error of the background"),
    ("chi2", "float32", "", "Σ (y − λ)² / (λ + RON²) over the samples used"),
    ("dof", "int16", "", "samples used − 3"),
    ("n_iter", "int16", "", "Fisher-scoring iterations"),
    ("n_rejected", "int8", "", "samples left out as cosmic rays"),
    (
        "flags",
        "int32",
        "",
        "quality bits: 1 NaN, 2 not converged, 4 saturated, 8 cosmic, 16 truncated, "
        "32 bad interval, 64 low signal",
    ),
    ("lsf_solution_id", "int64", "", "solution id of the LSF calibration used"),
]
"""Columns of the image-parameter product (``aim_image_params``)."""

IMAGE_PARAMS_SCHEMA = pa.schema(
    [pa.field(name, Column(name, dtype).arrow_type) for name, dtype, _, _ in IMAGE_PARAMS_COLUMNS]
)

_REQUIRED = ("window_id", "obmt_ns", "ccd_index", "bp_rp_mag", "n_samples", "ron_e", "samples_e")
_MAX_SAMPLES = 64  # AfConfig allows up to 64 samples per window
_BLOCK = 128  # windows per thread block (scratch arrays allocated once per block)

# columns of the float output block
_C, _CE, _F, _FE, _B, _BE, _CHI2 = range(7)
# columns of the integer output block
_DOF, _NIT, _NREJ, _FLAGS = range(4)


@nb.njit(cache=True, inline="always")
def _model(
    n: int, c: float, poly: np.ndarray, bp: np.ndarray, prof: np.ndarray, dprof: np.ndarray
) -> None:
    """prof[k] = P(k − c), dprof[k] = ∂P(k − c)/∂c for k < n (n + 1 shared edges)."""
    a_lo, g_lo = edge_profile(-0.5 - c, poly, bp)
    for k in range(n):
        a_hi, g_hi = edge_profile(k + 0.5 - c, poly, bp)
        prof[k] = a_hi - a_lo
        dprof[k] = -(g_hi - g_lo)
        a_lo = a_hi
        g_lo = g_hi


@nb.njit(cache=True, inline="always")
def _inv3(m: np.ndarray, inv: np.ndarray) -> bool:
    """Inverse of a symmetric 3×3 matrix by cofactors; False when not positive definite."""
    c00 = m[1, 1] * m[2, 2] - m[1, 2] * m[1, 2]
    c01 = m[0, 2] * m[1, 2] - m[0, 1] * m[2, 2]
    c02 = m[0, 1] * m[1, 2] - m[0, 2] * m[1, 1]
    det = m[0, 0] * c00 + m[0, 1] * c01 + m[0, 2] * c02
    if not (det > 0.0) or not (m[0, 0] > 0.0) or not math.isfinite(det):
        return False
    d = 1.0 / det
    inv[0, 0] = c00 * d
    inv[0, 1] = inv[1, 0] = c01 * d
    inv[0, 2] = inv[2, 0] = c02 * d
    inv[1, 1] = (m[0, 0] * m[2, 2] - m[0, 2] * m[0, 2]) * d
    inv[1, 2] = inv[2, 1] = (m[0, 2] * m[0, 1] - m[0, 0] * m[1, 2]) * d
    inv[2, 2] = (m[0, 0] * m[1, 1] - m[0, 1] * m[0, 1]) * d
    return inv[1, 1] > 0.0 and inv[2, 2] > 0.0 and inv[0, 0] > 0.0


@nb.njit(cache=True)
def start_values(
    y: np.ndarray, n: int, r2: float, use: np.ndarray, ys: np.ndarray
) -> tuple[float, float, float]:
    """Start (centroid, flux, background) of a window from its usable samples ``use``;
    ``ys`` is scratch."""
    # background from the lowest samples; a single-sample spike (a cosmic
    # ray: far sharper than the LSF) is damped to its neighbours' level so that it cannot
    # pull the start; centroid from the moments around the highest sample, flux from the
    # sum above the background
    lo1 = lo2 = lo3 = 1e300
    for k in range(n):
        if use[k]:
            v = y[k]
            if v < lo1:
                lo1, lo2, lo3 = v, lo1, lo2
            elif v < lo2:
                lo2, lo3 = v, lo2
            elif v < lo3:
                lo3 = v
    bkg = (lo1 + lo2 + lo3) / 3.0
    noise = 3.0 * math.sqrt(max(bkg, 0.0) + r2) + 1.0
    kmax = -1
    for k in range(n):
        v = y[k] - bkg
        if use[k]:
            left = y[k - 1] - bkg if k > 0 and use[k - 1] else -1e300
            right = y[k + 1] - bkg if k + 1 < n and use[k + 1] else -1e300
            side = max(left, right)
            if side > -1e300 and v > 2.5 * max(side, 0.0) + noise:
                v = 2.5 * max(side, 0.0)  # a spike
        else:
            v = -1e300
        ys[k] = v
        if kmax < 0 or v > ys[kmax]:
            kmax = k
    s0 = 0.0
    s1 = 0.0
    for k in range(max(kmax - 2, 0), min(kmax + 3, n)):
        if use[k]:
            v = max(ys[k], 0.0)
            s0 += v
            s1 += v * k
    c = s1 / s0 if s0 > 0.0 else 0.5 * (n - 1)
    flux = 0.0
    for k in range(n):
        if use[k]:
            flux += ys[k]
    flux = max(flux, 1.0)
    return c, flux, bkg


@nb.njit(cache=True)
def _fit_one(
    y: np.ndarray, n: int, r2: float, poly: np.ndarray, bp: np.ndarray, use: np.ndarray,
    ys: np.ndarray, full_well: float, reject_sigma: float, lsf_tol: float, max_reject: int,
    tol: float, max_iter: int,
    prof: np.ndarray, dprof: np.ndarray, nm: np.ndarray, inv: np.ndarray,
    out: np.ndarray, iout: np.ndarray,
) -> None:  # fmt: skip
    """Fit one window (samples y[:n]); ``use`` and ``ys`` are scratch. Writes out[0:7] and
    iout[0:4] (the flags slot is OR-ed, so pre-set bits stay)."""
    flags = 0
    for k in range(n):
        if not math.isfinite(y[k]):
            flags |= NONFINITE
    if flags:
        for j in range(7):
            out[j] = np.nan
        iout[_DOF] = 0
        iout[_NIT] = 0
        iout[_NREJ] = 0
        iout[_FLAGS] |= flags
        return
    n_use = 0
    for k in range(n):
        use[k] = y[k] < full_well
        if use[k]:
            n_use += 1
        else:
            flags |= SATURATED
    if n_use < 4:
        for j in range(7):
            out[j] = np.nan
        iout[_DOF] = n_use - 3
        iout[_NIT] = 0
        iout[_NREJ] = 0
        iout[_FLAGS] |= flags | NON_CONVERGED
        return
    c, flux, bkg = start_values(y, n, r2, use, ys)
    n_iter = 0
    n_rej = 0
    converged = False
    ok = True
    chi2 = 0.0
    radius = 0.5  # trust region on the centroid step, px
    last_dc = 0.0
    since = 0  # iterations since the last rejection
    zmax = reject_sigma
    kbad = -1
    while n_iter < max_iter:
        n_iter += 1
        since += 1
        _model(n, c, poly, bp, prof, dprof)
        n00 = n01 = n02 = n11 = n12 = n22 = 0.0
        g0 = g1 = g2 = 0.0
        chi2 = 0.0
        zmax = reject_sigma
        kbad = -1
        for k in range(n):
            if not use[k]:
                continue
            lam = flux * prof[k] + bkg
            w = 1.0 / max(max(lam, 0.0) + r2, 1e-2)
            res = y[k] - lam
            j0 = flux * dprof[k]
            j1 = prof[k]
            wr = w * res
            chi2 += res * wr
            # the most positive outlier (cosmic rays only add charge), beyond the noise
            # and the LSF's own uncertainty (lsf_tol of the star's signal in the sample)
            if res > 0.0:
                tol_e = lsf_tol * flux * prof[k]
                z2 = res * res / (1.0 / w + tol_e * tol_e)
                if z2 > zmax * zmax:
                    zmax = math.sqrt(z2)
                    kbad = k
            n00 += w * j0 * j0
            n01 += w * j0 * j1
            n02 += w * j0
            n11 += w * j1 * j1
            n12 += w * j1
            n22 += w
            g0 += wr * j0
            g1 += wr * j1
            g2 += wr
        nm[0, 0] = n00
        nm[0, 1] = nm[1, 0] = n01
        nm[0, 2] = nm[2, 0] = n02
        nm[1, 1] = n11
        nm[1, 2] = nm[2, 1] = n12
        nm[2, 2] = n22
        if not _inv3(nm, inv):
            ok = False
            break
        dc = inv[0, 0] * g0 + inv[0, 1] * g1 + inv[0, 2] * g2
        df = inv[1, 0] * g0 + inv[1, 1] * g1 + inv[1, 2] * g2
        db = inv[2, 0] * g0 + inv[2, 1] * g1 + inv[2, 2] * g2
        small = (
            dc * dc <= tol * tol * inv[0, 0]
            and df * df <= tol * tol * inv[1, 1]
            and db * db <= tol * tol * inv[2, 2]
        )
        # An outlier far above the model (a cosmic ray) is left out once the fit has
        # converged, or after three iterations that did not converge (a strong hit can
        # keep the fit from converging at all); the window is then refitted from here.
        if kbad >= 0 and n_rej < max_reject and n_use > 4 and (small or since >= 3):
            use[kbad] = False
            n_use -= 1
            n_rej += 1
            flags |= COSMIC
            since = 0
            radius = 0.5
            continue
        if small:  # the step is below tol σ: converged
            c += dc
            flux += df
            bkg += db
            converged = True
            break
        # trust region on the centroid, halved when clipped steps flip (oscillation)
        if abs(dc) > radius:
            if dc * last_dc < 0.0:
                radius *= 0.5
            dc = radius if dc > 0.0 else -radius
        last_dc = dc
        c += dc
        flux += df
        bkg += db
        if not (math.isfinite(c) and math.isfinite(flux) and math.isfinite(bkg)):
            ok = False
            break
        if c < -1.0 or c > n:
            ok = False  # the image left the window: nothing to centroid
            break
    if not ok:
        for j in range(7):
            out[j] = np.nan
        iout[_DOF] = n_use - 3
        iout[_NIT] = n_iter
        iout[_NREJ] = n_rej
        iout[_FLAGS] |= flags | NON_CONVERGED
        return
    if not converged:
        flags |= NON_CONVERGED
    out[_C] = c
    out[_CE] = math.sqrt(inv[0, 0])
    out[_F] = flux
    out[_FE] = math.sqrt(inv[1, 1])
    out[_B] = bkg
    out[_BE] = math.sqrt(inv[2, 2])
    out[_CHI2] = chi2
    iout[_DOF] = n_use - 3
    iout[_NIT] = n_iter
    iout[_NREJ] = n_rej
    iout[_FLAGS] |= flags


@nb.njit(parallel=True, cache=True)
def _fit_windows(
    values: np.ndarray, offsets: np.ndarray, rows: np.ndarray, dcolour: np.ndarray,
    t_days: np.ndarray, ron: np.ndarray, coef: np.ndarray, cpow: np.ndarray,
    tpow: np.ndarray, bp: np.ndarray, tm: np.ndarray, full_well: float, reject_sigma: float,
    lsf_tol: float,
    max_reject: int, min_snr: float, tol: float, max_iter: int,
    out: np.ndarray, iout: np.ndarray,
) -> None:  # fmt: skip
    """Fit windows i (samples values[offsets[i]:offsets[i + 1]]) into out/iout rows i."""
    m = rows.size
    n_blocks = (m + _BLOCK - 1) // _BLOCK
    nb_ = coef.shape[1] + 1
    for blk in nb.prange(n_blocks):
        a = np.empty(nb_)
        poly = np.empty((5, _POLY))
        y = np.empty(_MAX_SAMPLES)
        ys = np.empty(_MAX_SAMPLES)
        use = np.empty(_MAX_SAMPLES, dtype=np.bool_)
        prof = np.empty(_MAX_SAMPLES)
        dprof = np.empty(_MAX_SAMPLES)
        nm = np.empty((3, 3))
        inv = np.empty((3, 3))
        for i in range(blk * _BLOCK, min((blk + 1) * _BLOCK, m)):
            o = offsets[i]
            n = offsets[i + 1] - o
            for k in range(n):
                y[k] = values[o + k]
            window_coefficients(coef, rows[i], dcolour[i], t_days[i], cpow, tpow, a)
            window_polynomials(a, bp, tm, poly)
            r = np.float64(ron[i])
            _fit_one(
                y, n, r * r, poly, bp, use, ys, full_well, reject_sigma, lsf_tol, max_reject, tol,
                max_iter, prof, dprof, nm, inv, out[i], iout[i],
            )  # fmt: skip
            f = out[i, _F]
            if math.isfinite(f) and (f <= 0.0 or f < min_snr * out[i, _FE]):
                iout[i, _FLAGS] |= LOW_SIGNAL


def bad_interval_mask(
    obmt_ns: NDArray[np.int64],
    intervals: pa.Table | ArrayLike | None,
    ccd_index: NDArray[np.integer] | None = None,
    fov: NDArray[np.integer] | None = None,
) -> NDArray[np.bool_]:
    """Windows whose ``obmt_ns`` lies in a bad interval ``[start, stop)``.

    ``intervals`` is an (m, 2) array of OBMT ns, or a ``data_qualifiers`` table
    (``start_obmt_ns``, ``stop_obmt_ns`` and, when present, ``ccd_index`` and ``fov`` with
    −1 meaning all). Intervals for all CCDs are merged and looked up by binary search;
    CCD- or field-specific ones (a few a day) are tested one by one.
    """
    t = np.asarray(obmt_ns, dtype=np.int64)
    bad = np.zeros(t.shape, dtype=bool)
    if intervals is None:
        return bad
    if isinstance(intervals, pa.Table):
        start = intervals.column("start_obmt_ns").to_numpy().astype(np.int64)
        stop = intervals.column("stop_obmt_ns").to_numpy().astype(np.int64)
        names = intervals.column_names
        iccd = (
            intervals.column("ccd_index").to_numpy().astype(np.int64)
            if "ccd_index" in names
            else np.full(start.size, -1)
        )
        ifov = (
            intervals.column("fov").to_numpy().astype(np.int64)
            if "fov" in names
            else np.full(start.size, -1)
        )
    else:
        arr = np.asarray(intervals, dtype=np.int64).reshape(-1, 2)
        start, stop = arr[:, 0], arr[:, 1]
        iccd = ifov = np.full(start.size, -1)
    if np.any(stop < start):
        raise ValueError("bad intervals must have stop ≥ start (half-open [start, stop))")
    glob = (iccd < 0) & (ifov < 0)
    if glob.any():
        order = np.argsort(start[glob], kind="stable")
        s, e = start[glob][order], stop[glob][order]
        e = np.maximum.accumulate(e)  # merged coverage: the latest stop so far
        j = np.searchsorted(s, t, side="right") - 1
        bad |= (j >= 0) & (t < e[np.maximum(j, 0)])
    for s, e, c, f in zip(start[~glob], stop[~glob], iccd[~glob], ifov[~glob], strict=True):
        hit = (t >= s) & (t < e)
        if c >= 0:
            if ccd_index is None:
                raise ValueError("CCD-specific bad intervals need the windows' ccd_index")
            hit &= ccd_index == c
        if f >= 0:
            if fov is None:
                raise ValueError("field-specific bad intervals need the windows' fov")
            hit &= fov == f
        bad |= hit
    return bad


def _check_table(windows: pa.Table) -> None:
    if not isinstance(windows, pa.Table):
        raise ValueError(f"af_windows must be a pyarrow Table, got {type(windows).__name__}")
    missing = [c for c in _REQUIRED if c not in windows.column_names]
    if missing:
        raise ValueError(f"af_windows table lacks column(s) {missing}")
    if windows.num_rows == 0:
        raise ValueError("af_windows table is empty: no windows to fit")


def _batch_arrays(batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    """Flat samples + offsets and the per-window columns of one record batch."""
    samples = batch.column(batch.schema.get_field_index("samples_e"))
    if samples.null_count:
        nulls = np.flatnonzero(samples.is_null().to_numpy(zero_copy_only=False))
        ids = batch.column(batch.schema.get_field_index("window_id")).to_numpy()[nulls[:5]]
        raise ValueError(f"af_windows {ids.tolist()}: samples_e is null")
    offsets = samples.offsets.to_numpy().astype(np.int64)  # absolute, also for slices
    flat = samples.values
    if flat.type != pa.float32() and flat.type != pa.float64():
        flat = flat.cast(pa.float64())
    values = flat.to_numpy(zero_copy_only=False)  # nulls inside a window become NaN
    col = {name: batch.column(batch.schema.get_field_index(name)) for name in batch.schema.names}

    def num(name: str, dtype: type) -> np.ndarray:
        arr = col[name]
        if arr.null_count:
            raise ValueError(f"af_windows column {name!r} has nulls")
        return arr.to_numpy(zero_copy_only=False).astype(dtype, copy=False)

    out = {
        "values": values,
        "offsets": offsets,
        "window_id": num("window_id", np.int64),
        "obmt_ns": num("obmt_ns", np.int64),
        "ccd_index": num("ccd_index", np.int64),
        "bp_rp_mag": num("bp_rp_mag", np.float64),
        "n_samples": num("n_samples", np.int64),
        "ron_e": num("ron_e", np.float64),
    }
    for name in ("saturated", "truncated"):
        out[name] = num(name, np.bool_) if name in col else np.zeros(batch.num_rows, bool)
    out["fov"] = num("fov", np.int64) if "fov" in col else None
    lengths = np.diff(offsets)
    wrong = np.flatnonzero(lengths != out["n_samples"])
    if wrong.size:
        i = wrong[:5]
        raise ValueError(
            f"af_windows {out['window_id'][i].tolist()}: {lengths[i].tolist()} samples but "
            f"n_samples = {out['n_samples'][i].tolist()} ({wrong.size} windows disagree)"
        )
    if lengths.max(initial=0) > _MAX_SAMPLES:
        raise ValueError(f"af_windows longer than {_MAX_SAMPLES} samples are not supported")
    if not np.all(np.isfinite(out["bp_rp_mag"])) or not np.all(np.isfinite(out["ron_e"])):
        raise ValueError("af_windows bp_rp_mag and ron_e must be finite")
    return out


def fit_arrays(
    values: NDArray[np.floating],
    offsets: NDArray[np.integer],
    ccd_index: NDArray[np.integer],
    bp_rp_mag: NDArray[np.floating],
    obmt_ns: NDArray[np.integer],
    ron_e: NDArray[np.floating],
    calibration: LsfCalibration,
    *,
    flags: NDArray[np.integer] | None = None,
    full_well_e: float = 5.0e5,
    reject_sigma: float = 6.0,
    lsf_tolerance: float = 0.02,
    max_reject: int = 2,
    min_snr: float = 5.0,
    tol: float = 0.01,
    max_iter: int = 30,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Fit windows given as flat samples + offsets (window i: values[offsets[i]:offsets[i+1]]).

    Returns ``(out, iout)``: ``out[:, 0:7]`` centroid, its error, flux, its error,
    background, its error, χ²; ``iout[:, 0:4]`` dof, iterations, rejected samples, flags
    (``flags`` given here are OR-ed in). The table-level :func:`fit_image_parameters` is
    what pipelines call; this is its engine, also used by the LSF calibration.
    """
    if calibration is None:
        raise ValueError("no LSF calibration given: use LsfCalibration.default() or a product")
    m = len(ccd_index)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets.size != m + 1:
        raise ValueError(f"offsets must have {m + 1} entries for {m} windows")
    rows = calibration.rows_of(ccd_index) if m else np.zeros(0, np.int64)
    out = np.empty((m, 7))
    iout = np.zeros((m, 4), dtype=np.int64)
    if flags is not None:
        iout[:, _FLAGS] = flags
    dcol = np.asarray(bp_rp_mag, dtype=np.float64) - calibration.colour_ref_mag
    t_days = (np.asarray(obmt_ns, dtype=np.int64) - calibration.time_ref_obmt_ns) / DAY_NS
    vals = np.asarray(values)
    if vals.dtype not in (np.float32, np.float64):
        vals = vals.astype(np.float64)
    _fit_windows(
        vals, offsets, np.ascontiguousarray(rows, np.int64), np.ascontiguousarray(dcol),
        np.ascontiguousarray(t_days), np.ascontiguousarray(ron_e, dtype=np.float64),
        calibration.coefficients, calibration.colour_power, calibration.time_power,
        calibration.basis.params(), HERMITE_MONOMIALS, float(full_well_e),
        float(reject_sigma), float(lsf_tolerance), int(max_reject), float(min_snr),
        float(tol), int(max_iter), out, iout,
    )  # fmt: skip
    return out, iout


def fit_image_parameters(
    windows: pa.Table,
    calibration: LsfCalibration | None,
    intervals: pa.Table | ArrayLike | None = None,
    *,
    full_well_e: float = 5.0e5,
    reject_sigma: float = 6.0,
    lsf_tolerance: float = 0.02,
    max_reject: int = 2,
    min_snr: float = 5.0,
    tol: float = 0.01,
    max_iter: int = 30,
    batch_windows: int = 1_000_000,
) -> pa.Table:
    """Centroid, flux and background with formal errors and flags for every AF window.

    Parameters
    ----------
    windows
        An ``af_windows`` table (``window_id``, ``obmt_ns``, ``ccd_index``, ``bp_rp_mag``,
        ``n_samples``, ``ron_e``, ``samples_e``; ``saturated``, ``truncated`` and
        ``fov`` are used when present).
    calibration
        The LSF to use (a stored ``aim_lsf_calibration`` or :meth:`LsfCalibration.default`).
    intervals
        Data-qualifier bad intervals (see :func:`bad_interval_mask`); windows in them
        are fitted and flagged ``BAD_INTERVAL``.
    full_well_e
        Samples at or above are saturated and left out.
    reject_sigma, lsf_tolerance, max_reject
        A sample more than ``reject_sigma`` σ above the converged model is left out and
        the window refitted, at most ``max_reject`` times (``COSMIC``); σ² is the sample
        variance plus (``lsf_tolerance`` × the star's signal in the sample)², so that an
        imperfect LSF does not make bright stars' peaks look like cosmic rays.
    min_snr
        Flux/error below this flags ``LOW_SIGNAL``.
    tol, max_iter
        Stop when every parameter moved less than ``tol`` formal errors; at most
        ``max_iter`` iterations (else ``NON_CONVERGED``).
    batch_windows
        Windows per record batch: bounds the work space.

    Returns
    -------
    pyarrow.Table
        Columns :data:`IMAGE_PARAMS_COLUMNS`, one row per window in input order.

    Raises
    ------
    ValueError
        An empty or malformed table (missing columns, a window whose sample count is
        not its ``n_samples``, null samples lists), or no calibration for a window's CCD.
    """
    _check_table(windows)
    if calibration is None:
        raise ValueError("no LSF calibration given: use LsfCalibration.default() or a product")
    parts = []
    for batch in windows.to_batches(max_chunksize=batch_windows):
        if batch.num_rows == 0:
            continue
        arr = _batch_arrays(batch)
        pre = np.where(arr["saturated"], SATURATED, 0) | np.where(arr["truncated"], TRUNCATED, 0)
        bad = bad_interval_mask(arr["obmt_ns"], intervals, arr["ccd_index"], arr["fov"])
        pre |= np.where(bad, BAD_INTERVAL, 0)
        out, iout = fit_arrays(
            arr["values"], arr["offsets"], arr["ccd_index"], arr["bp_rp_mag"],
            arr["obmt_ns"], arr["ron_e"], calibration, flags=pre, full_well_e=full_well_e,
            reject_sigma=reject_sigma, lsf_tolerance=lsf_tolerance, max_reject=max_reject,
            min_snr=min_snr, tol=tol,
            max_iter=max_iter,
        )  # fmt: skip
        parts.append(_result_batch(arr, out, iout, calibration.solution_id))
    return pa.Table.from_batches(parts, schema=IMAGE_PARAMS_SCHEMA)


def _result_batch(
    arr: dict[str, np.ndarray], out: np.ndarray, iout: np.ndarray, solution_id: int
) -> pa.RecordBatch:
    n = out.shape[0]
    cols = [
        arr["window_id"],
        arr["obmt_ns"],
        arr["ccd_index"].astype(np.int16),
        out[:, _C].copy(),
        out[:, _CE].astype(np.float32),
        out[:, _F].astype(np.float32),
        out[:, _FE].astype(np.float32),
        out[:, _B].astype(np.float32),
        out[:, _BE].astype(np.float32),
        out[:, _CHI2].astype(np.float32),
        iout[:, _DOF].astype(np.int16),
        iout[:, _NIT].astype(np.int16),
        iout[:, _NREJ].astype(np.int8),
        iout[:, _FLAGS].astype(np.int32),
        np.full(n, solution_id, dtype=np.int64),
    ]
    return pa.RecordBatch.from_arrays([pa.array(c) for c in cols], schema=IMAGE_PARAMS_SCHEMA)


def flag_counts(flags: ArrayLike) -> dict[str, int]:
    """Windows carrying each flag (for logs and reports)."""
    f = np.asarray(flags)
    return {name: int(np.count_nonzero(f & bit)) for bit, name in FLAG_NAMES.items()}
