"""Numba kernels: one pass over the rows computes A·v and A^T·u together, in parallel.

The rows are split into work blocks at star boundaries (``GsrSystem.blocks``). A block
owns its stars, so it writes their astrometric part of ``A^T u`` directly; the shared
unknowns (attitude, instrument, global) go to a private accumulator per block, summed in
block order afterwards. Block boundaries depend on the system, not on the thread count,
so every sum is formed in the same order on any machine and a resumed solve continues
bit for bit. Tested against the CSR reference in ``_reference.py``.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numpy.typing import NDArray

from dpct.pipelines.gsr._system import DAYS_PER_YEAR, N_ASTRO, N_AXES, N_INSTR, GsrSystem

_INV_YEAR = 1.0 / DAYS_PER_YEAR

PARALLEL_MIN_ROWS = 200_000
"""Below this many rows a pass takes ~1 ms: one thread beats waking (or waiting for) two."""

# array aliases for the kernels' signatures (numba reads none of them)
F64 = NDArray[np.float64]
F32 = NDArray[np.float32]
I32 = NDArray[np.int32]
I64 = NDArray[np.int64]


@nb.njit(cache=True, inline="always")
def _bspline(tau: float) -> tuple[float, float, float, float]:
    """Uniform cubic B-spline weights on a knot interval, ``0 <= tau <= 1`` (they sum to 1)."""
    s = 1.0 - tau
    t2 = tau * tau
    t3 = t2 * tau
    sixth = 1.0 / 6.0  # a multiplication: divisions are slow, and this is the hot loop
    return (
        s * s * s * sixth,
        (3.0 * t3 - 6.0 * t2 + 4.0) * sixth,
        (-3.0 * t3 + 3.0 * t2 + 3.0 * tau + 1.0) * sixth,
        t3 * sixth,
    )


@nb.njit(parallel=True, cache=True)
def _row_pass(
    star: I32, knot: I32, instr: I32, icols: I32, t: F64, coef: F32, rhs: F64, isig: F32,
    u: F64, vs: F64, c_rhs: float, c_av: float, c_u: float, blocks: I64, acc: F64, out: F64,
    knot_t0: float, inv_dt: float, epoch: float, att_off: int, instr_off: int, n_glob: int,
) -> F64:  # fmt: skip
    """For every row: ``u_i <- c_rhs*w_i*rhs_i + c_av*(A vs)_i + c_u*u_i`` and ``out += A_i^T u_i``.

    Returns the per-block sums of ``u_i**2``. ``out``'s astrometric part must be zero on
    entry; the shared part is left in ``acc`` (one row per block) for :func:`_reduce`.
    """
    n_blocks = blocks.shape[0] - 1
    n_att3 = instr_off - att_off
    glob = vs.shape[0] - 1
    acc_glob = acc.shape[1] - 1
    ss = np.zeros(n_blocks)
    for b in nb.prange(n_blocks):
        acc_b = acc[b]
        acc_b[:] = 0.0
        s_b = 0.0
        # a block's rows are sorted by star and it owns those stars: sum a star's part of
        # A^T u in registers and store it once
        cur = star[blocks[b]]
        o0 = o1 = o2 = o3 = o4 = 0.0
        for i in range(blocks[b], blocks[b + 1]):
            s = star[i]
            if s != cur:
                c5 = N_ASTRO * cur
                out[c5] += o0
                out[c5 + 1] += o1
                out[c5 + 2] += o2
                out[c5 + 3] += o3
                out[c5 + 4] += o4
                o0 = o1 = o2 = o3 = o4 = 0.0
                cur = s
            s5 = N_ASTRO * s
            ti = t[i]
            dty = (ti - epoch) * _INV_YEAR
            j = knot[i]
            b0, b1, b2, b3 = _bspline((ti - knot_t0) * inv_dt - j)
            # everything the row needs, loaded once: stores into acc and out might alias
            # the inputs as far as the compiler knows, and would force reloads
            wi = np.float64(isig[i])
            aa = np.float64(coef[i, 0])
            ad = np.float64(coef[i, 1])
            ap = np.float64(coef[i, 2])
            px = np.float64(coef[i, 3])
            py = np.float64(coef[i, 4])
            pz = np.float64(coef[i, 5])
            q0 = np.float64(coef[i, 6])
            q1 = np.float64(coef[i, 7])
            q2 = np.float64(coef[i, 8])
            q3 = np.float64(coef[i, 9])
            q4 = np.float64(coef[i, 10])
            q5 = np.float64(coef[i, 11])
            qg = np.float64(coef[i, 12]) if n_glob else 0.0
            cfg = instr[i]
            k0 = n_att3 + icols[cfg, 0]
            k1 = n_att3 + icols[cfg, 1]
            k2 = n_att3 + icols[cfg, 2]
            k3 = n_att3 + icols[cfg, 3]
            k4 = n_att3 + icols[cfg, 4]
            k5 = n_att3 + icols[cfg, 5]
            a3 = N_AXES * j
            ab = att_off + a3
            un = 0.0
            if c_av != 0.0:
                # short independent sums, not one chain of 24 dependent multiply-adds:
                # the chain's latency, not memory, would set the pace
                da = (aa * vs[s5] + ad * vs[s5 + 1]) + ap * vs[s5 + 2]
                dp = dty * (aa * vs[s5 + 3] + ad * vs[s5 + 4])
                sx = (b0 * vs[ab] + b1 * vs[ab + 3]) + (b2 * vs[ab + 6] + b3 * vs[ab + 9])
                sy = (b0 * vs[ab + 1] + b1 * vs[ab + 4]) + (b2 * vs[ab + 7] + b3 * vs[ab + 10])
                sz = (b0 * vs[ab + 2] + b1 * vs[ab + 5]) + (b2 * vs[ab + 8] + b3 * vs[ab + 11])
                di = (q0 * vs[att_off + k0] + q1 * vs[att_off + k1]) + q2 * vs[att_off + k2]
                dj = (q3 * vs[att_off + k3] + q4 * vs[att_off + k4]) + q5 * vs[att_off + k5]
                if n_glob:
                    di += qg * vs[glob]
                d = ((da + dp) + (px * sx + py * sy + pz * sz)) + (di + dj)
                un = c_av * (wi * d)
            if c_rhs != 0.0:
                un += c_rhs * (wi * rhs[i])
            if c_u != 0.0:
                un += c_u * u[i]
            u[i] = un
            s_b += un * un
            g = un * wi
            o0 += g * aa
            o1 += g * ad
            o2 += g * ap
            o3 += g * dty * aa
            o4 += g * dty * ad
            gx = g * px
            gy = g * py
            gz = g * pz
            acc_b[a3] += gx * b0
            acc_b[a3 + 1] += gy * b0
            acc_b[a3 + 2] += gz * b0
            acc_b[a3 + 3] += gx * b1
            acc_b[a3 + 4] += gy * b1
            acc_b[a3 + 5] += gz * b1
            acc_b[a3 + 6] += gx * b2
            acc_b[a3 + 7] += gy * b2
            acc_b[a3 + 8] += gz * b2
            acc_b[a3 + 9] += gx * b3
            acc_b[a3 + 10] += gy * b3
            acc_b[a3 + 11] += gz * b3
            acc_b[k0] += g * q0
            acc_b[k1] += g * q1
            acc_b[k2] += g * q2
            acc_b[k3] += g * q3
            acc_b[k4] += g * q4
            acc_b[k5] += g * q5
            if n_glob:
                acc_b[acc_glob] += g * qg
        if blocks[b + 1] > blocks[b]:
            c5 = N_ASTRO * cur
            out[c5] += o0
            out[c5 + 1] += o1
            out[c5 + 2] += o2
            out[c5 + 3] += o3
            out[c5 + 4] += o4
        ss[b] = s_b
    return ss


@nb.njit(cache=True)
def _reduce(acc: F64, out: F64, offset: int) -> None:
    """``out[offset + k] = sum_b acc[b, k]``, adding blocks in their order.

    Serial: a few hundred thousand additions take less time than waking the threads
    (on a loaded machine, much less).
    """
    n_blocks, n = acc.shape
    for k in range(n):
        out[offset + k] = acc[0, k]
    for b in range(1, n_blocks):
        for k in range(n):
            out[offset + k] += acc[b, k]


@nb.njit(cache=True)
def _constraint_pass(
    indptr: I64, indices: I64, data: F64, rhs: F64, u: F64, vs: F64,
    c_rhs: float, c_av: float, c_u: float, out: F64,
) -> float:  # fmt: skip
    """The same update as :func:`_row_pass` for the (few, long) constraint rows, serially."""
    ss = 0.0
    for r in range(rhs.shape[0]):
        un = 0.0
        if c_av != 0.0:
            d = 0.0
            for p in range(indptr[r], indptr[r + 1]):
                d += data[p] * vs[indices[p]]
            un = c_av * d
        if c_rhs != 0.0:
            un += c_rhs * rhs[r]
        if c_u != 0.0:
            un += c_u * u[r]
        u[r] = un
        ss += un * un
        for p in range(indptr[r], indptr[r + 1]):
            out[indices[p]] += un * data[p]
    return ss


@nb.njit(parallel=True, cache=True)
def _column_sq_norms(
    star: I32, knot: I32, instr: I32, icols: I32, t: F64, coef: F32, isig: F32,
    blocks: I64, acc: F64, out: F64,
    knot_t0: float, inv_dt: float, epoch: float, n_att3: int, n_glob: int,
) -> None:  # fmt: skip
    """Squared column norms of the weighted observation rows (astro into out, shared into acc)."""
    n_blocks = blocks.shape[0] - 1
    for b in nb.prange(n_blocks):
        acc[b, :] = 0.0
        for i in range(blocks[b], blocks[b + 1]):
            s5 = N_ASTRO * star[i]
            ti = t[i]
            dty = (ti - epoch) * _INV_YEAR
            j = knot[i]
            bs = _bspline((ti - knot_t0) * inv_dt - j)
            w2 = np.float64(isig[i]) ** 2
            aa = np.float64(coef[i, 0])
            ad = np.float64(coef[i, 1])
            ap = np.float64(coef[i, 2])
            out[s5] += w2 * aa * aa
            out[s5 + 1] += w2 * ad * ad
            out[s5 + 2] += w2 * ap * ap
            out[s5 + 3] += w2 * dty * dty * aa * aa
            out[s5 + 4] += w2 * dty * dty * ad * ad
            a3 = N_AXES * j
            for q in range(4):
                for a in range(N_AXES):
                    c = np.float64(coef[i, 3 + a]) * bs[q]
                    acc[b, a3 + 3 * q + a] += w2 * c * c
            cfg = instr[i]
            for k in range(N_INSTR):
                c = np.float64(coef[i, 6 + k])
                acc[b, n_att3 + icols[cfg, k]] += w2 * c * c
            if n_glob:
                c = np.float64(coef[i, 12])
                acc[b, acc.shape[1] - 1] += w2 * c * c


@nb.njit(parallel=True, cache=True)
def _star_blocks(star_ptr: I64, t: F64, coef: F32, isig: F32, epoch: float, out: F64) -> None:
    """Per-star 5x5 normal matrix of the weighted astrometric partials."""
    for s in nb.prange(star_ptr.shape[0] - 1):
        for i in range(star_ptr[s], star_ptr[s + 1]):
            dty = (t[i] - epoch) * _INV_YEAR
            w = np.float64(isig[i])
            aa = w * np.float64(coef[i, 0])
            ad = w * np.float64(coef[i, 1])
            a = (aa, ad, w * np.float64(coef[i, 2]), aa * dty, ad * dty)
            for p in range(N_ASTRO):
                for q in range(p, N_ASTRO):
                    out[s, p, q] += a[p] * a[q]
        for p in range(N_ASTRO):
            for q in range(p):
                out[s, p, q] = out[s, q, p]


class RowOperator:
    """Applies the fused row pass of a system, owning the scratch it needs.

    Holds the LSQR vector u for the observation rows (``u_obs``, float64, 8 B per row) and
    for the constraint rows (``u_con``), one accumulator per work block for the shared
    unknowns, and the output vector ``A^T u``.
    """

    def __init__(self, system: GsrSystem) -> None:
        self.system = system
        lay = system.layout
        self.n = lay.n_unknowns
        self.u_obs = np.zeros(system.n_rows)
        self.u_con = np.zeros(system.n_constraints)
        self.acc = np.zeros((len(system.blocks) - 1, lay.n_shared))
        self.out = np.zeros(self.n)

    def apply(
        self, vs: NDArray[np.float64], c_rhs: float, c_av: float, c_u: float
    ) -> tuple[NDArray[np.float64], float]:
        """Update ``u <- c_rhs*b + c_av*A vs + c_u*u`` (weighted), return ``(A^T u, |u|^2)``.

        With ``c_av = 1, c_u = -alpha`` this is LSQR's bidiagonalisation step; with
        ``c_rhs = 1, c_av = -1`` it forms the residual ``b - A x``. The returned vector is
        an internal buffer, overwritten by the next call.
        """
        s = self.system
        lay = s.layout
        out = self.out
        out[: lay.att_offset] = 0.0
        threads = nb.get_num_threads()
        if s.n_rows < PARALLEL_MIN_ROWS:
            nb.set_num_threads(1)  # same blocks, same sums: only the speed changes
        try:
            ss = self._pass(vs, c_rhs, c_av, c_u)
        finally:
            nb.set_num_threads(threads)
        _reduce(self.acc, out, lay.att_offset)
        total = float(np.sum(ss))
        c = s.constraints
        if c is not None:
            total += _constraint_pass(
                c.indptr, c.indices, c.data, c.rhs, self.u_con, vs,
                float(c_rhs), float(c_av), float(c_u), out,
            )  # fmt: skip
        return out, total

    def _pass(self, vs: F64, c_rhs: float, c_av: float, c_u: float) -> F64:
        s = self.system
        lay = s.layout
        return _row_pass(
            s.star, s.knot, s.instr, s.instr_cols, s.t, s.coef, s.rhs, s.inv_sigma,
            self.u_obs, vs, float(c_rhs), float(c_av), float(c_u), s.blocks, self.acc, self.out,
            s.knot_t0, 1.0 / s.knot_dt, s.epoch, lay.att_offset, lay.instr_offset, lay.n_glob,
        )  # fmt: skip

    def get_u(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Copies of u for the observation rows and the constraint rows (for checkpoints)."""
        return self.u_obs.copy(), self.u_con.copy()

    def set_u(self, u_obs: NDArray[np.float64], u_con: NDArray[np.float64]) -> None:
        self.u_obs[:] = u_obs
        self.u_con[:] = u_con

    @property
    def u(self) -> NDArray[np.float64]:
        """The current u, observation rows then constraint rows (a copy)."""
        return np.concatenate([self.u_obs, self.u_con])


def matvec(system: GsrSystem, x: NDArray[np.float64]) -> NDArray[np.float64]:
    """``A x`` for the weighted matrix: observation rows, then constraint rows."""
    op = RowOperator(system)
    op.apply(np.ascontiguousarray(x, np.float64), 0.0, 1.0, 0.0)
    return op.u


def rmatvec(system: GsrSystem, y: NDArray[np.float64]) -> NDArray[np.float64]:
    """``A^T y`` for the weighted matrix; ``y`` holds observation rows then constraint rows."""
    op = RowOperator(system)
    y = np.asarray(y, np.float64)
    op.u_obs[:] = y[: system.n_rows]
    op.u_con[:] = y[system.n_rows :]
    out, _ = op.apply(np.zeros(op.n), 0.0, 0.0, 1.0)
    return out.copy()


def observation_column_norms(system: GsrSystem) -> NDArray[np.float64]:
    """Column norms of the weighted observation rows only (zero: the data miss an unknown)."""
    lay = system.layout
    out = np.zeros(lay.n_unknowns)
    acc = np.zeros((len(system.blocks) - 1, lay.n_shared))
    _column_sq_norms(
        system.star, system.knot, system.instr, system.instr_cols, system.t, system.coef,
        system.inv_sigma, system.blocks, acc, out,
        system.knot_t0, 1.0 / system.knot_dt, system.epoch, N_AXES * lay.n_att, lay.n_glob,
    )  # fmt: skip
    _reduce(acc, out, lay.att_offset)
    return np.sqrt(out)


def column_norms(system: GsrSystem) -> NDArray[np.float64]:
    """Column norms of the full weighted matrix (observations and constraints)."""
    sq = observation_column_norms(system) ** 2
    c = system.constraints
    if c is not None:
        sq += np.bincount(c.indices, weights=c.data**2, minlength=sq.shape[0])
    return np.sqrt(sq)


def star_normal_blocks(system: GsrSystem) -> NDArray[np.float64]:
    """``(n_stars, 5, 5)``: each star's normal matrix ``sum_i w_i^2 a_i a_i^T`` (astrometric)."""
    out = np.zeros((system.layout.n_stars, N_ASTRO, N_ASTRO))
    _star_blocks(system.star_row_ranges(), system.t, system.coef, system.inv_sigma,
                 system.epoch, out)  # fmt: skip
    return out
