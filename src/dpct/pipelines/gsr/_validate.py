"""Checks that run before a solve starts, so bad input fails in seconds, not after hours."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dpct.pipelines.gsr._exceptions import (
    EmptySystemError,
    GsrInputError,
    InvalidIndexError,
    LayoutError,
    NonFiniteError,
    RankDeficientError,
)
from dpct.pipelines.gsr._kernels import observation_column_norms, star_normal_blocks
from dpct.pipelines.gsr._system import GsrSystem

_TAU_SLACK = 1e-9
_MIN_STAR_RCOND = 1e-12


def _rows(mask: NDArray[np.bool_], limit: int = 5) -> str:
    idx = np.flatnonzero(mask)
    more = f" and {idx.size - limit} more" if idx.size > limit else ""
    return ", ".join(str(i) for i in idx[:limit]) + more


def validate_system(
    system: GsrSystem,
    *,
    require_constraints: bool = True,
    damp: float = 0.0,
    reduce: Callable[[Any], Any] | None = None,
) -> NDArray[np.float64]:
    """Check a system before solving it; return the observation column norms.

    Checks, in order: rows exist; indices are in range and rows sorted by star; the knot
    index agrees with the time; everything is finite and weights positive; every unknown
    is observed; every star's 5x5 block is regular; and, unless damped or told otherwise,
    that there are constraint equations: the observation equations alone never fix the
    reference frame (rotation and spin of the sphere) nor the attitude/instrument offsets.

    Parameters
    ----------
    system
        The system.
    require_constraints
        Raise if the system has no constraint equations (and ``damp == 0``).
    damp
        The solve's damping; a damped problem has a unique solution without constraints.
    reduce
        Sum over MPI ranks when ``system`` holds one rank's rows: row checks stay local,
        column norms and star blocks are summed before the rank checks.

    Returns
    -------
    ndarray
        Column norms of the weighted observation rows (``n_unknowns``).

    Raises
    ------
    EmptySystemError, InvalidIndexError, LayoutError, NonFiniteError, RankDeficientError
        With the offending rows or unknowns named.
    """
    lay = system.layout
    m = system.n_rows if reduce is None else int(reduce(system.n_rows))
    if m == 0:
        raise EmptySystemError(
            "the GSR system has no observation rows; give it observations of every star, "
            "attitude knot and instrument unknown"
        )
    if lay.n_stars == 0:
        raise EmptySystemError("the GSR system has no stars; n_stars must be > 0")

    bad = (system.star < 0) | (system.star >= lay.n_stars)
    if bad.any():
        raise InvalidIndexError(
            f"rows {_rows(bad)} reference stars {np.unique(system.star[bad])[:5].tolist()} "
            f"but the system has stars 0..{lay.n_stars - 1}; drop those rows or pass the "
            "right n_stars"
        )
    if np.any(np.diff(system.star) < 0):
        raise LayoutError("rows are not sorted by star; build the system with make_system")
    bad = (system.knot < 0) | (system.knot > lay.n_att - 4)
    if bad.any():
        raise InvalidIndexError(
            f"rows {_rows(bad)} have knot intervals outside 0..{lay.n_att - 4} "
            f"(n_att={lay.n_att} B-spline coefficients per axis); the attitude spline must "
            "cover every observation time"
        )
    n_cfg = system.instr_cols.shape[0]
    bad = (system.instr < 0) | (system.instr >= n_cfg)
    if bad.any():
        raise InvalidIndexError(
            f"rows {_rows(bad)} reference instrument configurations outside 0..{n_cfg - 1}"
        )
    ic = system.instr_cols
    if ic.size and (ic.min() < 0 or ic.max() >= lay.n_instr):
        raise InvalidIndexError(
            f"instr_cols references instrument unknowns outside 0..{lay.n_instr - 1}"
        )
    for name in ("t", "coef", "rhs", "inv_sigma"):
        a = getattr(system, name)
        finite = np.isfinite(a) if a.ndim == 1 else np.isfinite(a).all(axis=1)
        if not finite.all():
            raise NonFiniteError(
                f"rows {_rows(~finite)} have NaN or infinite values in {name!r}"
                + (" (sigma zero, negative or NaN)" if name == "inv_sigma" else "")
                + "; drop or repair those observations before solving"
            )
    bad = system.inv_sigma <= 0
    if bad.any():
        raise GsrInputError(
            f"rows {_rows(bad)} have sigma <= 0; observation standard errors must be > 0"
        )
    tau = (system.t - system.knot_t0) / system.knot_dt - system.knot
    bad = (tau < -_TAU_SLACK) | (tau > 1 + _TAU_SLACK)
    if bad.any():
        raise InvalidIndexError(
            f"rows {_rows(bad)}: the knot index does not match the time (knot_t0="
            f"{system.knot_t0}, knot_dt={system.knot_dt} days); use "
            "floor((t - knot_t0) / knot_dt)"
        )
    c = system.constraints
    if c is not None:
        if c.indices.size and (c.indices.min() < 0 or c.indices.max() >= lay.n_unknowns):
            raise InvalidIndexError(
                f"constraint equations reference unknowns outside 0..{lay.n_unknowns - 1}"
            )
        if not (np.isfinite(c.data).all() and np.isfinite(c.rhs).all()):
            raise NonFiniteError("constraint equations hold NaN or infinite values")

    norms = observation_column_norms(system)
    if reduce is not None:
        norms = np.sqrt(reduce(norms**2))
    missing = np.flatnonzero(norms == 0)
    if missing.size:
        names = ", ".join(lay.name(int(j)) for j in missing[:5])
        more = f" and {missing.size - 5} more" if missing.size > 5 else ""
        raise RankDeficientError(
            f"{missing.size} unknowns appear in no observation ({names}{more}); add "
            "observations of them or drop them from the layout (for attitude: widen the "
            "knots so that each interval holds observations)"
        )
    blocks = star_normal_blocks(system)
    if reduce is not None:
        blocks = reduce(blocks)
    # condition of the column-normalised 5x5 blocks: scale-free, like LSQR's preconditioning
    d = 1.0 / np.sqrt(np.einsum("sii->si", blocks))
    eig = np.linalg.eigvalsh(blocks * d[:, :, None] * d[:, None, :])
    rcond = eig[:, 0] / eig[:, -1]
    bad = rcond < _MIN_STAR_RCOND
    if bad.any():
        raise RankDeficientError(
            f"stars {_rows(bad)} have too few or too alike observations to fix their 5 "
            "astrometric parameters (singular 5x5 normal matrix); drop them or add "
            "observations with other scan directions and epochs"
        )
    if require_constraints and damp == 0 and system.n_constraints == 0:
        raise RankDeficientError(
            "the system has no constraint equations: observation equations alone leave the "
            "frame's orientation and spin (6 directions) and the attitude/instrument offsets "
            "free; add frame_constraints(...) and attitude_constraints(...), or pass damp > 0"
        )
    return norms
