"""The fused row pass on an NVIDIA GPU (CuPy), for ``solve(..., device="gpu")``.

The observation rows live on the GPU for the whole solve; per iteration only the
unknowns' vectors cross the bus (``vs`` in, ``A^T u`` out: 8 bytes per unknown each way,
against ~100 bytes per observation that stay put), so LSQR's scalar recurrences stay on
the CPU unchanged and a checkpoint written on one device resumes on the other.

Two kernels per pass. The row kernel (a few blocks per multiprocessor, striding over
the rows) forms ``u_i``, its square (block-reduced) and the shared unknowns' part of
``A^T u``: attitude columns with global atomic adds (they are many and each row hits
other ones), the few instrument and global columns in a per-block shared-memory
accumulator flushed once per block (every row hits them); the star
kernel (a thread per star) sums each star's five astrometric entries from its rows,
which are contiguous, with no atomics. The constraint rows (few and long) are two sparse
products on the device.
Atomic adds change the order of the shared sums, so results agree with the CPU pass to
rounding (~1e-15 relative per pass), not bit for bit.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from dpct.pipelines.gsr._system import DAYS_PER_YEAR, GsrSystem

_SOURCE = r"""
__device__ __forceinline__ void bspline(double tau, double* b) {
    double s = 1.0 - tau, t2 = tau * tau, t3 = t2 * tau, k = 1.0 / 6.0;
    b[0] = s * s * s * k;
    b[1] = (3.0 * t3 - 6.0 * t2 + 4.0) * k;
    b[2] = (-3.0 * t3 + 3.0 * t2 + 3.0 * tau + 1.0) * k;
    b[3] = t3 * k;
}

extern "C" __global__ void rows(
    const int* __restrict__ star, const int* __restrict__ knot, const int* __restrict__ instr,
    const int* __restrict__ icols, const double* __restrict__ t, const float* __restrict__ coef,
    const double* __restrict__ rhs, const float* __restrict__ isig, double* __restrict__ u,
    const double* __restrict__ vs, double c_rhs, double c_av, double c_u,
    double* __restrict__ out, double* __restrict__ ss, long long m, int ncoef,
    double knot_t0, double inv_dt, double epoch, double inv_year,
    long long att_off, long long instr_off, int n_glob, long long glob, int n_tail)
{
    // Shared memory: the block's sum of u^2, then (when n_tail > 0) a private
    // accumulator for the few, hot instrument and global columns, flushed once per block:
    // every row hits them, and global atomics on a few hundred addresses would serialise.
    extern __shared__ double smem[];
    double* part = smem;
    double* tail = smem + blockDim.x;
    for (int k = threadIdx.x; k < n_tail; k += blockDim.x) tail[k] = 0.0;
    __syncthreads();
    double sq = 0.0;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < m; i += stride) {
        int s = star[i];
        long long s5 = 5LL * s;
        double ti = t[i], dty = (ti - epoch) * inv_year;
        int j = knot[i];
        double b[4];
        bspline((ti - knot_t0) * inv_dt - j, b);
        const float* c = coef + i * ncoef;
        double wi = isig[i];
        double aa = c[0], ad = c[1], ap = c[2], px = c[3], py = c[4], pz = c[5];
        const int* ic = icols + 6 * instr[i];
        long long ab = att_off + 3LL * j;
        double un = 0.0;
        if (c_av != 0.0) {
            double d = (aa * vs[s5] + ad * vs[s5 + 1]) + ap * vs[s5 + 2];
            d += dty * (aa * vs[s5 + 3] + ad * vs[s5 + 4]);
            for (int q = 0; q < 4; ++q) {
                d += b[q] * (px * vs[ab + 3 * q] + py * vs[ab + 3 * q + 1]
                             + pz * vs[ab + 3 * q + 2]);
            }
            for (int k = 0; k < 6; ++k) d += (double)c[6 + k] * vs[instr_off + ic[k]];
            if (n_glob) d += (double)c[12] * vs[glob];
            un = c_av * (wi * d);
        }
        if (c_rhs != 0.0) un += c_rhs * (wi * rhs[i]);
        if (c_u != 0.0) un += c_u * u[i];
        u[i] = un;
        sq += un * un;
        double g = un * wi;
        for (int q = 0; q < 4; ++q) {
            double gb = g * b[q];
            atomicAdd(out + ab + 3 * q, gb * px);
            atomicAdd(out + ab + 3 * q + 1, gb * py);
            atomicAdd(out + ab + 3 * q + 2, gb * pz);
        }
        if (n_tail > 0) {
            for (int k = 0; k < 6; ++k) atomicAdd(tail + ic[k], g * (double)c[6 + k]);
            if (n_glob) atomicAdd(tail + (n_tail - 1), g * (double)c[12]);
        } else {
            for (int k = 0; k < 6; ++k) atomicAdd(out + instr_off + ic[k], g * (double)c[6 + k]);
            if (n_glob) atomicAdd(out + glob, g * (double)c[12]);
        }
    }
    part[threadIdx.x] = sq;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if (threadIdx.x < h) part[threadIdx.x] += part[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicAdd(ss, part[0]);
    for (int k = threadIdx.x; k < n_tail; k += blockDim.x) {
        if (tail[k] != 0.0) atomicAdd(out + instr_off + k, tail[k]);
    }
}

extern "C" __global__ void stars(
    const long long* __restrict__ star_ptr, const double* __restrict__ t,
    const float* __restrict__ coef, const float* __restrict__ isig,
    const double* __restrict__ u, double* __restrict__ out, long long n_stars, int ncoef,
    double epoch, double inv_year)
{
    long long s = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= n_stars) return;
    double o0 = 0.0, o1 = 0.0, o2 = 0.0, o3 = 0.0, o4 = 0.0;
    for (long long i = star_ptr[s]; i < star_ptr[s + 1]; ++i) {
        double g = u[i] * (double)isig[i];
        double dty = (t[i] - epoch) * inv_year;
        const float* c = coef + i * ncoef;
        double ga = g * (double)c[0], gd = g * (double)c[1];
        o0 += ga;
        o1 += gd;
        o2 += g * (double)c[2];
        o3 += ga * dty;
        o4 += gd * dty;
    }
    out[5 * s] = o0;
    out[5 * s + 1] = o1;
    out[5 * s + 2] = o2;
    out[5 * s + 3] = o3;
    out[5 * s + 4] = o4;
}
"""

_THREADS = 256
_BLOCKS_PER_SM = 4
_MAX_TAIL = 4096
"""Instrument + global unknowns up to this many are accumulated in shared memory (32 KiB)."""


def gpu_available() -> bool:
    """True when CuPy imports and sees a CUDA device."""
    try:
        import cupy as cp

        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or CUDA present without a usable driver
        return False


class GpuRowOperator:
    """:class:`~dpct.pipelines.gsr._kernels.RowOperator`'s contract, on the GPU."""

    def __init__(self, system: GsrSystem) -> None:
        import cupy as cp

        self._cp = cp
        self.system = system
        lay = system.layout
        self.n = lay.n_unknowns
        module = cp.RawModule(code=_SOURCE, options=("--std=c++14",))
        self._rows = module.get_function("rows")
        self._sms = cp.cuda.Device().attributes["MultiProcessorCount"]
        self._stars = module.get_function("stars")
        to = cp.asarray
        self._d = {
            "star": to(system.star),
            "knot": to(system.knot),
            "instr": to(system.instr),
            "icols": to(np.ascontiguousarray(system.instr_cols, np.int32)),
            "t": to(system.t),
            "coef": to(np.ascontiguousarray(system.coef)),
            "rhs": to(system.rhs),
            "isig": to(system.inv_sigma),
            "star_ptr": to(system.star_row_ranges().astype(np.int64)),
        }
        self._u = cp.zeros(system.n_rows)
        self._out = cp.zeros(self.n)
        self._ss = cp.zeros(1)
        self._u_con = cp.zeros(system.n_constraints)
        self._c = self._ct = None
        c = system.constraints
        if c is not None:
            from cupyx.scipy import sparse

            shape = (c.n_rows, self.n)
            index = (to(c.indices.astype(np.int32)), to(c.indptr.astype(np.int32)))
            self._c = sparse.csr_matrix((to(c.data), *index), shape=shape)
            self._ct = self._c.T.tocsr()
            self._c_rhs = to(c.rhs)

    def get_u(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return self._u.get(), self._u_con.get()

    def set_u(self, u_obs: NDArray[np.float64], u_con: NDArray[np.float64]) -> None:
        self._u[:] = self._cp.asarray(u_obs)
        self._u_con[:] = self._cp.asarray(u_con)

    def apply(
        self, vs: NDArray[np.float64], c_rhs: float, c_av: float, c_u: float
    ) -> tuple[NDArray[np.float64], float]:
        cp, d, s = self._cp, self._d, self.system
        lay = s.layout
        m = s.n_rows
        vs_d = cp.asarray(np.ascontiguousarray(vs, np.float64))
        self._out.fill(0.0)
        self._ss.fill(0.0)
        glob = lay.n_unknowns - 1
        n_tail = lay.n_instr + lay.n_glob  # instrument then global: contiguous columns
        n_tail = n_tail if n_tail <= _MAX_TAIL else 0
        blocks = min((m + _THREADS - 1) // _THREADS, self._sms * _BLOCKS_PER_SM)
        self._rows(
            (max(blocks, 1),), (_THREADS,),
            (d["star"], d["knot"], d["instr"], d["icols"], d["t"], d["coef"], d["rhs"],
             d["isig"], self._u, vs_d, np.float64(c_rhs), np.float64(c_av), np.float64(c_u),
             self._out, self._ss, np.int64(m), np.int32(s.coef.shape[1]),
             np.float64(s.knot_t0), np.float64(1.0 / s.knot_dt), np.float64(s.epoch),
             np.float64(1.0 / DAYS_PER_YEAR), np.int64(lay.att_offset),
             np.int64(lay.instr_offset), np.int32(lay.n_glob), np.int64(glob),
             np.int32(n_tail)),
            shared_mem=(_THREADS + n_tail) * 8,
        )  # fmt: skip
        n_stars = lay.n_stars
        self._stars(
            ((n_stars + _THREADS - 1) // _THREADS,), (_THREADS,),
            (d["star_ptr"], d["t"], d["coef"], d["isig"], self._u, self._out,
             np.int64(n_stars), np.int32(s.coef.shape[1]), np.float64(s.epoch),
             np.float64(1.0 / DAYS_PER_YEAR)),
        )  # fmt: skip
        if self._c is not None:
            # the constraint rows: few and long, as two sparse products on the device
            cu = self._u_con * c_u if c_u != 0.0 else cp.zeros_like(self._u_con)
            if c_av != 0.0:
                cu += c_av * (self._c @ vs_d)
            if c_rhs != 0.0:
                cu += c_rhs * self._c_rhs
            self._u_con = cu
            self._out += self._ct @ cu
            self._ss += cu @ cu
        return self._out.get(), float(self._ss.get()[0])
