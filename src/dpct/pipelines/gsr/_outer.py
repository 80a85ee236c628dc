"""The outer loop: re-linearise at the new solution and solve again, until updates vanish.

The observation equations are non-linear (rotations, normalisations, the attitude's
effect on the field angles); each LSQR solve gives the Gauss-Newton update of the
linearised system, as in the AVU-GSR pipeline's iterations for the non-linearity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dpct.pipelines.gsr._checkpoint import checkpoint_path
from dpct.pipelines.gsr._lsqr import LsqrResult, solve
from dpct.pipelines.gsr._system import GsrSystem


class LinearisedModel(Protocol):
    """Something that linearises the observation equations at a point.

    ``linearise(x)`` returns the system whose right-hand side is observed minus computed
    at ``x`` and whose coefficients are the partial derivatives there; solving it gives
    the update ``dx``. Its constraint equations apply to the update too: for constraints
    ``C x = c`` their right-hand side is ``c - C x``, so that a point that drifted off them
    (the data pull weakly on nearly-null directions) is brought back. The unknowns'
    numbering must not depend on ``x``.
    """

    def linearise(self, x: NDArray[np.float64]) -> GsrSystem:
        """The system linearised at ``x``."""
        ...


@dataclass(frozen=True, eq=False)
class OuterResult:
    """Outcome of :func:`solve_nonlinear`.

    Attributes
    ----------
    x
        Solution after the last update.
    converged
        True when the last update was below ``update_tol``.
    solves
        The LSQR result of every outer iteration.
    max_update
        For each outer iteration, ``max_j |dx_j| * ||A_j||``: the largest update in units
        of what one column of data resolves (about its standard error).
    system
        The system linearised at the solution's last linearisation point.
    """

    x: NDArray[np.float64]
    converged: bool
    solves: tuple[LsqrResult, ...]
    max_update: tuple[float, ...]
    system: GsrSystem


def solve_nonlinear(
    model: LinearisedModel,
    x0: ArrayLike,
    *,
    max_outer: int = 10,
    update_tol: float = 1e-3,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    job_id: str | None = None,
    **solve_kwargs: Any,
) -> OuterResult:
    """Gauss-Newton outer loop around :func:`solve`.

    Parameters
    ----------
    model
        Linearises the observation equations (see :class:`LinearisedModel`).
    x0
        Starting point, e.g. zeros for "the reference catalogue and nominal attitude".
    max_outer
        Most re-linearisations.
    update_tol
        Stop when ``max_j |dx_j| * ||A_j||`` is below this: the update is far below the
        unknowns' precision.
    checkpoint_dir, job_id
        Checkpoint each LSQR solve under ``checkpoint_dir`` in a file keyed by the job and
        the outer iteration. A retried job re-linearises at the same points, finds the
        finished solves' final states and the interrupted one's last state, and so ends
        at the same solution.
    **solve_kwargs
        Passed to every :func:`solve` (tolerances, preconditioning, progress...).
    """
    if (checkpoint_dir is None) != (job_id is None):
        raise ValueError("give both checkpoint_dir and job_id, or neither")
    x = np.array(x0, dtype=np.float64)
    solves: list[LsqrResult] = []
    updates: list[float] = []
    converged = False
    system = model.linearise(x)
    for k in range(max_outer):
        ckpt = None
        if checkpoint_dir is not None and job_id is not None:
            ckpt = checkpoint_path(checkpoint_dir, job_id, f"outer{k:03d}")
        res = solve(system, checkpoint=ckpt, **solve_kwargs)
        solves.append(res)
        if res.interrupted:
            break
        x = x + res.x
        updates.append(float(np.max(np.abs(res.x) * res.column_norms)))
        system = model.linearise(x)
        if updates[-1] < update_tol:
            converged = True
            break
    return OuterResult(
        x=x, converged=converged, solves=tuple(solves), max_update=tuple(updates), system=system
    )
