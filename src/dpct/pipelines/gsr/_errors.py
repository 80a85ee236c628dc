"""Standard errors of the unknowns, three ways, and why LSQR's own estimate is not enough.

- ``lsqr``: LSQR's running variance estimate (what AVU-GSR accumulates). It sums over the
  Krylov directions explored so far, so it misses the poorly determined directions that
  LSQR reaches last: on the simulated problems it is an order of magnitude too small.
  Reported, not trusted.
- ``block`` (astrometric only): each star's 5x5 normal block inverted, as AGIS's star
  update does; it treats attitude and instrument as known.
- ``schur`` (attitude, instrument, global): exact. The stars are eliminated star by star
  (their blocks are 5x5), leaving the dense normal matrix of the shared unknowns; the
  constraint equations are carried through with the Woodbury identity. Memory grows as
  the square of the shared unknowns, so it is for up to some 20 000 of them.
- ``monte_carlo`` (all unknowns, any size): the solve repeated on pure noise drawn from the
  weights; the spread of those solutions is the covariance of the estimator, constraints
  and all. Costs one solve per sample; relative precision ``1/sqrt(2 K)`` for K samples.

All are formal errors: they assume the observation sigmas are right (check the solve's
``unit_weight_error``) and, for ``schur`` and ``monte_carlo``, that the truth satisfies the
constraint equations (they only fix the null space, so it does by definition).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba as nb
import numpy as np
import scipy.linalg as sla
from numpy.typing import NDArray

from dpct.pipelines.gsr._exceptions import GsrInputError
from dpct.pipelines.gsr._kernels import F32, F64, I32, I64, star_normal_blocks
from dpct.pipelines.gsr._lsqr import LsqrResult, solve
from dpct.pipelines.gsr._system import DAYS_PER_YEAR, N_ASTRO, N_AXES, N_INSTR, GsrSystem

SCHUR_MAX_SHARED = 20_000
"""Largest number of shared unknowns for the dense Schur method (3.2 GB)."""

_INV_YEAR = 1.0 / DAYS_PER_YEAR


@dataclass(frozen=True, eq=False)
class StandardErrors:
    """Standard errors of the unknowns (same units as x).

    Attributes
    ----------
    sigma
        The recommended errors: ``block`` for the astrometric unknowns, ``schur`` or
        ``monte_carlo`` for the others (NaN where none was computed).
    astrometric_block
        ``(n_stars, 5)`` from each star's 5x5 normal block.
    shared_method
        How the attitude, instrument and global errors in ``sigma`` were computed.
    schur
        Exact errors of the shared unknowns (attitude, instrument, global), or None.
    monte_carlo
        Monte-Carlo errors of all unknowns, or None.
    n_samples
        Monte-Carlo samples behind ``monte_carlo`` (0 if none).
    lsqr
        LSQR's running estimate, if the solve kept it: for comparison only.
    """

    sigma: NDArray[np.float64]
    astrometric_block: NDArray[np.float64]
    shared_method: str
    schur: NDArray[np.float64] | None = None
    monte_carlo: NDArray[np.float64] | None = None
    n_samples: int = 0
    lsqr: NDArray[np.float64] | None = None


def astrometric_block_errors(system: GsrSystem) -> NDArray[np.float64]:
    """``(n_stars, 5)`` errors from each star's own 5x5 normal block (attitude etc. known)."""
    blocks = star_normal_blocks(system)
    d = 1.0 / np.sqrt(np.einsum("sii->si", blocks))
    inv = np.linalg.inv(blocks * d[:, :, None] * d[:, None, :])
    return np.sqrt(np.einsum("sii->si", inv)) * d


@nb.njit(cache=True)
def _schur_accumulate(
    star_ptr: I64, knot: I32, instr: I32, icols: I32, t: F64, coef: F32, isig: F32,
    knot_t0: float, inv_dt: float, epoch: float, n_att3: int, n_glob: int,
    cstar: F64, s_mat: F64, p_mat: F64, t_mat: F64,
) -> None:  # fmt: skip
    """Eliminate the stars one by one: ``S += A_g^T (I - A_s B^-1 A_s^T) A_g`` per star.

    Also accumulates ``P += A_g^T A_s B^-1 C_s^T`` and ``T += C_s B^-1 C_s^T`` for the
    constraint equations ``C_s`` (their star part, ``cstar[:, s, :]``).
    """
    n_g = s_mat.shape[0]
    k = cstar.shape[0]
    n_e = N_AXES * 4 + N_INSTR + n_glob
    loc = np.full(n_g, -1, np.int64)
    cols = np.empty(n_g, np.int64)
    max_rows = 0
    for s in range(star_ptr.shape[0] - 1):
        max_rows = max(max_rows, star_ptr[s + 1] - star_ptr[s])
    rc = np.empty((max_rows, n_e), np.int64)
    rv = np.empty((max_rows, n_e))
    ra = np.empty((max_rows, N_ASTRO))
    for s in range(star_ptr.shape[0] - 1):
        lo = star_ptr[s]
        nr = star_ptr[s + 1] - lo
        n_loc = 0
        for r in range(nr):
            i = lo + r
            w = np.float64(isig[i])
            dty = (t[i] - epoch) * _INV_YEAR
            aa = w * np.float64(coef[i, 0])
            ad = w * np.float64(coef[i, 1])
            ra[r, 0] = aa
            ra[r, 1] = ad
            ra[r, 2] = w * np.float64(coef[i, 2])
            ra[r, 3] = aa * dty
            ra[r, 4] = ad * dty
            j = knot[i]
            tau = (t[i] - knot_t0) * inv_dt - j
            sm = 1.0 - tau
            bs = (
                sm * sm * sm / 6.0,
                (3.0 * tau**3 - 6.0 * tau**2 + 4.0) / 6.0,
                (-3.0 * tau**3 + 3.0 * tau**2 + 3.0 * tau + 1.0) / 6.0,
                tau**3 / 6.0,
            )
            e = 0
            for q in range(4):
                for a in range(N_AXES):
                    gcol = N_AXES * (j + q) + a
                    if loc[gcol] < 0:
                        loc[gcol] = n_loc
                        cols[n_loc] = gcol
                        n_loc += 1
                    rc[r, e] = loc[gcol]
                    rv[r, e] = w * np.float64(coef[i, 3 + a]) * bs[q]
                    e += 1
            cfg = instr[i]
            for q in range(N_INSTR):
                gcol = n_att3 + icols[cfg, q]
                if loc[gcol] < 0:
                    loc[gcol] = n_loc
                    cols[n_loc] = gcol
                    n_loc += 1
                rc[r, e] = loc[gcol]
                rv[r, e] = w * np.float64(coef[i, 6 + q])
                e += 1
            if n_glob:
                gcol = n_g - 1
                if loc[gcol] < 0:
                    loc[gcol] = n_loc
                    cols[n_loc] = gcol
                    n_loc += 1
                rc[r, e] = loc[gcol]
                rv[r, e] = w * np.float64(coef[i, 12])
        b = np.zeros((N_ASTRO, N_ASTRO))
        g = np.zeros((n_loc, N_ASTRO))
        for r in range(nr):
            for p in range(N_ASTRO):
                for q in range(N_ASTRO):
                    b[p, q] += ra[r, p] * ra[r, q]
            for e in range(n_e):
                for p in range(N_ASTRO):
                    g[rc[r, e], p] += rv[r, e] * ra[r, p]
            for e1 in range(n_e):
                c1 = cols[rc[r, e1]]
                v1 = rv[r, e1]
                for e2 in range(n_e):
                    s_mat[c1, cols[rc[r, e2]]] += v1 * rv[r, e2]
        binv = np.linalg.inv(b)
        h = g @ binv
        for a in range(n_loc):
            ca = cols[a]
            for c in range(n_loc):
                acc = 0.0
                for p in range(N_ASTRO):
                    acc += h[a, p] * g[c, p]
                s_mat[ca, cols[c]] -= acc
        if k:
            cs = np.ascontiguousarray(cstar[:, s, :])
            hc = h @ cs.T
            for a in range(n_loc):
                for r in range(k):
                    p_mat[cols[a], r] += hc[a, r]
            t_mat += cs @ binv @ cs.T
        for a in range(n_loc):
            loc[cols[a]] = -1


def schur_errors(system: GsrSystem) -> NDArray[np.float64]:
    """Exact standard errors of the shared unknowns (attitude, instrument, global).

    With ``M = A^T A + C^T C`` the normal matrix (weighted, constraints included) and the
    truth satisfying the constraints, the solution's covariance is
    ``M^-1 - (M^-1 C^T)(C M^-1)``. The shared block of ``M^-1`` is the inverse of the
    Schur complement ``S`` left after eliminating the stars; the frame constraints, which
    couple all stars, enter through the Woodbury identity.

    Returns
    -------
    ndarray
        Errors of unknowns ``layout.att_offset:`` (``n_shared`` of them).

    Raises
    ------
    GsrInputError
        More than :data:`SCHUR_MAX_SHARED` shared unknowns: use ``monte_carlo_errors``.
    """
    lay = system.layout
    n_g = lay.n_shared
    if n_g > SCHUR_MAX_SHARED:
        raise GsrInputError(
            f"{n_g} attitude/instrument/global unknowns: the dense Schur complement would "
            f"need {8 * n_g**2 / 2**30:.1f} GiB; use monte_carlo_errors instead"
        )
    c = system.constraints
    k = 0 if c is None else c.n_rows
    cstar = np.zeros((k, lay.n_stars, N_ASTRO))
    c_g = np.zeros((k, n_g))
    if c is not None:
        for r in range(k):
            idx = c.indices[c.indptr[r] : c.indptr[r + 1]]
            val = c.data[c.indptr[r] : c.indptr[r + 1]]
            star = idx < lay.att_offset
            np.add.at(cstar[r].reshape(-1), idx[star], val[star])
            np.add.at(c_g[r], idx[~star] - lay.att_offset, val[~star])
    s_mat = np.zeros((n_g, n_g))
    p_mat = np.zeros((n_g, k))
    t_mat = np.zeros((k, k))
    _schur_accumulate(
        system.star_row_ranges(), system.knot, system.instr, system.instr_cols, system.t,
        system.coef, system.inv_sigma, system.knot_t0, 1.0 / system.knot_dt, system.epoch,
        N_AXES * lay.n_att, lay.n_glob, cstar, s_mat, p_mat, t_mat,
    )  # fmt: skip
    # S = F - Q + Cg'Cg - P Cg - Cg'P' - Cg'T Cg + (P + Cg'T)(I + T)^-1 (P + Cg'T)'
    pc = p_mat + c_g.T @ t_mat
    i_t = np.eye(k) + t_mat
    s_mat += c_g.T @ c_g - p_mat @ c_g - c_g.T @ p_mat.T - c_g.T @ t_mat @ c_g
    s_mat += pc @ np.linalg.solve(i_t, pc.T)
    s_mat = 0.5 * (s_mat + s_mat.T)
    chol = sla.cho_factor(s_mat, lower=True, overwrite_a=True, check_finite=False)
    l_inv, info = sla.lapack.dtrtri(chol[0], lower=1)
    if info != 0:
        raise GsrInputError("the reduced normal matrix is singular: the system is rank-deficient")
    l_inv = np.tril(l_inv)
    var = np.einsum("ij,ij->j", l_inv, l_inv)  # diag(S^-1) = column norms of L^-1
    # the constraints' share: X_g = S^-1 (Cg' - (P + Cg'T)(I + T)^-1), var -= rows of X_g^2
    if k:
        rhs = c_g.T - pc @ np.linalg.inv(i_t)
        x_g = sla.cho_solve(chol, rhs, check_finite=False)
        var -= np.einsum("ij,ij->i", x_g, x_g)
    return np.sqrt(np.maximum(var, 0.0))


def monte_carlo_errors(
    system: GsrSystem, *, n_samples: int = 32, seed: int = 0, **solve_kwargs: Any
) -> NDArray[np.float64]:
    """Standard errors of all unknowns from ``n_samples`` solves on simulated noise.

    Each sample replaces the observations by ``sigma * N(0, 1)`` (and the constraint
    right-hand sides by 0); its solution is a draw of the estimator's error, so the mean
    square over the samples estimates the variance, constraints and all. Relative
    precision ``1/sqrt(2 n_samples)``.

    Parameters
    ----------
    system
        The system (its right-hand side is not used).
    n_samples
        Number of solves.
    seed
        Seed of the noise.
    **solve_kwargs
        Passed to :func:`solve` (use the tolerances of the real solve: loose ones stop
        before the poorly determined directions are reached, and underestimate them).
    """
    rng = np.random.default_rng(seed)
    c = system.constraints
    zero_c = (
        None if c is None else type(c)(c.indptr, c.indices, c.data, np.zeros_like(c.rhs), c.names)
    )
    base = system.with_constraints(zero_c)
    w = base.inv_sigma.astype(np.float64)
    solve_kwargs.setdefault("calc_var", False)
    acc = np.zeros(system.layout.n_unknowns)
    for _ in range(n_samples):
        noise = rng.standard_normal(system.n_rows) / w
        x = solve(base.with_rhs(noise), **solve_kwargs).x
        acc += x * x
    return np.sqrt(acc / n_samples)


def standard_errors(
    system: GsrSystem,
    result: LsqrResult | None = None,
    *,
    method: str = "schur",
    n_samples: int = 32,
    seed: int = 0,
    **solve_kwargs: Any,
) -> StandardErrors:
    """Honest standard errors of a solve's unknowns.

    Parameters
    ----------
    system
        The system that was solved.
    result
        Its solution, to report LSQR's own estimate alongside (optional).
    method
        For the attitude, instrument and global unknowns: ``"schur"`` (exact; up to
        :data:`SCHUR_MAX_SHARED` of them), ``"monte_carlo"`` (any size, ``n_samples``
        solves), or ``"none"``. Astrometric errors always come from the star blocks.
    n_samples, seed, **solve_kwargs
        For ``"monte_carlo"``: see :func:`monte_carlo_errors`.
    """
    lay = system.layout
    block = astrometric_block_errors(system)
    sigma = np.full(lay.n_unknowns, np.nan)
    sigma[: lay.att_offset] = block.ravel()
    schur = mc = None
    if method == "schur":
        schur = schur_errors(system)
        sigma[lay.att_offset :] = schur
    elif method == "monte_carlo":
        mc = monte_carlo_errors(system, n_samples=n_samples, seed=seed, **solve_kwargs)
        sigma[lay.att_offset :] = mc[lay.att_offset :]
    elif method != "none":
        raise GsrInputError(f"method={method!r}: use 'schur', 'monte_carlo' or 'none'")
    return StandardErrors(
        sigma=sigma,
        astrometric_block=block,
        shared_method=method,
        schur=schur,
        monte_carlo=mc,
        n_samples=n_samples if mc is not None else 0,
        lsqr=None if result is None or result.var is None else np.sqrt(result.var),
    )
