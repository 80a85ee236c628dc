"""LSQR (Paige & Saunders 1982) on the compact system: one pass over the rows per iteration.

The recurrences, stopping rules and returned quantities follow ``scipy.sparse.linalg.lsqr``
line by line, so the two can be compared. What differs is how A is applied: LSQR's
``u <- A v - alpha u`` and ``A^T u`` come out of a single fused pass over the rows
(``RowOperator.apply``), because ``A^T u`` can be accumulated before u is normalised:
u is kept unnormalised together with its pending scale ``1/beta``. The solve runs on the
right-preconditioned matrix ``A M`` (``_precondition.py``), and can be checkpointed and
resumed bit for bit.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numba as nb
import numpy as np
from numpy.typing import ArrayLike, NDArray

from dpct.pipelines.gsr._checkpoint import read_checkpoint, write_checkpoint
from dpct.pipelines.gsr._exceptions import GsrInputError, LayoutError
from dpct.pipelines.gsr._kernels import RowOperator
from dpct.pipelines.gsr._precondition import (
    Preconditioner,
    PreconditionKind,
    make_preconditioner,
)
from dpct.pipelines.gsr._progress import Callback, IterationInfo, ProgressBar
from dpct.pipelines.gsr._system import GsrSystem
from dpct.pipelines.gsr._validate import validate_system

ISTOP_INTERRUPTED = 8
REASONS = (
    "the exact solution is x = x0",
    "Ax - b is small enough, given atol, btol",
    "the least-squares solution is good enough, given atol",
    "the estimate of cond(A M) has exceeded conlim",
    "Ax - b is small enough for this machine",
    "the least-squares solution is good enough for this machine",
    "cond(A M) seems to be too large for this machine",
    "the iteration limit has been reached",
    "interrupted by the caller; solve again with the same checkpoint to resume",
)
_EPS = float(np.finfo(np.float64).eps)

# names of the scalar state saved in a checkpoint, in order
_SCALARS = (
    "itn", "istop", "u_scale", "alfa", "beta", "rhobar", "phibar", "anorm", "acond",
    "ddnorm", "res2", "xnorm", "xxnorm", "z", "cs2", "sn2", "bnorm", "rnorm", "r1norm",
    "r2norm", "arnorm", "finished",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class LsqrResult:
    """Outcome of :func:`solve`.

    Attributes
    ----------
    x
        Solution (original units: mas, mas/yr, and so on).
    istop
        Why LSQR stopped, SciPy's codes 0-7 (see :data:`REASONS`), or 8 when the caller
        interrupted it (the checkpoint then holds the state to resume from).
    itn
        Iterations done, counting those before a resume.
    r1norm, r2norm, anorm, acond, arnorm, xnorm
        As returned by ``scipy.sparse.linalg.lsqr`` for the preconditioned problem
        ``A M`` (norms of residuals are in units of sigma, since rows are weighted).
    var
        LSQR's own running estimate of the variances of x (original units), or None.
        It covers only the Krylov subspace explored so far and underestimates real
        errors badly; use :func:`standard_errors` for honest ones.
    preconditioner
        ``M``: the solve ran on ``A M``; ``preconditioner.solve(x)`` gives the
        preconditioned unknowns, in which LSQR's iterates are compared.
    column_norms
        Norms of the weighted columns of A (constraints included): ``x_j * norm_j`` is
        ``x_j`` in units of what one column of data can resolve.
    seconds
        Wall time of this attempt, excluding checks before the first iteration.
    iterations_this_attempt
        Iterations run by this call (``itn`` minus those restored from a checkpoint).
    resumed_from
        Iteration restored from a checkpoint, 0 for a fresh start.
    dof
        Observation rows minus unknowns, for the unit-weight error.
    """

    x: NDArray[np.float64]
    istop: int
    itn: int
    r1norm: float
    r2norm: float
    anorm: float
    acond: float
    arnorm: float
    xnorm: float
    var: NDArray[np.float64] | None
    preconditioner: Preconditioner
    column_norms: NDArray[np.float64]
    seconds: float
    iterations_this_attempt: int
    resumed_from: int
    dof: int

    @property
    def reason(self) -> str:
        """Why the solve stopped, in words."""
        return REASONS[self.istop]

    @property
    def interrupted(self) -> bool:
        """True when the caller stopped the solve before LSQR's stopping rules did."""
        return self.istop == ISTOP_INTERRUPTED

    @property
    def seconds_per_iteration(self) -> float:
        """Mean wall time of an iteration in this attempt."""
        return self.seconds / max(self.iterations_this_attempt, 1)

    @property
    def unit_weight_error(self) -> float:
        """``sqrt(chi^2 / dof)``: about 1 when the sigmas of the observations are right."""
        return self.r1norm / math.sqrt(max(self.dof, 1))


@nb.njit(cache=True)
def _sumsq(v: NDArray[np.float64]) -> float:
    """Sum of squares in a fixed order (BLAS may thread and reorder; checkpoints must not)."""
    s0 = s1 = s2 = s3 = 0.0
    n = v.shape[0]
    k = n - n % 4
    for i in range(0, k, 4):
        s0 += v[i] * v[i]
        s1 += v[i + 1] * v[i + 1]
        s2 += v[i + 2] * v[i + 2]
        s3 += v[i + 3] * v[i + 3]
    for i in range(k, n):
        s0 += v[i] * v[i]
    return (s0 + s1) + (s2 + s3)


def _norm(v: NDArray[np.float64]) -> float:
    return math.sqrt(_sumsq(v))


def _sym_ortho(a: float, b: float) -> tuple[float, float, float]:
    """Stable Givens rotation, as in SciPy's LSQR."""
    if b == 0:
        return math.copysign(1.0, a), 0.0, abs(a)
    if a == 0:
        return 0.0, math.copysign(1.0, b), abs(b)
    if abs(b) > abs(a):
        tau = a / b
        s = math.copysign(1.0, b) / math.sqrt(1 + tau * tau)
        c = s * tau
        r = b / s
    else:
        tau = b / a
        c = math.copysign(1.0, a) / math.sqrt(1 + tau * tau)
        s = c * tau
        r = a / c
    return c, s, r


def solve_fingerprint(
    system: GsrSystem,
    *,
    damp: float,
    preconditioner: Preconditioner,
    calc_var: bool,
    x0: NDArray[np.float64] | None,
) -> str:
    """Fingerprint of a solve: the system and every setting that shapes the iterates.

    Stopping tolerances and the iteration limit are left out: a retry may allow more
    iterations and still continue the same sequence of iterates.
    """
    h = hashlib.blake2b(digest_size=20)
    h.update(system.fingerprint().encode())
    h.update(repr((float(damp), bool(calc_var))).encode())
    h.update(preconditioner.fingerprint_bytes())
    if x0 is not None:
        h.update(memoryview(np.ascontiguousarray(x0, np.float64)).cast("B"))
    return h.hexdigest()


Device = Literal["cpu", "gpu", "auto"]


def _operator(system: GsrSystem, device: Device) -> RowOperator:
    if device not in ("cpu", "gpu", "auto"):
        raise ValueError(f"device must be 'cpu', 'gpu' or 'auto', not {device!r}")
    if device == "cpu":
        return RowOperator(system)
    from dpct.pipelines.gsr._gpu import GpuRowOperator, gpu_available

    if gpu_available():
        return GpuRowOperator(system)  # type: ignore[return-value]
    if device == "gpu":
        raise GsrInputError("device='gpu' asked for, but CuPy sees no CUDA device here")
    return RowOperator(system)


def solve(
    system: GsrSystem,
    *,
    x0: ArrayLike | None = None,
    damp: float = 0.0,
    atol: float = 1e-8,
    btol: float = 1e-8,
    conlim: float = 1e12,
    iter_lim: int | None = None,
    precondition: PreconditionKind = "stars",
    calc_var: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 100,
    checkpoint_seconds: float = 600.0,
    progress: bool = False,
    callback: Callback | None = None,
    require_constraints: bool = True,
    device: Device = "cpu",
    comm: Any = None,
) -> LsqrResult:
    """Solve the weighted least-squares GSR system with column-preconditioned LSQR.

    Minimises ``||W^(1/2) (A x - b)||^2 + ||C x - c||^2 + damp^2 ||M^-1 x||^2`` where
    ``C x = c`` are the constraint equations and ``M`` the right preconditioner (damping
    acts on the preconditioned unknowns, as in SciPy's LSQR applied to ``A M``).

    Parameters
    ----------
    system
        The system; it is validated first (:func:`validate_system`).
    x0
        Starting point (original units); LSQR then solves for ``x - x0``.
    damp
        Damping of the preconditioned problem.
    atol, btol, conlim, iter_lim
        LSQR's stopping rules, exactly as in ``scipy.sparse.linalg.lsqr`` (``iter_lim``
        defaults to twice the number of unknowns).
    precondition
        ``"stars"``: orthonormalise each star's 5 columns and scale the others to unit
        norm (fewest iterations); ``"columns"``: scale every column to unit norm
        (AVU-GSR's PC-LSQR); ``"none"``. Without preconditioning LSQR's iterates on this
        system amplify rounding differences and converge far more slowly.
    calc_var
        Accumulate LSQR's own variance estimate (one more vector update per iteration).
    checkpoint
        File for the solver state, keyed by the job (see :func:`checkpoint_path`). If it
        exists and matches this system and these settings, the solve resumes from it and
        ends at the same solution, bit for bit, as an uninterrupted one. The final state
        is saved too, so solving again returns at once.
    checkpoint_every, checkpoint_seconds
        Save every this many iterations, or when this much time has passed since the
        last save, whichever comes first.
    progress
        Show a rich progress bar with the residual norms.
    callback
        Called after every iteration with an :class:`IterationInfo`; return True to save
        a checkpoint and stop (a processing node does this on SIGTERM).
    require_constraints
        Refuse an undamped system without constraint equations (it is rank-deficient).
    device
        ``"cpu"`` (Numba, the reference), ``"gpu"`` (CuPy: the rows stay on the GPU,
        LSQR's recurrences on the CPU; agrees with the CPU to rounding) or ``"auto"``
        (the GPU when CuPy sees one). Checkpoints are interchangeable between devices.
    comm
        An mpi4py communicator: ``system`` then holds this rank's rows (whole stars, see
        :func:`~dpct.pipelines.gsr.load_rank_rows`), every rank calls ``solve`` with the
        same settings and gets the same solution. Checkpoints are per rank (the rank is
        added to the file name) and taken every ``checkpoint_every`` iterations only, so
        all ranks save at the same iteration; a ``callback`` stop is agreed by all ranks.

    Returns
    -------
    LsqrResult

    Raises
    ------
    GsrInputError
        Bad input, found before the first iteration (see :func:`validate_system`), or a
        checkpoint that belongs to another problem (``CheckpointMismatchError``).
    """
    lay = system.layout
    n = lay.n_unknowns
    reduce, rank = None, 0
    if comm is not None:
        from dpct.pipelines.gsr._distributed import allreduce_sum

        reduce, rank = allreduce_sum(comm), comm.Get_rank()
        progress = progress and rank == 0
        checkpoint_seconds = math.inf  # a clock differs by rank; iteration counts do not
        if checkpoint is not None and comm.Get_size() > 1:
            base = Path(checkpoint)
            checkpoint = base.with_name(f"{base.stem}.rank{rank}of{comm.Get_size()}{base.suffix}")
    obs_norms = validate_system(
        system, require_constraints=require_constraints, damp=damp, reduce=reduce
    )
    pre = make_preconditioner(system, precondition, obs_norms, reduce=reduce)
    sq = obs_norms**2
    if system.constraints is not None:
        c = system.constraints
        sq = sq + np.bincount(c.indices, weights=c.data**2, minlength=n)
    col_norms = np.sqrt(sq)
    x0_arr = None
    if x0 is not None:
        x0_arr = np.ascontiguousarray(x0, np.float64)
        if x0_arr.shape != (n,):
            raise LayoutError(f"x0 has shape {x0_arr.shape}, expected ({n},)")
    if iter_lim is None:
        iter_lim = 2 * n

    if reduce is not None:
        from dpct.pipelines.gsr._distributed import DistributedRowOperator

        op: Any = DistributedRowOperator(system, reduce, rank)
    else:
        op = _operator(system, device)
    fingerprint = ""
    saved = None
    if checkpoint is not None:
        fingerprint = solve_fingerprint(
            system, damp=damp, preconditioner=pre, calc_var=calc_var, x0=x0_arr
        )
        saved = read_checkpoint(checkpoint, fingerprint)

    dampsq = damp * damp
    ctol = 1.0 / conlim if conlim > 0 else 0.0
    st: dict[str, float]
    if saved is not None:
        arrays, st = saved
        y, v, w = arrays["y"].copy(), arrays["v"].copy(), arrays["w"].copy()
        var = arrays["var"].copy() if calc_var else None
        op.set_u(arrays["u_obs"], arrays["u_con"])
    else:
        st = dict.fromkeys(_SCALARS, 0.0)
        st.update(cs2=-1.0, u_scale=1.0)
        var = np.zeros(n) if calc_var else None
        bvec = system.weighted_rhs()
        if reduce is None:
            st["bnorm"] = _norm(bvec)
        else:  # observation rows are spread over ranks, constraint rows are everywhere
            obs_sq = reduce(_sumsq(bvec[: system.n_rows]))
            st["bnorm"] = math.sqrt(obs_sq + _sumsq(bvec[system.n_rows :]))
        if x0_arr is None:
            y = np.zeros(n)
            out, ss = op.apply(y, 1.0, 0.0, 0.0)
        else:
            y = pre.solve(x0_arr)
            out, ss = op.apply(x0_arr, 1.0, -1.0, 0.0)
        beta = math.sqrt(ss)
        alfa = 0.0
        if beta > 0:
            st["u_scale"] = 1.0 / beta
            v = pre.apply_t(out) * st["u_scale"]
            alfa = _norm(v)
        else:
            v = y.copy()
        if alfa > 0:
            v *= 1.0 / alfa
        w = v.copy()
        st.update(alfa=alfa, beta=beta, rhobar=alfa, phibar=beta, rnorm=beta)
        st.update(r1norm=beta, r2norm=beta, arnorm=alfa * beta)
        if alfa * beta == 0:
            st["finished"] = 1.0
    resumed_from = int(st["itn"]) if saved is not None else 0

    saved_itn = [int(st["itn"]) if saved is not None else -1]

    def snapshot() -> None:
        if checkpoint is None:
            return
        saved_itn[0] = int(st["itn"])
        u_obs, u_con = op.get_u()
        arrays = {"y": y, "v": v, "w": w, "u_obs": u_obs, "u_con": u_con}
        if var is not None:
            arrays["var"] = var
        write_checkpoint(checkpoint, fingerprint, arrays, st)

    t_start = time.perf_counter()
    t_saved = time.monotonic()
    itn0 = int(st["itn"])
    bnorm = st["bnorm"]
    with ProgressBar(progress, iter_lim, itn0) as bar:
        while not st["finished"] and st["itn"] < iter_lim:
            itn = int(st["itn"]) + 1
            alfa = st["alfa"]
            out, ss = op.apply(pre.apply(v), 0.0, 1.0, -alfa * st["u_scale"])
            beta = math.sqrt(ss)
            anorm = st["anorm"]
            if beta > 0:
                st["u_scale"] = 1.0 / beta
                anorm = math.sqrt(anorm * anorm + alfa * alfa + beta * beta + dampsq)
                v = pre.apply_t(out) * st["u_scale"] - beta * v
                alfa = _norm(v)
                if alfa > 0:
                    v *= 1.0 / alfa
            else:
                st["u_scale"] = 1.0

            rhobar, phibar = st["rhobar"], st["phibar"]
            if damp > 0:
                rhobar1 = math.sqrt(rhobar * rhobar + dampsq)
                cs1 = rhobar / rhobar1
                sn1 = damp / rhobar1
                psi = sn1 * phibar
                phibar = cs1 * phibar
            else:
                rhobar1 = rhobar
                psi = 0.0
            cs, sn, rho = _sym_ortho(rhobar1, beta)
            theta = sn * alfa
            rhobar = -cs * alfa
            phi = cs * phibar
            phibar = sn * phibar
            tau = sn * phi

            t1 = phi / rho
            t2 = -theta / rho
            dk = (1.0 / rho) * w
            y += t1 * w
            w = v + t2 * w
            ddnorm = st["ddnorm"] + _sumsq(dk)
            if var is not None:
                var += pre.diag_of_product(dk)

            delta = st["sn2"] * rho
            gambar = -st["cs2"] * rho
            rhs = phi - delta * st["z"]
            zbar = rhs / gambar
            xnorm = math.sqrt(st["xxnorm"] + zbar * zbar)
            gamma = math.sqrt(gambar * gambar + theta * theta)
            cs2 = gambar / gamma
            sn2 = theta / gamma
            z = rhs / gamma
            xxnorm = st["xxnorm"] + z * z

            acond = anorm * math.sqrt(ddnorm)
            res1 = phibar * phibar
            res2 = st["res2"] + psi * psi
            rnorm = math.sqrt(res1 + res2)
            arnorm = alfa * abs(tau)
            if damp > 0:
                r1sq = rnorm * rnorm - dampsq * xxnorm
                r1norm = math.copysign(math.sqrt(abs(r1sq)), r1sq)
            else:
                r1norm = rnorm
            r2norm = rnorm

            test1 = rnorm / bnorm
            test2 = arnorm / (anorm * rnorm + _EPS)
            test3 = 1.0 / (acond + _EPS)
            t1 = test1 / (1 + anorm * xnorm / bnorm)
            rtol = btol + atol * anorm * xnorm / bnorm
            istop = 0
            if itn >= iter_lim:
                istop = 7
            if 1 + test3 <= 1:
                istop = 6
            if 1 + test2 <= 1:
                istop = 5
            if 1 + t1 <= 1:
                istop = 4
            if test3 <= ctol:
                istop = 3
            if test2 <= atol:
                istop = 2
            if test1 <= rtol:
                istop = 1

            st.update(
                itn=itn, istop=istop, alfa=alfa, beta=beta, rhobar=rhobar, phibar=phibar,
                anorm=anorm, acond=acond, ddnorm=ddnorm, res2=res2, xnorm=xnorm,
                xxnorm=xxnorm, z=z, cs2=cs2, sn2=sn2, rnorm=rnorm, r1norm=r1norm,
                r2norm=r2norm, arnorm=arnorm, finished=float(0 < istop < 7),
            )  # fmt: skip
            info = IterationInfo(
                itn=itn,
                iter_lim=iter_lim,
                r1norm=r1norm,
                arnorm=arnorm,
                test1=test1,
                test2=test2,
                anorm=anorm,
                acond=acond,
                seconds=time.perf_counter() - t_start,
            )
            bar.update(info)
            stop = bool(callback(info)) if callback is not None else False
            if reduce is not None:
                stop = bool(reduce(int(stop)))
            if stop and not st["finished"]:
                st["istop"] = ISTOP_INTERRUPTED
                snapshot()
                break
            if (
                st["finished"]
                or itn % checkpoint_every == 0
                or time.monotonic() - t_saved >= checkpoint_seconds
            ):
                snapshot()
                t_saved = time.monotonic()
    if not st["finished"] and st["istop"] != ISTOP_INTERRUPTED and st["itn"] >= iter_lim:
        st["istop"] = 7
    if saved_itn[0] != int(st["itn"]):
        snapshot()
    seconds = time.perf_counter() - t_start
    return LsqrResult(
        x=pre.apply(y),
        istop=int(st["istop"]),
        itn=int(st["itn"]),
        r1norm=st["r1norm"],
        r2norm=st["r2norm"],
        anorm=st["anorm"],
        acond=st["acond"],
        arnorm=st["arnorm"],
        xnorm=st["xnorm"],
        var=None if var is None else var.copy(),
        preconditioner=pre,
        column_norms=col_norms,
        seconds=seconds,
        iterations_this_attempt=int(st["itn"]) - itn0,
        resumed_from=resumed_from,
        dof=(system.n_rows if reduce is None else int(reduce(system.n_rows))) - n,
    )
