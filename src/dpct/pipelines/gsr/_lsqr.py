"""LSQR on the compact GSR system: :func:`solve`, composing the iteration and its drivers.

The parts, one job each: the iteration (``_lsqr_iteration.py``: LSQR's recurrences and
stopping rules over a fused row operator, from a resumable state), where the row passes
run (``_device.py``: CPU or GPU; ``_distributed.py``: MPI ranks), saving and resuming
the state (``_lsqr_checkpoint.py``) and showing progress (``_progress.py``). ``solve``
validates the system, builds the preconditioner, picks the operator, restores or starts
the state, and runs the iteration with one per-iteration hook made of the drivers.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dpct.pipelines.gsr._device import Device, row_operator
from dpct.pipelines.gsr._exceptions import LayoutError
from dpct.pipelines.gsr._lsqr_checkpoint import LsqrCheckpoint, solve_fingerprint
from dpct.pipelines.gsr._lsqr_iteration import (
    ISTOP_INTERRUPTED,
    REASONS,
    LsqrState,
    RowPass,
    iterate,
    norm,
    start,
)
from dpct.pipelines.gsr._precondition import (
    Preconditioner,
    PreconditionKind,
    make_preconditioner,
)
from dpct.pipelines.gsr._progress import Callback, IterationInfo, ProgressBar
from dpct.pipelines.gsr._system import GsrSystem
from dpct.pipelines.gsr._validate import validate_system

__all__ = ["REASONS", "Device", "LsqrResult", "solve"]


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
    ranks = None
    if comm is not None:
        from dpct.pipelines.gsr._distributed import Ranks

        ranks = Ranks(comm)
        progress = progress and ranks.is_root
        checkpoint_seconds = math.inf  # a clock differs by rank; iteration counts do not
        if checkpoint is not None:
            checkpoint = ranks.checkpoint_file(checkpoint)
    reduce = None if ranks is None else ranks.reduce
    obs_norms = validate_system(
        system, require_constraints=require_constraints, damp=damp, reduce=reduce
    )
    pre = make_preconditioner(system, precondition, obs_norms, reduce=reduce)
    x0_arr = _start_point(x0, n)
    if iter_lim is None:
        iter_lim = 2 * n
    op: RowPass = row_operator(system, device) if ranks is None else ranks.operator(system)

    store = None
    state: LsqrState | None = None
    if checkpoint is not None:
        fingerprint = solve_fingerprint(
            system, damp=damp, preconditioner=pre, calc_var=calc_var, x0=x0_arr
        )
        store = LsqrCheckpoint(
            checkpoint, fingerprint, op, every=checkpoint_every, seconds=checkpoint_seconds
        )
        state = store.restore(calc_var=calc_var)
    resumed_from = 0 if state is None else state.itn
    if state is None:
        bnorm = norm(system.weighted_rhs()) if ranks is None else ranks.rhs_norm(system)
        state = start(op, pre, bnorm=bnorm, x0=x0_arr, calc_var=calc_var)
    itn0 = state.itn

    t_start = time.perf_counter()
    with ProgressBar(progress, iter_lim, itn0) as bar:

        def on_iteration(info: IterationInfo, current: LsqrState) -> bool:
            bar.update(info)
            stop = bool(callback(info)) if callback is not None else False
            if ranks is not None:
                stop = ranks.agree(stop)
            if store is not None:
                store.after_iteration(current)
            return stop

        iterate(
            op, pre, state, damp=damp, atol=atol, btol=btol, conlim=conlim,
            iter_lim=iter_lim, on_iteration=on_iteration,
        )  # fmt: skip
    if store is not None:
        store.finish(state)
    seconds = time.perf_counter() - t_start
    st = state.scalars
    return LsqrResult(
        x=pre.apply(state.y),
        istop=state.istop,
        itn=state.itn,
        r1norm=st["r1norm"],
        r2norm=st["r2norm"],
        anorm=st["anorm"],
        acond=st["acond"],
        arnorm=st["arnorm"],
        xnorm=st["xnorm"],
        var=None if state.var is None else state.var.copy(),
        preconditioner=pre,
        column_norms=_column_norms(system, obs_norms),
        seconds=seconds,
        iterations_this_attempt=state.itn - itn0,
        resumed_from=resumed_from,
        dof=(system.n_rows if ranks is None else ranks.n_rows(system)) - n,
    )


def _start_point(x0: ArrayLike | None, n: int) -> NDArray[np.float64] | None:
    """``x0`` as a contiguous float64 vector of the right length (or None)."""
    if x0 is None:
        return None
    x0_arr = np.ascontiguousarray(x0, np.float64)
    if x0_arr.shape != (n,):
        raise LayoutError(f"x0 has shape {x0_arr.shape}, expected ({n},)")
    return x0_arr


def _column_norms(system: GsrSystem, obs_norms: NDArray[np.float64]) -> NDArray[np.float64]:
    """Norms of the weighted columns, constraint rows included."""
    sq = obs_norms**2
    if system.constraints is not None:
        c = system.constraints
        sq = sq + np.bincount(c.indices, weights=c.data**2, minlength=system.layout.n_unknowns)
    return np.sqrt(sq)
