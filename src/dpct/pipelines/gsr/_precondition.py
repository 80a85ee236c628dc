"""Right preconditioners for LSQR: column scaling, or 5x5 star blocks plus column scaling.

LSQR solves ``min ||A M y - b||`` and returns ``x = M y``. With ``"columns"`` (AVU-GSR's
PC-LSQR) M is diagonal, ``M_jj = 1 / ||A_j||``. With ``"stars"`` each star's 5 columns
are made orthonormal together, ``M_s = R_s^-1`` with ``R_s^T R_s`` the star's 5x5 normal
block (as AGIS's star update uses it), and the other unknowns are column-scaled. Position,
parallax and proper motion of a star seen over a short arc are strongly correlated;
scaling columns leaves that correlation in the matrix and LSQR pays for it in iterations,
the block preconditioner removes it at a cost of 25 multiply-adds per star and iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from dpct.pipelines.gsr._exceptions import LayoutError
from dpct.pipelines.gsr._kernels import star_normal_blocks
from dpct.pipelines.gsr._system import N_ASTRO, GsrSystem

PreconditionKind = Literal["stars", "columns", "none"]


@dataclass(frozen=True, eq=False)
class Preconditioner:
    """``M``, the right preconditioner: ``x = M y``.

    Attributes
    ----------
    kind
        ``"stars"``, ``"columns"`` or ``"none"``.
    diag
        Diagonal of M for the unknowns not covered by star blocks (all of them unless
        ``kind == "stars"``; there the astrometric entries are unused).
    star_inv
        ``(n_stars, 5, 5)`` upper-triangular ``R_s^-1``, or None.
    """

    kind: PreconditionKind
    diag: NDArray[np.float64]
    star_inv: NDArray[np.float64] | None = None

    def apply(self, y: NDArray[np.float64]) -> NDArray[np.float64]:
        """``M y``."""
        x = self.diag * y
        if self.star_inv is not None:
            ns = self.star_inv.shape[0]
            ys = y[: N_ASTRO * ns].reshape(ns, N_ASTRO)
            x[: N_ASTRO * ns] = np.einsum("sij,sj->si", self.star_inv, ys).ravel()
        return x

    def apply_t(self, g: NDArray[np.float64]) -> NDArray[np.float64]:
        """``M^T g``."""
        y = self.diag * g
        if self.star_inv is not None:
            ns = self.star_inv.shape[0]
            gs = g[: N_ASTRO * ns].reshape(ns, N_ASTRO)
            y[: N_ASTRO * ns] = np.einsum("sji,sj->si", self.star_inv, gs).ravel()
        return y

    def solve(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """``M^-1 x``: a point in the unknowns of the preconditioned problem."""
        y = x / self.diag
        if self.star_inv is not None:
            ns = self.star_inv.shape[0]
            xs = x[: N_ASTRO * ns].reshape(ns, N_ASTRO)
            y[: N_ASTRO * ns] = np.linalg.solve(self.star_inv, xs[:, :, None])[:, :, 0].ravel()
        return y

    def diag_of_product(self, d: NDArray[np.float64]) -> NDArray[np.float64]:
        """``(M d)**2`` elementwise: how LSQR's variance estimate maps back to x."""
        md = self.apply(d)
        return md * md

    def to_sparse(self) -> sp.csr_array:
        """M as a SciPy sparse matrix, to give SciPy's LSQR the same preconditioning."""
        if self.star_inv is None:
            return sp.diags_array(self.diag, format="csr")
        ns = self.star_inv.shape[0]
        rows = np.repeat(np.arange(N_ASTRO * ns), N_ASTRO)
        cols = N_ASTRO * np.arange(ns)[:, None, None] + np.zeros((1, N_ASTRO, 1), int)
        cols = (cols + np.arange(N_ASTRO)[None, None, :]).ravel()
        astro = sp.csr_array(
            (self.star_inv.ravel(), (rows, cols)), shape=(N_ASTRO * ns, N_ASTRO * ns)
        )
        rest = sp.diags_array(self.diag[N_ASTRO * ns :])
        return sp.block_diag([astro, rest], format="csr")

    def fingerprint_bytes(self) -> bytes:
        """Bytes that identify M (for checkpoints)."""
        parts = [self.kind.encode(), self.diag.tobytes()]
        if self.star_inv is not None:
            parts.append(self.star_inv.tobytes())
        return b"".join(parts)


def make_preconditioner(
    system: GsrSystem,
    kind: PreconditionKind,
    obs_norms: NDArray[np.float64] | None = None,
    reduce: Callable[[Any], Any] | None = None,
) -> Preconditioner:
    """Build M for a system from its column norms and star blocks (constraints included).

    Parameters
    ----------
    system
        The system.
    kind
        ``"stars"`` (default of ``solve``), ``"columns"`` or ``"none"``.
    obs_norms
        Column norms of the observation rows, if already computed (``validate_system``).
    reduce
        Sum over MPI ranks when ``system`` holds one rank's rows (``obs_norms`` must then
        be the global norms).
    """
    lay = system.layout
    n = lay.n_unknowns
    if kind == "none":
        return Preconditioner("none", np.ones(n))
    if kind not in ("stars", "columns"):
        raise LayoutError(f"precondition={kind!r}: use 'stars', 'columns' or 'none'")
    if obs_norms is None:
        from dpct.pipelines.gsr._kernels import observation_column_norms

        obs_norms = observation_column_norms(system)
    sq = obs_norms**2
    c = system.constraints
    if c is not None:
        sq = sq + np.bincount(c.indices, weights=c.data**2, minlength=n)
    diag = 1.0 / np.sqrt(sq)
    if kind == "columns":
        return Preconditioner("columns", diag)
    blocks = star_normal_blocks(system)
    if reduce is not None:
        blocks = reduce(blocks)
    if c is not None:
        blocks += _constraint_star_blocks(system)
    # scale first: the Cholesky of the column-normalised block is better conditioned
    d = 1.0 / np.sqrt(np.einsum("sii->si", blocks))
    chol = np.linalg.cholesky(blocks * d[:, :, None] * d[:, None, :])
    # B = Dd^-1 L L^T Dd^-1 = R^T R with R = L^T Dd^-1  =>  R^-1 = Dd L^-T
    eye = np.broadcast_to(np.eye(N_ASTRO), chol.shape)
    l_inv = np.linalg.solve(chol, eye)
    star_inv = d[:, :, None] * np.swapaxes(l_inv, 1, 2)
    diag[: lay.att_offset] = 1.0
    return Preconditioner("stars", diag, np.ascontiguousarray(star_inv))


def _constraint_star_blocks(system: GsrSystem) -> NDArray[np.float64]:
    """The constraint equations' share of each star's 5x5 normal block."""
    c = system.constraints
    lay = system.layout
    assert c is not None
    out = np.zeros((lay.n_stars, N_ASTRO, N_ASTRO))
    for r in range(c.n_rows):
        idx = c.indices[c.indptr[r] : c.indptr[r + 1]]
        val = c.data[c.indptr[r] : c.indptr[r + 1]]
        astro = idx < lay.att_offset
        dense = np.zeros(lay.att_offset)
        np.add.at(dense, idx[astro], val[astro])
        rows = dense.reshape(lay.n_stars, N_ASTRO)
        out += rows[:, :, None] * rows[:, None, :]
    return out
