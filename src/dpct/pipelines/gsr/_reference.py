"""Readable NumPy reference: the GSR system as an explicit SciPy CSR matrix.

Slow and memory-hungry (about 290 bytes per observation) but written for the reader:
the numba kernels and the LSQR solver are tested against it, and the benchmark runs
SciPy's LSQR on it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from dpct.pipelines.gsr._system import DAYS_PER_YEAR, N_ASTRO, N_AXES, N_INSTR, GsrSystem


def bspline_weights(tau: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(m, 4)`` uniform cubic B-spline weights at fractional positions ``tau`` in [0, 1]."""
    return np.stack(
        [
            (1 - tau) ** 3 / 6,
            (3 * tau**3 - 6 * tau**2 + 4) / 6,
            (-3 * tau**3 + 3 * tau**2 + 3 * tau + 1) / 6,
            tau**3 / 6,
        ],
        axis=1,
    )


def row_entries(
    system: GsrSystem, rows: slice = slice(None)
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Columns and weighted values of the observation rows, ``(m, nnz_per_row)`` each.

    Column order within a row: 5 astrometric, 12 attitude (knot-major), 6 instrument,
    then the global unknown if any.
    """
    lay = system.layout
    star = system.star[rows].astype(np.int64)
    knot = system.knot[rows].astype(np.int64)
    t = system.t[rows]
    coef = system.coef[rows].astype(np.float64)
    w = system.inv_sigma[rows].astype(np.float64)
    m = star.shape[0]
    nnz = N_ASTRO + N_AXES * 4 + N_INSTR + lay.n_glob
    cols = np.empty((m, nnz), np.int64)
    vals = np.empty((m, nnz))

    # astrometric: position partials, and the same times (t - epoch) in years for pm
    dt_years = (t - system.epoch) / DAYS_PER_YEAR
    cols[:, :N_ASTRO] = N_ASTRO * star[:, None] + np.arange(N_ASTRO)
    vals[:, 0] = coef[:, 0]
    vals[:, 1] = coef[:, 1]
    vals[:, 2] = coef[:, 2]
    vals[:, 3] = coef[:, 0] * dt_years
    vals[:, 4] = coef[:, 1] * dt_years

    # attitude: axis partial times the 4 non-zero B-splines of the row's knot interval
    tau = (t - system.knot_t0) / system.knot_dt - knot
    spline = bspline_weights(tau)
    k = N_ASTRO
    for q in range(4):
        for axis in range(N_AXES):
            cols[:, k] = lay.att_offset + N_AXES * (knot + q) + axis
            vals[:, k] = coef[:, 3 + axis] * spline[:, q]
            k += 1

    # instrument: the configuration's 6 unknowns
    cols[:, k : k + N_INSTR] = lay.instr_offset + system.instr_cols[system.instr[rows]]
    vals[:, k : k + N_INSTR] = coef[:, 6 : 6 + N_INSTR]
    k += N_INSTR
    if lay.n_glob:
        cols[:, k] = lay.glob_offset
        vals[:, k] = coef[:, 12]
    return cols, vals * w[:, None]


def to_csr(system: GsrSystem, *, with_constraints: bool = True) -> sp.csr_array:
    """The weighted matrix (observation rows, then constraint rows) as a SciPy CSR array.

    Filled in chunks into preallocated arrays, so the peak memory is the CSR itself
    (float64 values, int32 column indices when they fit) plus one chunk.
    """
    lay = system.layout
    m = system.n_rows
    nnz_row = N_ASTRO + N_AXES * 4 + N_INSTR + lay.n_glob
    index_dtype = np.int32 if m * nnz_row < 2**31 and lay.n_unknowns < 2**31 else np.int64
    indices = np.empty(m * nnz_row, index_dtype)
    data = np.empty(m * nnz_row)
    chunk = 1 << 20
    for lo in range(0, m, chunk):
        hi = min(m, lo + chunk)
        cols, vals = row_entries(system, slice(lo, hi))
        indices[lo * nnz_row : hi * nnz_row] = cols.ravel()
        data[lo * nnz_row : hi * nnz_row] = vals.ravel()
    indptr = np.arange(m + 1, dtype=np.int64) * nnz_row
    a = sp.csr_array((data, indices, indptr), shape=(m, lay.n_unknowns))
    c = system.constraints
    if with_constraints and c is not None and c.n_rows:
        ca = sp.csr_array((c.data, c.indices, c.indptr), shape=(c.n_rows, lay.n_unknowns))
        a = sp.vstack([a, ca], format="csr")
        if a.nnz < 2**31 and a.shape[1] < 2**31:  # vstack upcasts the indices to int64
            a.indices = a.indices.astype(np.int32)
            a.indptr = a.indptr.astype(np.int32)
    return a


def csr_nbytes_per_observation(a: sp.csr_array, n_rows: int) -> float:
    """Bytes per observation of a CSR matrix and its right-hand side (data+indices+indptr+b)."""
    return (a.data.nbytes + a.indices.nbytes + a.indptr.nbytes + 8 * a.shape[0]) / n_rows
