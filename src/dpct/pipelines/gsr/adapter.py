"""From ``gsr_observations`` rows (the simulator's, or an upstream center's) to a GsrSystem.

The rows carry every partial derivative at full length (5 astrometric, 12 attitude, 6
instrument, 1 global), in µas and OBMT; the solver stores fewer numbers and derives the
rest from the time (``docs/gsr.md`` §2). This module is the bridge, and it checks that
the rows really have the structure the solver assumes before dropping the redundant
numbers, so a change upstream fails here, loudly, instead of biasing a solution:

- proper-motion partials must be the position partials times ``(t − epoch)`` in Julian
  years; the epoch is recovered from the rows themselves;
- the 12 attitude partials must be, per axis, an axis factor times the 4 cubic B-spline
  weights; since the weights sum to 1 the factor is the sum over the 4, and since
  ``Σ q·B_q(τ) = 1 + τ`` (linear precision of uniform B-splines) the position τ inside
  the knot interval follows without a cube root. The knot spacing and origin are fitted
  to ``att_first_coeff + τ`` against OBMT (or given), then the weights are checked
  against the solver's own ``B_q`` at the time.

Units: residuals, errors, positions, attitude and instrument unknowns go from µas to mas
(the solver's unit), the γ partial from µas to mas per unit of γ − 1. Times become days
since the first attitude knot the rows touch, so the float64 times keep sub-µs
resolution whatever the OBMT.

The frame constraints need the stars' reference positions, which the rows do not hold
(the partials are projections on the local east/north axes, whose orientation on the sky
needs the attitude): they come from a ``gsr_reference_catalogue`` table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from dpct.datamodel import NS_PER_DAY
from dpct.pipelines.gsr._constraints import attitude_constraints, frame_constraints
from dpct.pipelines.gsr._exceptions import (
    EmptySystemError,
    GsrInputError,
    InvalidIndexError,
    NonFiniteError,
)
from dpct.pipelines.gsr._kernels import observation_column_norms
from dpct.pipelines.gsr._reference import bspline_weights
from dpct.pipelines.gsr._system import (
    DAYS_PER_YEAR,
    N_ASTRO,
    N_AXES,
    N_INSTR,
    N_SPLINE,
    Constraints,
    GsrSystem,
    make_system,
)

UAS_PER_MAS = 1000.0
_WIDTHS = {"astro_partials": N_ASTRO, "att_partials": N_AXES * N_SPLINE}
_WIDTHS |= {"instr_cols": N_INSTR, "instr_partials": N_INSTR}
_REQUIRED = (
    "obs_id", "source_id", "obmt_ns", "al_residual_uas", "al_error_uas", "astro_partials",
    "att_first_coeff", "att_partials", "instr_cols", "instr_partials", "gamma_partial_uas",
)  # fmt: skip
_SPLINE_TOL = 1e-7
"""Largest departure of the attitude partials from axis factor × B-spline weights.

Relative to the row's largest attitude factor; the simulator's rows agree to 1e-15,
and the solver stores the factors in float32 (6e-8) anyway.
"""
_KNOT_TOL = 1e-6
"""Largest departure (in knot intervals) of a row's B-spline position from its time."""
_EPOCH_TOL_DAYS = 1e-3
"""Largest spread of the astrometric epoch implied by the rows' proper-motion partials."""


@dataclass(frozen=True, eq=False)
class GsrInput:
    """A GsrSystem built from observation rows, and the map back to the rows' names.

    Attributes
    ----------
    system
        The weighted system with its constraint equations (frame and mean attitude).
    source_id
        Star index → source id (ascending).
    ra_rad, dec_rad
        Reference positions of the stars, in star order (those of the constraints).
    coeff_index
        Attitude coefficient k of the system → absolute B-spline coefficient index j
        (``att_first_coeff`` numbering).
    instr_column
        Instrument unknown of the system → instrument column of the rows (``instr_cols``).
    knot_ns, knot_origin_ns
        Knot spacing, and the OBMT of the system's first knot (its time origin).
    epoch_days
        Reference epoch of the astrometric parameters, days from ``knot_origin_ns``.
    dropped_sources
        Stars whose rows were left out (too few or too alike observations).
    dropped_rows
        Observation rows left out with them.
    n_rows_in
        Rows given.
    obs_id, obmt_ns
        Per system row (rows are sorted by star, then time): the observation it came from.
    """

    system: GsrSystem
    source_id: NDArray[np.int64]
    ra_rad: NDArray[np.float64]
    dec_rad: NDArray[np.float64]
    coeff_index: NDArray[np.int64]
    instr_column: NDArray[np.int64]
    knot_ns: int
    knot_origin_ns: int
    epoch_days: float
    dropped_sources: NDArray[np.int64]
    dropped_rows: int
    n_rows_in: int
    obs_id: NDArray[np.int64]
    obmt_ns: NDArray[np.int64]

    @property
    def epoch_obmt_ns(self) -> int:
        """OBMT of the astrometric reference epoch."""
        return self.knot_origin_ns + round(self.epoch_days * NS_PER_DAY)

    @property
    def has_gamma(self) -> bool:
        """Whether PPN γ − 1 is an unknown."""
        return self.system.layout.n_glob == 1

    def truth_vector(
        self,
        stars: pa.Table,
        attitude: pa.Table,
        instrument: pa.Table,
        gamma_minus_one: float = 0.0,
    ) -> NDArray[np.float64]:
        """The simulator's truth in the system's unknowns (mas, mas/yr, γ − 1).

        Parameters
        ----------
        stars
            Truth ``stars`` (or ``catalogue``) table: source_id and ``delta_*_uas``.
        attitude
            Truth ``gsr_attitude`` table: coeff_index and ``theta_*_uas``.
        instrument
            Truth ``gsr_instrument`` table: column and value_uas.
        gamma_minus_one
            True γ − 1 (truth ``gsr_global``).

        Raises
        ------
        GsrInputError
            A star, coefficient or instrument column of the system is missing from the
            truth.
        """
        lay = self.system.layout
        x = np.zeros(lay.n_unknowns)
        names = ("delta_ra_cosdec_uas", "delta_dec_uas", "delta_parallax_uas")
        names += ("delta_pmra_uasyr", "delta_pmdec_uasyr")
        delta = np.stack([_np(stars, n) for n in names], axis=1)
        lay.astrometric(x)[:] = delta[_lookup(_np(stars, "source_id"), self.source_id, "star")]
        theta = np.stack([_np(attitude, f"theta_{a}_uas") for a in "xyz"], axis=1)
        k = _lookup(_np(attitude, "coeff_index"), self.coeff_index, "attitude coefficient")
        lay.attitude(x)[:] = theta[k]
        k = _lookup(_np(instrument, "column"), self.instr_column, "instrument column")
        lay.instrument(x)[:] = _np(instrument, "value_uas")[k]
        x /= UAS_PER_MAS
        if lay.n_glob:
            lay.glob(x)[:] = gamma_minus_one
        return x

    def with_constraint_rhs_of(self, x: NDArray[np.float64]) -> GsrSystem:
        """The system whose constraint equations hold exactly for ``x``.

        The data fix the solution only up to the gauge (frame rotation and spin, mean
        attitude); a truth that does not satisfy ``C x = 0`` is compared with the
        solution in its own gauge by giving the constraints the right-hand side ``C x``.
        """
        c = self.system.constraints
        assert c is not None
        rows = np.repeat(np.arange(c.n_rows), np.diff(c.indptr))
        cx = np.bincount(rows, weights=c.data * x[c.indices], minlength=c.n_rows)
        return self.system.with_constraints(Constraints(c.indptr, c.indices, c.data, cx, c.names))


def _np(table: pa.Table, name: str) -> NDArray:
    return table.column(name).to_numpy()


def _lookup(keys: NDArray, wanted: NDArray, what: str) -> NDArray[np.int64]:
    order = np.argsort(keys, kind="stable")
    pos = np.minimum(np.searchsorted(keys, wanted, sorter=order), max(keys.size - 1, 0))
    hit = keys[order[pos]] == wanted if keys.size else np.zeros(wanted.shape, bool)
    if not hit.all():
        raise GsrInputError(
            f"the truth lacks {int((~hit).sum())} {what}(s) of the system, e.g. "
            f"{wanted[~hit][:5].tolist()}; give the truth tables of every chunk solved"
        )
    return order[pos]


def _lists(table: pa.Table, name: str, width: int, obs_id: NDArray[np.int64]) -> NDArray:
    col = table.column(name).combine_chunks()
    lengths = np.diff(col.offsets.to_numpy())
    bad = lengths != width
    if bad.any():
        raise GsrInputError(
            f"observations {obs_id[bad][:5].tolist()} have {lengths[bad][:5].tolist()} values "
            f"in {name!r}, expected {width}; the rows are not in the gsr_observations format"
        )
    start = col.offsets[0].as_py()
    values = col.values.slice(start, width * len(col)).to_numpy(zero_copy_only=False)
    return values.reshape(len(col), width)


def _nonfinite(obs_id: NDArray[np.int64], **arrays: NDArray) -> None:
    for name, a in arrays.items():
        ok = np.isfinite(a) if a.ndim == 1 else np.isfinite(a).all(axis=1)
        if not ok.all():
            raise NonFiniteError(
                f"observations {obs_id[~ok][:5].tolist()} ({int((~ok).sum())} rows) have NaN "
                f"or infinite values in {name!r}; drop or repair them upstream before solving"
            )


def astrometric_truth(stars: pa.Table) -> pa.Table:
    """A ``gsr_astrometric_truth`` table (mas, mas/yr) from simulator truth, for reports."""
    names = ("ra_cosdec", "dec", "parallax", "pmra", "pmdec")
    units = ("uas", "uas", "uas", "uasyr", "uasyr")
    _, first = np.unique(_np(stars, "source_id"), return_index=True)
    cols: dict[str, NDArray] = {"source_id": _np(stars, "source_id")[first].astype(np.int64)}
    for n, u in zip(names, units, strict=True):
        out = f"delta_{n}_{u.replace('uas', 'mas')}"
        cols[out] = _np(stars, f"delta_{n}_{u}")[first] / UAS_PER_MAS
    return pa.table(cols)


def adapt(
    observations: pa.Table,
    catalogue: pa.Table,
    *,
    solve_gamma: bool = True,
    knot_ns: int | None = None,
    instrument_terms: tuple[int, ...] | None = None,
    min_star_rcond: float = 1e-9,
    min_star_rows: int = 10,
    n_blocks: int = 16,
) -> GsrInput:
    """Build the GSR system of a ``gsr_observations`` table (one day or many).

    Parameters
    ----------
    observations
        Rows in the ``gsr_observations`` format, in any order.
    catalogue
        Reference positions (``source_id``, ``ra_deg``, ``dec_deg``) of every star the
        rows name, for the frame constraints.
    solve_gamma
        Solve for PPN γ − 1 (the global unknown).
    knot_ns
        Attitude knot spacing; fitted to the rows when None (needs rows in at least two
        knot intervals).
    instrument_terms
        Positions (0-5) in the rows' 6 instrument terms to solve for; the others are
        taken as calibrated (their partials ignored). None: all six.
    min_star_rcond, min_star_rows
        Stars whose column-normalised 5×5 normal matrix has a reciprocal condition
        below ``min_star_rcond``, or with fewer rows, are left out (with their rows): a
        span of a few days sees many stars once, in one scan direction, which fixes
        only their along-scan position. The solver itself refuses singular blocks.
    n_blocks
        Work blocks of the solver (fixed per system, for bit-for-bit resumes).

    Raises
    ------
    GsrInputError
        Missing columns, malformed lists, NaN or infinite values, stars missing from the
        catalogue, partials without the solver's structure, or no rows left.
    """
    missing = [c for c in _REQUIRED if c not in observations.column_names]
    if missing:
        raise GsrInputError(
            f"the observations lack column(s) {missing}; give a gsr_observations table"
        )
    for name in ("source_id", "ra_deg", "dec_deg"):
        if name not in catalogue.column_names:
            raise GsrInputError(f"the reference catalogue lacks column {name!r}")
    n_in = observations.num_rows
    if n_in == 0:
        raise EmptySystemError("no GSR observations to solve; check the OBMT range")
    obs_id = _np(observations, "obs_id").astype(np.int64)
    source = _np(observations, "source_id").astype(np.int64)
    obmt = _np(observations, "obmt_ns").astype(np.int64)
    resid = _np(observations, "al_residual_uas").astype(np.float64)
    err = _np(observations, "al_error_uas").astype(np.float64)
    gamma = _np(observations, "gamma_partial_uas").astype(np.float64)
    first = _np(observations, "att_first_coeff").astype(np.int64)
    astro = _lists(observations, "astro_partials", N_ASTRO, obs_id).astype(np.float64)
    att = _lists(observations, "att_partials", N_AXES * N_SPLINE, obs_id).astype(np.float64)
    cols = _lists(observations, "instr_cols", N_INSTR, obs_id).astype(np.int64)
    ipart = _lists(observations, "instr_partials", N_INSTR, obs_id).astype(np.float64)
    _nonfinite(
        obs_id,
        al_residual_uas=resid,
        al_error_uas=err,
        astro_partials=astro,
        att_partials=att,
        instr_partials=ipart,
        gamma_partial_uas=gamma,
    )
    bad = err <= 0
    if bad.any():
        raise GsrInputError(
            f"observations {obs_id[bad][:5].tolist()} have al_error_uas <= 0; errors must be > 0"
        )

    # stars: every source must be in the reference catalogue
    cat_id = _np(catalogue, "source_id").astype(np.int64)
    cat_id, cat_first = np.unique(cat_id, return_index=True)
    pos = np.minimum(np.searchsorted(cat_id, source), max(cat_id.size - 1, 0))
    known = (cat_id[pos] == source) if cat_id.size else np.zeros(n_in, bool)
    if not known.all():
        unknown = np.unique(source[~known])
        raise InvalidIndexError(
            f"{int((~known).sum())} observations (e.g. obs_id {obs_id[~known][:5].tolist()}) "
            f"reference {unknown.size} stars missing from the reference catalogue (source_id "
            f"{unknown[:5].tolist()}); add them to the catalogue or drop their rows"
        )

    # attitude: axis factor × B-spline weights, and the position inside the knot interval
    att = att.reshape(n_in, N_AXES, N_SPLINE)
    factor = att.sum(axis=2)
    main = np.argmax(np.abs(factor), axis=1)
    rows = np.arange(n_in)
    scale = np.abs(factor[rows, main])
    if np.any(scale == 0):
        raise GsrInputError(
            f"observations {obs_id[scale == 0][:5].tolist()} have all-zero attitude partials"
        )
    weights = att[rows, main] / factor[rows, main, None]
    tau = np.clip(weights @ np.arange(N_SPLINE, dtype=np.float64) - 1.0, 0.0, 1.0)
    model = factor[:, :, None] * bspline_weights(tau)[:, None, :]
    off = np.abs(att - model).max(axis=(1, 2)) / scale
    bad = off > _SPLINE_TOL
    if bad.any():
        raise GsrInputError(
            f"observations {obs_id[bad][:5].tolist()}: the 12 attitude partials are not an "
            "axis factor times cubic B-spline weights (axis-major, 4 per axis) as the solver "
            f"assumes (departure up to {off.max():.1e} of the factor)"
        )
    spline_pos = first + tau  # in knot intervals from the absolute knot 0
    if knot_ns is None:
        knot_ns, origin_ns = _fit_knots(obmt, spline_pos)
    else:
        knot_ns = int(knot_ns)
        origin_ns = int(np.round(np.median(obmt - spline_pos * knot_ns)))
    off = np.abs((obmt - origin_ns) / knot_ns - spline_pos)
    bad = off > _KNOT_TOL
    if bad.any():
        raise GsrInputError(
            f"observations {obs_id[bad][:5].tolist()}: the attitude B-spline position "
            f"(att_first_coeff and the weights) disagrees with obmt_ns by up to {off.max():.2e} "
            f"knot intervals for knots every {knot_ns} ns from OBMT {origin_ns}; the knots "
            "must be uniform (give knot_ns if the rows span a single knot interval)"
        )

    # astrometric epoch: proper-motion partials = position partials × (t − epoch) / year
    t_abs = (obmt - origin_ns) / NS_PER_DAY  # days from the absolute knot 0
    use_ra = np.abs(astro[:, 0]) >= np.abs(astro[:, 1])
    num = np.where(use_ra, astro[:, 3], astro[:, 4])
    den = np.where(use_ra, astro[:, 0], astro[:, 1])
    implied = t_abs - DAYS_PER_YEAR * num / den
    epoch_abs = float(np.median(implied))
    model = astro[:, :2] * ((t_abs - epoch_abs) / DAYS_PER_YEAR)[:, None]
    spread = np.abs(astro[:, 3:] - model).max(axis=1) / np.abs(astro[:, :2]).max(axis=1)
    bad = spread * DAYS_PER_YEAR > _EPOCH_TOL_DAYS
    if bad.any():
        raise GsrInputError(
            f"observations {obs_id[bad][:5].tolist()}: the proper-motion partials are not the "
            "position partials times (t - epoch) in Julian years for one epoch (found "
            f"epochs {np.unique(np.round(implied[bad], 3))[:3].tolist()} vs {epoch_abs:.3f} "
            "days); the solver assumes a single reference epoch"
        )

    if instrument_terms is not None:
        cols, ipart = _reduce_instrument(cols, ipart, instrument_terms)

    # stars the rows can determine
    keep, dropped = _select_stars(source, astro, err, min_star_rcond, min_star_rows)
    if not keep.any():
        raise EmptySystemError(
            f"none of the {np.unique(source).size} stars has observations that fix its 5 "
            "astrometric parameters (several scan directions and epochs); solve a longer "
            "OBMT range"
        )
    if not keep.all():
        source, obmt, resid, err, gamma, first, obs_id = (
            a[keep] for a in (source, obmt, resid, err, gamma, first, obs_id)
        )
        astro, factor, cols, ipart = (a[keep] for a in (astro, factor, cols, ipart))

    stars, star = np.unique(source, return_inverse=True)
    cat_rows = cat_first[np.searchsorted(cat_id, stars)]
    ra = np.deg2rad(_np(catalogue, "ra_deg").astype(np.float64)[cat_rows])
    dec = np.deg2rad(_np(catalogue, "dec_deg").astype(np.float64)[cat_rows])

    j0 = int(first.min())
    n_att = int(first.max()) - j0 + N_SPLINE
    origin_local = origin_ns + j0 * knot_ns
    t = (obmt - origin_local) / NS_PER_DAY
    epoch = epoch_abs - j0 * knot_ns / NS_PER_DAY

    order = np.lexsort((t, star))  # make_system's row order
    columns, compact = np.unique(cols, return_inverse=True)
    compact = compact.reshape(cols.shape)
    configs, instr = np.unique(compact, axis=0, return_inverse=True)

    system = make_system(
        n_stars=stars.size,
        n_att=n_att,
        n_instr=columns.size,
        star=star,
        knot=first - j0,
        instr=instr.reshape(-1),
        instr_cols=configs,
        t=t,
        astro=astro[:, :3],
        attitude=factor,
        instrument=ipart,
        rhs=resid / UAS_PER_MAS,
        sigma=err / UAS_PER_MAS,
        glob=gamma / UAS_PER_MAS if solve_gamma else None,
        knot_t0=0.0,
        knot_dt=knot_ns / NS_PER_DAY,
        epoch=epoch,
        n_blocks=n_blocks,
    )
    lay = system.layout
    constraints = _weigh_like_data(
        Constraints.concatenate(frame_constraints(ra, dec, lay), attitude_constraints(lay)),
        observation_column_norms(system),
    )
    return GsrInput(
        system=system.with_constraints(constraints),
        source_id=stars.astype(np.int64),
        ra_rad=ra,
        dec_rad=dec,
        coeff_index=np.arange(j0, j0 + n_att, dtype=np.int64),
        instr_column=columns.astype(np.int64),
        knot_ns=int(knot_ns),
        knot_origin_ns=int(origin_local),
        epoch_days=float(epoch),
        dropped_sources=dropped,
        dropped_rows=int(n_in - system.n_rows),
        n_rows_in=n_in,
        obs_id=obs_id[order],
        obmt_ns=obmt[order],
    )


def _weigh_like_data(c: Constraints, obs_norms: NDArray[np.float64]) -> Constraints:
    """Scale each constraint row to a typical norm of the data columns it touches.

    Divided by the square root of its length, so that a row weighs like one column of
    data: rows much heavier than the data swamp the columns they touch after the
    solver's column scaling (the x and y attitude columns, seen only through the small
    across-scan field angle, are 100 times lighter than the z ones) and LSQR stalls;
    much lighter rows leave the null space barely fixed.
    """
    data = c.data.copy()
    for k in range(c.n_rows):
        row = slice(c.indptr[k], c.indptr[k + 1])
        cols = c.indices[row]
        if cols.size:
            w = np.median(obs_norms[cols]) / math.sqrt(cols.size)
            data[row] *= w / max(float(np.sqrt(np.mean(data[row] ** 2))), 1e-300)
    return Constraints(c.indptr, c.indices, data, c.rhs, c.names)


def _reduce_instrument(
    cols: NDArray[np.int64], ipart: NDArray[np.float64], terms: tuple[int, ...]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Keep the solved terms; the others point at a solved column with a zero partial.

    The solver's rows always hold 6 instrument unknowns; repeating a column with a zero
    coefficient adds nothing to the products and keeps the unsolved columns out of the
    layout (an unknown in no row would make the system singular).
    """
    solved = sorted(set(terms))
    if not solved or solved[0] < 0 or solved[-1] >= N_INSTR:
        raise GsrInputError(f"instrument_terms={terms!r}: give positions in 0..{N_INSTR - 1}")
    cols, ipart = cols.copy(), ipart.copy()
    for k in range(N_INSTR):
        if k not in solved:
            cols[:, k] = cols[:, solved[0]]
            ipart[:, k] = 0.0
    return cols, ipart


def _fit_knots(obmt: NDArray[np.int64], spline_pos: NDArray[np.float64]) -> tuple[int, int]:
    """Knot spacing and origin (ns) from rows' B-spline positions: a straight-line fit.

    The rows are put in a canonical order first: the sums' rounding, and so the origin's
    last nanosecond, must not depend on the order the rows came in (one table, or the
    same rows read back month by month).
    """
    order = np.lexsort((spline_pos, obmt))
    obmt, spline_pos = obmt[order], spline_pos[order]
    ref = int(obmt[0])
    dt = (obmt - ref).astype(np.float64)
    p0 = float(spline_pos.mean())
    dp = spline_pos - p0
    var = float(dp @ dp)
    if var == 0 or np.ptp(np.floor(spline_pos)) < 1:
        raise GsrInputError(
            "the rows lie in a single attitude knot interval, so the knot spacing cannot be "
            "fitted; give knot_ns"
        )
    slope = float(dp @ (dt - dt.mean())) / var
    knot_ns = round(slope)
    origin = ref + round(float(np.mean(dt - spline_pos * knot_ns)))
    return int(knot_ns), int(origin)


def _select_stars(
    source: NDArray[np.int64],
    astro: NDArray[np.float64],
    err: NDArray[np.float64],
    min_rcond: float,
    min_rows: int,
) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
    """Rows to keep, and the source ids of the stars left out."""
    stars, star, counts = np.unique(source, return_inverse=True, return_counts=True)
    a = astro / err[:, None]
    blocks = np.zeros((stars.size, N_ASTRO, N_ASTRO))
    np.add.at(blocks, star, a[:, :, None] * a[:, None, :])
    d = np.sqrt(np.einsum("sii->si", blocks))
    d[d == 0] = 1.0
    eig = np.linalg.eigvalsh(blocks / d[:, :, None] / d[:, None, :])
    rcond = eig[:, 0] / np.maximum(eig[:, -1], np.finfo(float).tiny)
    good = ((rcond >= min_rcond) | (min_rcond <= 0)) & (counts >= min_rows)
    return good[star], stars[~good].astype(np.int64)


def observations_from_system(
    system: GsrSystem,
    *,
    source_id: NDArray[np.int64] | None = None,
    origin_ns: int = 0,
) -> pa.Table:
    """The rows of a GsrSystem in the ``gsr_observations`` format: the inverse of adapt.

    For tests and demos: the test problem (``dpct.testing.gsr_problem.make_problem``)
    solves in a second what the mission simulator needs a simulated year for, and this
    turns its system into rows that the pipeline reads like any delivery. Times are
    shifted so that the system's first knot falls on ``origin_ns``; fields the system
    does not know (FoV, CCD) are 0, and the scan angle is that of the astrometric
    partials.
    """
    m = system.n_rows
    lay = system.layout
    coef = system.coef.astype(np.float64)
    t = system.t - system.knot_t0
    obmt = origin_ns + np.round(t * NS_PER_DAY).astype(np.int64)
    tau = np.clip(t / system.knot_dt - system.knot, 0.0, 1.0)
    att = (coef[:, 3:6, None] * bspline_weights(tau)[:, None, :]).reshape(m, -1)
    dt = (system.t - system.epoch) / DAYS_PER_YEAR
    astro = np.concatenate([coef[:, :3], coef[:, :2] * dt[:, None]], axis=1)
    sid = np.arange(lay.n_stars, dtype=np.int64) if source_id is None else source_id
    gamma = coef[:, 12] * UAS_PER_MAS if lay.n_glob else np.zeros(m)

    def lists(values: NDArray, type_: pa.DataType) -> pa.Array:
        width = values.shape[1]
        offsets = pa.array(np.arange(0, m * width + 1, width, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), type=type_))

    zeros = np.zeros(m, np.int64)
    table = pa.table(
        {
            "obs_id": np.arange(m, dtype=np.int64),
            "source_id": np.asarray(sid, np.int64)[system.star],
            "obmt_ns": obmt,
            "fov": zeros.astype(np.int8),
            "ccd_index": zeros.astype(np.int16),
            "ccd_row": zeros.astype(np.int8),
            "ccd_strip": zeros.astype(np.int8),
            "scan_angle_rad": np.arctan2(coef[:, 0], coef[:, 1]),
            "al_residual_uas": system.rhs * UAS_PER_MAS,
            "al_error_uas": UAS_PER_MAS / system.inv_sigma.astype(np.float64),
            "astro_partials": lists(astro, pa.float64()),
            "att_first_coeff": system.knot.astype(np.int64),
            "att_partials": lists(att, pa.float64()),
            "instr_cols": lists(system.instr_cols[system.instr], pa.int32()),
            "instr_partials": lists(coef[:, 6:12], pa.float64()),
            "gamma_partial_uas": gamma,
        }
    )
    from dpct.datamodel import DATA_TYPES

    return DATA_TYPES.get("gsr_observations").conform(table, where="observations_from_system")
