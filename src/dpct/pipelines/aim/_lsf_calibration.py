"""LSF calibration: the per-CCD basis coefficients C[ccd, j, t] from well-exposed windows.

Given windows and a prior LSF (yesterday's calibration, or the default), the model
λ_k = F·Σ_j a_j P_j(k − c) + B with a_j = Σ_t C[ccd, j, t] m_t(colour, time) is *linear*
in C once each window's image parameters (c, F, B) are known, and each window's
parameters are a three-parameter fit once C is known. The calibration alternates:

1. fit the image parameters of the calibration windows with the current LSF
   (:func:`.fit_arrays`, the same kernel as the daily fit);
2. one Gauss–Newton step for C per CCD, from normal equations in which every window's
   own three parameters are eliminated (Schur complement: N_CC − N_Cθ N_θθ⁻¹ N_θC, per
   window, summed). With the image parameters at their optimum this *is* the joint
   Gauss–Newton step for (C, all θ), so 2–3 rounds converge, and the inverse of the
   reduced matrix is the covariance of C with every window's centroid, flux and
   background free — the honest formal error, not the smaller one with θ held fixed.

Weights are 1/(λ + RON²) as in the image fit (the shifted-Poisson likelihood).
Calibration windows: no flags at all, flux S/N ≥ ``min_snr`` (they carry the shape
information; faint windows add little and cost time), at most ``max_windows_per_ccd``
per CCD (the highest S/N). A CCD with fewer than ``min_windows_per_ccd`` windows keeps
the prior's coefficients and gets no covariance (``n_windows`` tells).
"""

from __future__ import annotations

import logging

import numba as nb
import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike, NDArray

from dpct.pipelines.aim._image_params import (
    COSMIC,
    _batch_arrays,
    _check_table,
    _inv3,
    bad_interval_mask,
    fit_arrays,
    fit_image_parameters,
)
from dpct.pipelines.aim._lsf_basis import (
    DAY_NS,
    LsfCalibration,
    edge_basis,
    term_powers,
    window_coefficients,
)

log = logging.getLogger(__name__)

_FREEZE_ROUND = 2
"""Round from which the set of calibration windows stays fixed. Before it, outliers are
only rejected above 30σ: a poor prior LSF leaves bright stars' residuals far above 6σ,
and rejecting those samples (or dropping the windows) would keep the brightest, most
informative windows out of the first steps."""


@nb.njit(parallel=True, cache=True)
def _normal_equations(
    values: np.ndarray, offsets: np.ndarray, order: np.ndarray, starts: np.ndarray,
    rows: np.ndarray, dcolour: np.ndarray, t_days: np.ndarray, ron: np.ndarray,
    theta: np.ndarray, coef: np.ndarray, cpow: np.ndarray, tpow: np.ndarray,
    bp: np.ndarray, big_n: np.ndarray, rhs: np.ndarray, chi2: np.ndarray,
    nsamp: np.ndarray,
) -> None:  # fmt: skip
    """Per CCD row g (windows order[starts[g]:starts[g + 1]]): the reduced normal matrix
    and right-hand side of the coefficient step, χ² and the number of samples."""
    nb1 = coef.shape[1]  # free basis functions
    nt = cpow.size
    kb = nb1 + 1
    for g in nb.prange(starts.size - 1):
        a_lo = np.empty(kb)
        g_lo = np.empty(kb)
        a_hi = np.empty(kb)
        g_hi = np.empty(kb)
        hc = np.empty(int(bp[2]) + 1)
        hh = np.empty(int(bp[3]) + 1)
        pj = np.empty((64, kb))  # P_j(k − c)
        dj = np.empty((64, kb))  # ∂P_j(k − c)/∂c
        a = np.empty(kb)
        mon = np.empty(nt)
        mm = np.empty((nb1, nb1))
        qq = np.empty((nb1, 3))
        ntt = np.empty((3, 3))
        inv = np.empty((3, 3))
        sb = np.empty(nb1)
        st = np.empty(3)
        jt = np.empty(3)
        red = np.empty((nb1, nb1))
        sred = np.empty(nb1)
        tmp = np.empty((nb1, 3))
        for idx in range(starts[g], starts[g + 1]):
            i = order[idx]
            o = offsets[i]
            n = offsets[i + 1] - o
            c, flux, bkg = theta[i, 0], theta[i, 1], theta[i, 2]
            r2 = ron[i] * ron[i]
            window_coefficients(coef, rows[i], dcolour[i], t_days[i], cpow, tpow, a)
            for t in range(nt):
                v = 1.0
                for _ in range(cpow[t]):
                    v *= dcolour[i]
                for _ in range(tpow[t]):
                    v *= t_days[i]
                mon[t] = v
            edge_basis(-0.5 - c, bp, a_lo, g_lo, hc, hh)
            for k in range(n):
                edge_basis(k + 0.5 - c, bp, a_hi, g_hi, hc, hh)
                for j in range(kb):
                    pj[k, j] = a_hi[j] - a_lo[j]
                    dj[k, j] = -(g_hi[j] - g_lo[j])
                    a_lo[j] = a_hi[j]
                    g_lo[j] = g_hi[j]
            mm[:, :] = 0.0
            qq[:, :] = 0.0
            ntt[:, :] = 0.0
            sb[:] = 0.0
            st[:] = 0.0
            for k in range(n):
                p = 0.0
                dp = 0.0
                for j in range(kb):
                    p += a[j] * pj[k, j]
                    dp += a[j] * dj[k, j]
                lam = flux * p + bkg
                w = 1.0 / max(max(lam, 0.0) + r2, 1e-2)
                res = values[o + k] - lam
                chi2[g] += w * res * res
                jt[0] = flux * dp
                jt[1] = p
                jt[2] = 1.0
                for r in range(3):
                    st[r] += w * jt[r] * res
                    for q in range(3):
                        ntt[r, q] += w * jt[r] * jt[q]
                for j in range(nb1):
                    bj = flux * pj[k, j + 1]
                    sb[j] += w * bj * res
                    for r in range(3):
                        qq[j, r] += w * bj * jt[r]
                    for jj in range(j + 1):
                        mm[j, jj] += w * bj * flux * pj[k, jj + 1]
            nsamp[g] += n
            # eliminate the window's (c, F, B): M − Q N_θθ⁻¹ Qᵀ, s_b − Q N_θθ⁻¹ s_θ
            if not _inv3(ntt, inv):
                continue
            for j in range(nb1):
                for r in range(3):
                    s = 0.0
                    for q in range(3):
                        s += qq[j, q] * inv[q, r]
                    tmp[j, r] = s
            for j in range(nb1):
                s = sb[j]
                for r in range(3):
                    s -= tmp[j, r] * st[r]
                sred[j] = s
                for jj in range(j + 1):
                    s = mm[j, jj]
                    for r in range(3):
                        s -= tmp[j, r] * qq[jj, r]
                    red[j, jj] = s
                    red[jj, j] = s
            # Kronecker with the monomials: parameter index j·nt + t
            for j in range(nb1):
                for t in range(nt):
                    pi = j * nt + t
                    rhs[g, pi] += sred[j] * mon[t]
                    for jj in range(nb1):
                        rv = red[j, jj] * mon[t]
                        for tt in range(nt):
                            big_n[g, pi, jj * nt + tt] += rv * mon[tt]


def _start(
    prior: LsfCalibration, colour_degree: int, time_degree: int, colour_ref: float, time_ref: int
) -> LsfCalibration:
    """The prior in the requested layout: its coefficients when layout and references
    agree, else its profile at the references as the constant term."""
    cpow, tpow = term_powers(colour_degree, time_degree)
    same = (
        np.array_equal(prior.colour_power, cpow)
        and np.array_equal(prior.time_power, tpow)
        and prior.colour_ref_mag == colour_ref
        and prior.time_ref_obmt_ns == time_ref
    )
    if same:
        return prior
    coef = np.zeros((prior.ccd_index.size, prior.basis.size - 1, cpow.size))
    a = prior.window_coefficients(prior.ccd_index, colour_ref, time_ref)
    coef[:, :, 0] = a[:, 1:]
    return LsfCalibration(
        prior.ccd_index, coef, cpow, tpow, colour_ref, time_ref, basis=prior.basis
    )


def calibrate_lsf(
    windows: pa.Table,
    prior: LsfCalibration,
    *,
    image_params: pa.Table | None = None,
    intervals: pa.Table | ArrayLike | None = None,
    iterations: int = 8,
    step_tol: float = 0.05,
    min_snr: float = 30.0,
    max_windows_per_ccd: int = 20_000,
    min_windows_per_ccd: int = 50,
    colour_degree: int = 2,
    time_degree: int = 0,
    colour_ref_mag: float | None = None,
    time_ref_obmt_ns: int | None = None,
    solution_id: int = 0,
    full_well_e: float = 5.0e5,
    reject_sigma: float = 6.0,
) -> LsfCalibration:
    """Calibrate the LSF of every CCD in ``windows`` (see the module doc).

    Parameters
    ----------
    windows
        ``af_windows`` table (a day, or more for a time term).
    prior
        Start LSF; it must cover the windows' CCDs (``LsfCalibration.default()`` does).
    image_params
        The windows' image parameters with the prior, if already fitted (saves a fit);
        only used to select the calibration windows.
    intervals
        Data-qualifier bad intervals: windows in them are not used.
    iterations, step_tol
        At most ``iterations`` rounds of image fit + coefficient step; stop once no
        coefficient moved by more than ``step_tol`` of its formal error (4–6 rounds
        from the default LSF).
    min_snr, max_windows_per_ccd, min_windows_per_ccd
        Window selection (flux S/N) and the per-CCD cap and minimum.
    colour_degree, time_degree
        Polynomial degrees of the coefficients in colour and in time (days). A day of
        data constrains a time slope poorly; use ``time_degree=1`` over several days or
        across an LSF change.
    colour_ref_mag, time_ref_obmt_ns
        References (default: the prior's colour reference, the windows' mid time).
    solution_id
        Stored in the calibration (the product's solution id).

    Returns
    -------
    LsfCalibration
        Coefficients, their covariance per CCD, windows used and χ²/dof per CCD.
    """
    _check_table(windows)
    if prior is None:
        raise ValueError("calibrate_lsf needs a prior LSF: LsfCalibration.default() or a product")
    if iterations < 1:
        raise ValueError("iterations must be ≥ 1")
    if image_params is None:
        image_params = fit_image_parameters(
            windows, prior, intervals, full_well_e=full_well_e, reject_sigma=reject_sigma
        )
    if image_params.num_rows != windows.num_rows:
        raise ValueError("image_params must have one row per window, in the windows' order")
    flags = image_params.column("flags").to_numpy()
    flux = image_params.column("flux_e").to_numpy().astype(np.float64)
    ferr = image_params.column("flux_err_e").to_numpy().astype(np.float64)
    ccd_all = windows.column("ccd_index").to_numpy().astype(np.int64)
    t_all = windows.column("obmt_ns").to_numpy().astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(np.isfinite(flux) & (ferr > 0), flux / ferr, 0.0)
    # COSMIC is allowed here: a poor prior LSF makes bright windows look like cosmic-ray
    # hits; every round keeps only the windows its own fit leaves unflagged
    ok = ((flags & ~COSMIC) == 0) & (snr >= min_snr)
    if intervals is not None:
        fov = windows.column("fov").to_numpy() if "fov" in windows.column_names else None
        ok &= ~bad_interval_mask(t_all, intervals, ccd_all, fov)
    sel = _select(np.flatnonzero(ok), ccd_all, snr, max_windows_per_ccd)
    if sel.size == 0:
        raise ValueError(
            f"no window qualifies for the LSF calibration (clean flags and S/N ≥ {min_snr})"
        )
    if colour_ref_mag is None:
        colour_ref_mag = prior.colour_ref_mag
    if time_ref_obmt_ns is None:
        ts = t_all[sel]
        time_ref_obmt_ns = int(ts.min() + (ts.max() - ts.min()) // 2)
    cal = _start(prior, colour_degree, time_degree, float(colour_ref_mag), int(time_ref_obmt_ns))
    sub = _batch_arrays(windows.take(pa.array(sel)).combine_chunks().to_batches()[0])
    present = np.unique(sub["ccd_index"])
    cal.rows_of(present)  # every CCD must be in the prior
    nb1, nt = cal.basis.size - 1, cal.n_terms
    npar = nb1 * nt
    converged = False
    frozen = None
    for it in range(iterations + 1):
        out, iout = fit_arrays(
            sub["values"], sub["offsets"], sub["ccd_index"], sub["bp_rp_mag"],
            sub["obmt_ns"], sub["ron_e"], cal, full_well_e=full_well_e,
            reject_sigma=reject_sigma if it >= _FREEZE_ROUND else max(reject_sigma, 30.0),
        )  # fmt: skip
        finite = np.all(np.isfinite(out[:, :6]), axis=1)
        if frozen is None:
            good = (iout[:, 3] == 0) & finite
            if it >= _FREEZE_ROUND:
                # from here on the same windows, so that the rounds minimise one χ²
                frozen = good
        else:
            good = frozen & finite
        big_n, rhs, chi2, nsamp, nwin = _accumulate(sub, out, good, cal)
        enough = nwin >= max(min_windows_per_ccd, 1)
        coef = cal.coefficients.copy()
        cov = np.full((cal.ccd_index.size, npar, npar), np.nan)
        worst = 0.0
        for g in np.flatnonzero(enough):
            try:
                inv = np.linalg.inv(big_n[g])
            except np.linalg.LinAlgError:
                enough[g] = False
                continue
            cov[g] = 0.5 * (inv + inv.T)
            step = inv @ rhs[g]
            worst = max(worst, float(np.max(np.abs(step) / np.sqrt(np.abs(np.diag(inv))))))
            coef[g] += step.reshape(nb1, nt)
        dof = nsamp - 3 * nwin - npar
        with np.errstate(invalid="ignore", divide="ignore"):
            chi2_dof = np.where(dof > 0, chi2 / np.maximum(dof, 1), np.nan)
        log.info(
            "LSF calibration round %d: %d windows, χ²/dof %.4f, largest step %.3g σ",
            it, int(good.sum()), float(chi2.sum() / max(dof[enough].sum(), 1)), worst,
        )  # fmt: skip
        if converged or it == iterations:
            break  # this round's covariance and χ² are those of the final coefficients
        converged = worst < step_tol
        cal = LsfCalibration(
            cal.ccd_index, coef, cal.colour_power, cal.time_power, cal.colour_ref_mag,
            cal.time_ref_obmt_ns, basis=cal.basis,
        )  # fmt: skip
    cov[~enough] = np.nan
    nwin = np.where(enough, nwin, 0)
    return LsfCalibration(
        cal.ccd_index, cal.coefficients, cal.colour_power, cal.time_power,
        cal.colour_ref_mag, cal.time_ref_obmt_ns, cov, int(solution_id), cal.basis,
        nwin.astype(np.int64), np.where(enough, chi2_dof, np.nan),
    )  # fmt: skip


def _select(
    cand: NDArray[np.int64], ccd: NDArray[np.int64], snr: NDArray[np.float64], cap: int
) -> NDArray[np.int64]:
    """At most ``cap`` candidates per CCD, the highest S/N first; sorted row order."""
    if cand.size == 0:
        return cand
    order = np.lexsort((-snr[cand], ccd[cand]))
    c = cand[order]
    cc = ccd[c]
    first = np.r_[0, np.flatnonzero(np.diff(cc)) + 1]
    rank = np.arange(c.size) - np.repeat(first, np.diff(np.r_[first, c.size]))
    return np.sort(c[rank < cap])


def _accumulate(
    sub: dict[str, np.ndarray], out: np.ndarray, good: np.ndarray, cal: LsfCalibration
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rows = cal.rows_of(sub["ccd_index"])
    idx = np.flatnonzero(good)
    order = idx[np.argsort(rows[idx], kind="stable")]
    n_ccd = cal.ccd_index.size
    counts = np.bincount(rows[idx], minlength=n_ccd)
    starts = np.r_[0, np.cumsum(counts)].astype(np.int64)
    npar = (cal.basis.size - 1) * cal.n_terms
    big_n = np.zeros((n_ccd, npar, npar))
    rhs = np.zeros((n_ccd, npar))
    chi2 = np.zeros(n_ccd)
    nsamp = np.zeros(n_ccd, dtype=np.int64)
    theta = np.ascontiguousarray(out[:, [0, 2, 4]])
    _normal_equations(
        sub["values"].astype(np.float64), sub["offsets"], order.astype(np.int64), starts,
        rows, sub["bp_rp_mag"] - cal.colour_ref_mag,
        (sub["obmt_ns"] - cal.time_ref_obmt_ns) / DAY_NS, sub["ron_e"], theta,
        cal.coefficients, cal.colour_power, cal.time_power, cal.basis.params(),
        big_n, rhs, chi2, nsamp,
    )  # fmt: skip
    return big_n, rhs, chi2, nsamp, counts
