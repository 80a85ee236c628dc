"""The compact GSR system: per-row indices plus the few numbers its 24 coefficients come from.

One row per along-scan observation, with the AVU-GSR structure (5 astrometric, 12 attitude,
6 instrument and 0 or 1 global non-zeros), and a short list of constraint equations that fix
the null space. Only what the kernels cannot derive is stored; see ``docs/gsr.md`` for the
layout and its bytes per observation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from dpct.pipelines.gsr._exceptions import LayoutError

N_ASTRO = 5
"""Astrometric unknowns per star: ra*cos(dec), dec, parallax, pmra*cos(dec), pmdec."""
N_AXES = 3
"""Attitude axes (rotations about the scanning reference system's x, y and z)."""
N_SPLINE = 4
"""Cubic B-spline: 4 coefficients per axis are non-zero at any time."""
N_INSTR = 6
"""Instrument unknowns per row."""
DAYS_PER_YEAR = 365.25
"""Julian year, the time unit of proper motions."""

ASTRO_NAMES = ("ra*", "dec", "parallax", "pmra*", "pmdec")
COEF_NAMES = (
    "a_ra", "a_dec", "a_plx", "att_x", "att_y", "att_z",
    *(f"instr_{k}" for k in range(N_INSTR)),
    "glob",
)  # fmt: skip
"""Columns of ``GsrSystem.coef`` (the last one only when the system has a global unknown)."""


@dataclass(frozen=True)
class UnknownLayout:
    """Numbering of the unknowns: stars, then attitude, then instrument, then global.

    Attitude coefficients are stored knot-major, ``(knot, axis)``, so the 12 attitude
    unknowns of a row are 12 consecutive numbers: one or two cache lines instead of three
    (AVU-GSR stores them axis-major; :meth:`attitude` gives the ``(n_att, 3)`` view).

    Parameters
    ----------
    n_stars
        Stars, 5 unknowns each.
    n_att
        B-spline coefficients per attitude axis (``intervals + 3`` for a cubic spline).
    n_instr
        Instrument unknowns.
    n_glob
        Global unknowns: 0, or 1 for the PPN parameter gamma.
    """

    n_stars: int
    n_att: int
    n_instr: int
    n_glob: int = 0

    def __post_init__(self) -> None:
        if min(self.n_stars, self.n_att, self.n_instr) < 0 or self.n_glob not in (0, 1):
            raise LayoutError(
                f"unknown layout {self}: counts must be >= 0 and n_glob 0 or 1; "
                "fix the sizes given to make_system"
            )

    @property
    def att_offset(self) -> int:
        """Index of the first attitude unknown."""
        return N_ASTRO * self.n_stars

    @property
    def instr_offset(self) -> int:
        """Index of the first instrument unknown."""
        return self.att_offset + N_AXES * self.n_att

    @property
    def glob_offset(self) -> int:
        """Index of the global unknown (when ``n_glob == 1``)."""
        return self.instr_offset + self.n_instr

    @property
    def n_unknowns(self) -> int:
        """Length of the unknown vector."""
        return self.glob_offset + self.n_glob

    @property
    def n_shared(self) -> int:
        """Unknowns shared between stars (attitude, instrument, global): scattered updates."""
        return self.n_unknowns - self.att_offset

    def astrometric(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """View of ``x`` as ``(n_stars, 5)``."""
        return x[: self.att_offset].reshape(self.n_stars, N_ASTRO)

    def attitude(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """View of ``x`` as ``(n_att, 3)``: B-spline coefficient k of axis a at ``[k, a]``."""
        return x[self.att_offset : self.instr_offset].reshape(self.n_att, N_AXES)

    def instrument(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """View of the instrument unknowns."""
        return x[self.instr_offset : self.glob_offset]

    def glob(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """View of the global unknowns (length 0 or 1)."""
        return x[self.glob_offset : self.n_unknowns]

    def name(self, j: int) -> str:
        """Readable name of unknown ``j``, for error messages."""
        if j < self.att_offset:
            return f"star {j // N_ASTRO} {ASTRO_NAMES[j % N_ASTRO]}"
        if j < self.instr_offset:
            k, a = divmod(j - self.att_offset, N_AXES)
            return f"attitude axis {'xyz'[a]} coefficient {k}"
        if j < self.glob_offset:
            return f"instrument unknown {j - self.instr_offset}"
        return "global unknown (gamma)"


@dataclass(frozen=True, eq=False)
class Constraints:
    """Constraint equations ``C x = rhs`` as a small CSR matrix, already weighted.

    They are few (the null space has a handful of directions) but may touch every star,
    so they are kept apart from the observation rows and applied serially.
    """

    indptr: NDArray[np.int64]
    indices: NDArray[np.int64]
    data: NDArray[np.float64]
    rhs: NDArray[np.float64]
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, dtype in (
            ("indptr", np.int64),
            ("indices", np.int64),
            ("data", np.float64),
            ("rhs", np.float64),
        ):
            object.__setattr__(self, name, np.ascontiguousarray(getattr(self, name), dtype))
        k = self.rhs.shape[0]
        if (
            self.indptr.shape != (k + 1,)
            or self.indptr[0] != 0
            or self.indptr[-1] != self.indices.shape[0]
            or self.data.shape != self.indices.shape
            or np.any(np.diff(self.indptr) < 0)
        ):
            raise LayoutError(
                f"constraints: indptr (len {self.indptr.shape[0]}), indices (len "
                f"{self.indices.shape[0]}), data and rhs (len {k}) do not form a CSR matrix; "
                "build them with Constraints.from_rows"
            )
        if self.names and len(self.names) != k:
            raise LayoutError(f"constraints: {len(self.names)} names for {k} rows")

    @property
    def n_rows(self) -> int:
        """Number of constraint equations."""
        return int(self.rhs.shape[0])

    @classmethod
    def from_rows(
        cls,
        rows: list[tuple[ArrayLike, ArrayLike]],
        rhs: ArrayLike | None = None,
        names: tuple[str, ...] = (),
    ) -> Constraints:
        """Build from a list of ``(columns, values)`` pairs, one per equation."""
        cols = [np.asarray(c, np.int64) for c, _ in rows]
        vals = [np.asarray(v, np.float64) for _, v in rows]
        indptr = np.zeros(len(rows) + 1, np.int64)
        indptr[1:] = np.cumsum([c.size for c in cols])
        return cls(
            indptr=indptr,
            indices=np.concatenate(cols) if cols else np.zeros(0, np.int64),
            data=np.concatenate(vals) if vals else np.zeros(0),
            rhs=np.zeros(len(rows)) if rhs is None else np.asarray(rhs, np.float64),
            names=names,
        )

    @staticmethod
    def concatenate(*parts: Constraints) -> Constraints:
        """Stack several sets of constraint equations."""
        offsets = np.cumsum([0, *(p.indices.shape[0] for p in parts[:-1])])
        return Constraints(
            indptr=np.concatenate(
                [
                    np.zeros(1, np.int64),
                    *(p.indptr[1:] + o for p, o in zip(parts, offsets, strict=True)),
                ]
            ),
            indices=np.concatenate([p.indices for p in parts]),
            data=np.concatenate([p.data for p in parts]),
            rhs=np.concatenate([p.rhs for p in parts]),
            names=sum((p.names or ("",) * p.n_rows for p in parts), ()),
        )


@dataclass(frozen=True, eq=False)
class GsrSystem:
    """Weighted least-squares system of the GSR, stored compactly; build it with make_system.

    Row ``i`` reads ``sum_j A_ij x_j = rhs_i`` with weight ``inv_sigma_i**2``, where the 24
    non-zeros ``A_ij`` are:

    - astrometric, columns ``5 * star[i] + (0..4)``:
      ``a_ra, a_dec, a_plx, a_ra * dt, a_dec * dt`` with ``dt = (t - epoch) / 365.25`` years;
    - attitude, columns ``att_offset + 3 * (knot[i] + q) + axis`` for ``q = 0..3``:
      ``att_axis * B_q(tau)``, the cubic B-spline weights at
      ``tau = (t - knot_t0) / knot_dt - knot[i]``;
    - instrument, columns ``instr_offset + instr_cols[instr[i], k]``: ``instr_k``;
    - global, column ``glob_offset``: ``glob`` (when the layout has one).

    Parameters
    ----------
    layout
        Sizes and numbering of the unknowns.
    star, knot, instr
        Per row (int32): star index, first attitude coefficient of the row (its knot
        interval), and instrument configuration (a row of ``instr_cols``).
    instr_cols
        ``(n_configurations, 6)`` int32: the instrument unknowns of each configuration.
    t
        Per row observation time (float64, days from the mission origin).
    coef
        ``(m, 12 + n_glob)`` float32, columns :data:`COEF_NAMES`: the numbers the 24
        coefficients are computed from. Partial derivatives need no more than float32's
        7 digits; the right-hand side and the times stay float64.
    rhs
        Per row observed minus computed (float64, mas).
    inv_sigma
        Per row ``1 / sigma`` (float32, 1/mas): the square root of the weight.
    knot_t0, knot_dt
        Start and spacing of the uniform attitude knots (days).
    epoch
        Reference epoch of the astrometric parameters (days).
    constraints
        Constraint equations, or None.
    blocks
        Row boundaries of the parallel work blocks, at star boundaries (from make_system).
    """

    layout: UnknownLayout
    star: NDArray[np.int32]
    knot: NDArray[np.int32]
    instr: NDArray[np.int32]
    instr_cols: NDArray[np.int32]
    t: NDArray[np.float64]
    coef: NDArray[np.float32]
    rhs: NDArray[np.float64]
    inv_sigma: NDArray[np.float32]
    knot_t0: float
    knot_dt: float
    epoch: float = 0.0
    constraints: Constraints | None = None
    blocks: NDArray[np.int64] = field(default_factory=lambda: np.zeros(1, np.int64))

    def __post_init__(self) -> None:
        m = self.star.shape[0]
        expected = {
            "star": (np.int32, (m,)),
            "knot": (np.int32, (m,)),
            "instr": (np.int32, (m,)),
            "t": (np.float64, (m,)),
            "coef": (np.float32, (m, 12 + self.layout.n_glob)),
            "rhs": (np.float64, (m,)),
            "inv_sigma": (np.float32, (m,)),
        }
        for name, (dtype, shape) in expected.items():
            a = getattr(self, name)
            if a.dtype != dtype or a.shape != shape or not a.flags.c_contiguous:
                raise LayoutError(
                    f"GsrSystem.{name} is {a.dtype} {a.shape}, expected contiguous "
                    f"{np.dtype(dtype)} {shape}; build the system with make_system"
                )
        ic = self.instr_cols
        if ic.dtype != np.int32 or ic.ndim != 2 or ic.shape[1] != N_INSTR:
            raise LayoutError(
                f"GsrSystem.instr_cols is {ic.dtype} {ic.shape}, expected int32 (n, {N_INSTR})"
            )
        b = self.blocks
        if b.dtype != np.int64 or b[0] != 0 or b[-1] != m or np.any(np.diff(b) < 0):
            raise LayoutError(
                "GsrSystem.blocks must run from 0 to the number of rows; build with make_system"
            )
        if not self.knot_dt > 0:
            raise LayoutError(f"knot spacing knot_dt={self.knot_dt} must be > 0 days")

    @property
    def n_rows(self) -> int:
        """Observation rows (constraint equations not counted)."""
        return int(self.star.shape[0])

    @property
    def n_constraints(self) -> int:
        """Constraint equations."""
        return 0 if self.constraints is None else self.constraints.n_rows

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the full matrix, observation rows then constraint rows."""
        return (self.n_rows + self.n_constraints, self.layout.n_unknowns)

    def weighted_rhs(self) -> NDArray[np.float64]:
        """Right-hand side of the weighted problem: observation rows, then constraints."""
        obs = self.rhs * self.inv_sigma
        if self.constraints is None:
            return obs
        return np.concatenate([obs, self.constraints.rhs])

    def with_rhs(self, rhs: ArrayLike) -> GsrSystem:
        """The same matrix with another right-hand side (observations only), sharing arrays."""
        rhs = np.ascontiguousarray(rhs, np.float64)
        return _replace(self, rhs=rhs)

    def with_constraints(self, constraints: Constraints | None) -> GsrSystem:
        """The same observations with other constraint equations (or none)."""
        return _replace(self, constraints=constraints)

    def star_row_ranges(self) -> NDArray[np.int64]:
        """``ptr`` such that the rows of star ``s`` are ``ptr[s]:ptr[s + 1]`` (rows are sorted)."""
        return np.searchsorted(self.star, np.arange(self.layout.n_stars + 1)).astype(np.int64)

    def memory_per_observation(self, n_blocks: int | None = None) -> dict[str, float]:
        """Bytes held per observation while solving, by item, and their ``total``.

        Counts every per-row array (indices, coefficient inputs, right-hand side, weight),
        the solver's per-row scratch (the LSQR vector u, float64), and, amortised over the
        rows, everything else the solver holds: the instrument table, the constraint
        equations, and its per-unknown vectors (x, v, w, column scale, variance, A^T u and
        one scatter accumulator per work block).
        """
        m = max(self.n_rows, 1)
        out: dict[str, float] = {
            name: getattr(self, name).nbytes / m
            for name in ("star", "knot", "instr", "t", "coef", "rhs", "inv_sigma")
        }
        out["u (LSQR scratch)"] = 8.0
        nb = len(self.blocks) - 1 if n_blocks is None else n_blocks
        n = self.layout.n_unknowns
        shared = self.instr_cols.nbytes + self.blocks.nbytes + 6 * 8 * n
        shared += nb * 8 * self.layout.n_shared
        if self.constraints is not None:
            c = self.constraints
            shared += c.indptr.nbytes + c.indices.nbytes + c.data.nbytes + 2 * c.rhs.nbytes
        out["shared, amortised"] = shared / m
        out["total"] = float(sum(out.values()))
        return out

    def fingerprint(self) -> str:
        """Digest of everything that defines the system, to match checkpoints to it."""
        h = hashlib.blake2b(digest_size=20)
        lay = self.layout
        sizes = (lay.n_stars, lay.n_att, lay.n_instr, lay.n_glob, self.n_rows)
        h.update(repr((*sizes, self.knot_t0, self.knot_dt, self.epoch)).encode())
        arrays = [self.star, self.knot, self.instr, self.instr_cols, self.t, self.coef]
        arrays += [self.rhs, self.inv_sigma, self.blocks]
        if self.constraints is not None:
            c = self.constraints
            arrays += [c.indptr, c.indices, c.data, c.rhs]
        for a in arrays:
            h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
        return h.hexdigest()


def _replace(system: GsrSystem, **changes: object) -> GsrSystem:
    fields = {name: getattr(system, name) for name in system.__dataclass_fields__}
    fields.update(changes)
    return GsrSystem(**fields)  # type: ignore[arg-type]


def make_system(
    *,
    n_stars: int,
    n_att: int,
    n_instr: int,
    star: ArrayLike,
    knot: ArrayLike,
    instr: ArrayLike,
    instr_cols: ArrayLike,
    t: ArrayLike,
    astro: ArrayLike,
    attitude: ArrayLike,
    instrument: ArrayLike,
    rhs: ArrayLike,
    sigma: ArrayLike,
    glob: ArrayLike | None = None,
    knot_t0: float,
    knot_dt: float,
    epoch: float = 0.0,
    constraints: Constraints | None = None,
    n_blocks: int = 16,
) -> GsrSystem:
    """Pack observation rows into a :class:`GsrSystem`, sorted by star then time.

    Rows are sorted so that the astrometric part of ``A^T u`` can be written by parallel
    blocks of whole stars without write races, and a star's unknowns are read from cache.

    Parameters
    ----------
    n_stars, n_att, n_instr
        Number of stars, B-spline coefficients per attitude axis, instrument unknowns.
    star, knot, instr
        Per row: star index, knot interval (index of the first of the 4 non-zero B-spline
        coefficients) and instrument configuration (row of ``instr_cols``).
    instr_cols
        ``(n_configurations, 6)``: the 6 instrument unknowns of each configuration.
    t
        Observation times (days).
    astro
        ``(m, 3)``: along-scan partials with respect to ra*, dec and parallax
        (dimensionless; the proper-motion partials are these times ``(t - epoch)`` in years).
    attitude
        ``(m, 3)``: partials with respect to the attitude rotation about x, y, z.
    instrument
        ``(m, 6)``: partials with respect to the row's 6 instrument unknowns.
    rhs
        Observed minus computed along-scan angle (mas).
    sigma
        Observation standard errors (mas); the weights are ``1 / sigma**2``.
    glob
        Partials with respect to the global unknown (mas per unit), or None for none.
    knot_t0, knot_dt
        First knot and knot spacing (days).
    epoch
        Reference epoch of the astrometric parameters (days).
    constraints
        Constraint equations (see :func:`frame_constraints`, :func:`attitude_constraints`).
    n_blocks
        Work blocks for the parallel kernels. Fixed by the system, not by the thread
        count, so sums are added in the same order on any machine: a resumed solve
        continues bit for bit.

    Returns
    -------
    GsrSystem
        Not yet validated: :func:`validate_system` (called by ``solve``) checks indices,
        finiteness and rank.
    """
    star_a = np.asarray(star, np.int64)
    t_a = np.asarray(t, np.float64)
    m = star_a.shape[0]
    order = np.lexsort((t_a, star_a)) if m else np.zeros(0, np.int64)
    n_glob = 0 if glob is None else 1
    coef = np.empty((m, 12 + n_glob), np.float32)
    for lo, arr, width in ((0, astro, 3), (3, attitude, 3), (6, instrument, N_INSTR)):
        a = np.asarray(arr, np.float64).reshape(m, width)
        coef[:, lo : lo + width] = a[order]
    if glob is not None:
        coef[:, 12] = np.asarray(glob, np.float64).reshape(m)[order]
    sigma_a = np.asarray(sigma, np.float64).reshape(m)[order]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_sigma = (1.0 / sigma_a).astype(np.float32)

    def _int32(a: ArrayLike, name: str) -> NDArray[np.int32]:
        a64 = np.asarray(a, np.int64).reshape(m)[order]
        if m and (a64.min() < np.iinfo(np.int32).min or a64.max() > np.iinfo(np.int32).max):
            raise LayoutError(f"{name} indices do not fit in int32")
        return np.ascontiguousarray(a64, np.int32)

    star_s = _int32(star_a, "star")
    return GsrSystem(
        layout=UnknownLayout(n_stars, n_att, n_instr, n_glob),
        star=star_s,
        knot=_int32(knot, "knot"),
        instr=_int32(instr, "instrument"),
        instr_cols=np.ascontiguousarray(np.asarray(instr_cols, np.int64), np.int32).reshape(
            -1, N_INSTR
        ),
        t=np.ascontiguousarray(t_a[order]),
        coef=coef,
        rhs=np.ascontiguousarray(np.asarray(rhs, np.float64).reshape(m)[order]),
        inv_sigma=inv_sigma,
        knot_t0=float(knot_t0),
        knot_dt=float(knot_dt),
        epoch=float(epoch),
        constraints=constraints,
        blocks=star_blocks(star_s, n_blocks),
    )


def star_blocks(star: NDArray[np.int32], n_blocks: int) -> NDArray[np.int64]:
    """Split star-sorted rows into about ``n_blocks`` equal blocks that never split a star."""
    m = star.shape[0]
    if m == 0:
        return np.zeros(1, np.int64)
    targets = (np.arange(1, n_blocks) * m) // n_blocks
    # move each cut forward to the first row of the next star
    cuts = np.searchsorted(star, star[targets], side="left")
    cuts = np.where(cuts == targets, cuts, np.searchsorted(star, star[targets], side="right"))
    return np.unique(np.concatenate([[0], cuts, [m]])).astype(np.int64)
