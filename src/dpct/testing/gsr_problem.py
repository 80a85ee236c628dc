"""A small, honest GSR problem with its truth, for the solver's tests and benchmarks.

Stars are spread uniformly on the sphere. The mission's nominal scanning law
(:class:`~dpct.mission.NominalScanLaw`: 45 deg solar aspect, 63-day precession, the Sun
on its real orbit) carries two fields of view 106.5 deg apart over them; a star crossing
a field gives one along-scan observation per CCD strip (9), on one of 7 CCD rows. Each
observation is the star's along-scan field angle computed with the full non-linear model:

- astrometry: position, parallax (observer at L2, 1.01 times the Sun's distance),
  proper motion, and the Sun's light deflection scaled by ``(1 + gamma) / 2``;
- attitude: the nominal scanning law rotated by a small rotation whose components about
  the scanning frame's own x, y, z axes are cubic B-splines in time (uniform knots);
- instrument: per field, CCD row and strip, an along-scan offset that is a degree-5
  Legendre polynomial in the across-scan pixel coordinate (6 unknowns per row);

plus Gaussian noise. The truth differs from the starting point (reference catalogue,
nominal attitude, zero calibration, gamma = 1) by amounts like those of a real mission
start: 100 mas in position, up to ~30 arcsec of attitude, ~0.1 arcsec of calibration,
so that the linearisation matters and the outer loop has work to do.

Test support, not science: ``dpct.sim`` produces the observations of a simulated
mission; this module only needs to be good enough, and fast enough, to test the solver
against a known truth. Time ``t`` is in days since the start of the nominal scanning law.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from functools import cached_property

import numba as nb
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numpy.typing import NDArray

from dpct.mission import NominalScanLaw, heliotropic_frame
from dpct.mission.constants import (
    BASIC_ANGLE_RAD,
    DAY_NS,
    L2_DISTANCE_FACTOR,
    MAS,
    NS_PER_S,
    NSL_START_OBMT_NS,
    SCHWARZSCHILD_HALF_AU_RAD,
    SOLAR_ASPECT_DEG,
    SPIN_RATE_RAD_S,
    STRIP_PERIOD_NS,
)
from dpct.mission.scanlaw import hermite
from dpct.pipelines.gsr import (
    DAYS_PER_YEAR,
    N_ASTRO,
    N_AXES,
    N_INSTR,
    Constraints,
    GsrSystem,
    UnknownLayout,
    attitude_constraints,
    bspline_weights,
    frame_constraints,
    make_system,
    matvec,
    star_normal_blocks,
)

F64 = NDArray[np.float64]
F32 = NDArray[np.float32]
I32 = NDArray[np.int32]
I64 = NDArray[np.int64]

_TWO_PI = 2 * math.pi
_SPIN_RATE = SPIN_RATE_RAD_S * 86_400.0
"""Inertial spin rate (rad / day): field angles decrease at about this rate."""
SPIN_PERIOD_DAYS = _TWO_PI / _SPIN_RATE
STRIP_SPACING_RAD = STRIP_PERIOD_NS / NS_PER_S * SPIN_RATE_RAD_S
"""Along-scan distance between CCD strips: 4.85 s of scanning."""
_NODE_STEP_DAYS = 1800 / 86_400
"""Spacing of the scanning law's interpolation nodes (the law itself costs ~10 us/point)."""
_NODE_MARGIN_DAYS = 1.0
"""The nodes reach this far beyond the mission: transit searches look a little past it."""


@dataclass(frozen=True)
class SimulationConfig:
    """Size and realism knobs of the synthetic problem.

    Attributes
    ----------
    n_stars
        Stars drawn on the sphere (those with too few transits are dropped).
    mission_days
        Length of the simulated mission.
    knot_minutes
        Attitude knot spacing. Each knot interval needs several transits, so few stars
        need wide knots (a real GSR has ~10^8 stars and knots of ~30 s).
    field_ac_half_deg
        Half-width of the fields of view across scan (Gaia: 0.35 deg).
    n_ccd_rows, n_ccd_strips
        CCD rows across scan and strips along scan (Gaia's astrometric field: 7 x 9).
    sigma_mas
        Range of the per-star along-scan standard error (log-uniform).
    min_transits
        Stars seen in fewer field transits are dropped (too few for 5 parameters).
    min_star_rcond
        Stars whose (column-normalised) 5x5 normal matrix has a smaller reciprocal
        condition are dropped too: like the primary stars of a real solution, the stand-in
        keeps stars whose observations separate position, parallax and proper motion.
    gamma
        Include the PPN gamma as a global unknown.
    catalogue_error_mas, pm_error_mas_yr, parallax_mean_mas
        Spread of the reference catalogue's errors in position and proper motion,
        and mean parallax (the reference catalogue has zero parallaxes).
    attitude_error_mas
        Spread of the attitude's B-spline coefficients (about the nominal law).
    instrument_error_mas
        Spread of the calibration's Legendre coefficients, degree 0 first.
    n_blocks
        Work blocks of the system (see ``make_system``).
    seed
        Seed of every random draw.
    """

    n_stars: int = 10_000
    mission_days: float = 365.0
    knot_minutes: float = 480.0
    field_ac_half_deg: float = 0.35
    n_ccd_rows: int = 7
    n_ccd_strips: int = 9
    sigma_mas: tuple[float, float] = (0.2, 1.0)
    min_transits: int = 5
    min_star_rcond: float = 1e-5
    gamma: bool = True
    catalogue_error_mas: float = 100.0
    pm_error_mas_yr: float = 10.0
    parallax_mean_mas: float = 2.0
    attitude_error_mas: float = 15_000.0
    instrument_error_mas: tuple[float, ...] = (100.0, 30.0, 10.0, 3.0, 3.0, 1.0)
    n_blocks: int = 16
    seed: int = 0


# --------------------------------------------------------------------------- geometry


def _scan_nodes(mission_days: float) -> F64:
    """The nominal scanning law on nodes ``_NODE_STEP_DAYS`` apart, for :func:`_scan`.

    Row k is the law at ``t = k * step - margin`` (days). Columns come in pairs (value,
    rate times the step) for cubic Hermite interpolation: the rows a, b, z of the
    spin-free heliotropic frame (ICRS), the heliotropic spin phase (unwrapped) and the
    observer's position (au). Only the spin turns fast, and it is a phase: interpolating
    it and the slow frame keeps ``_scan`` cheap and smooth at any time.
    """
    n = math.ceil((mission_days + 2 * _NODE_MARGIN_DAYS) / _NODE_STEP_DAYS) + 2
    t_days = np.arange(n) * _NODE_STEP_DAYS - _NODE_MARGIN_DAYS
    obmt = NSL_START_OBMT_NS + np.round(t_days * DAY_NS).astype(np.int64)
    angles = NominalScanLaw().angles(obmt)
    frame, frame_dot = heliotropic_frame(angles)  # (n, 3 rows, 3), per second
    h = _NODE_STEP_DAYS * 86_400.0
    # the Sun's direction lies in the (a, z) plane at the solar aspect angle from z
    xi = math.radians(SOLAR_ASPECT_DEG)
    sun = math.cos(xi) * frame[:, 2] + math.sin(xi) * frame[:, 0]
    sun_dot = math.cos(xi) * frame_dot[:, 2] + math.sin(xi) * frame_dot[:, 0]
    r = angles["r_au"]
    r_dot = np.gradient(r, h)
    observer = -L2_DISTANCE_FACTOR * r[:, None] * sun
    observer_dot = -L2_DISTANCE_FACTOR * (r_dot[:, None] * sun + r[:, None] * sun_dot)
    cols = []
    for row in range(3):
        for c in range(3):
            cols += [frame[:, row, c], frame_dot[:, row, c] * h]
    cols += [np.unwrap(angles["omega"]), angles["omega_dot"] * h]
    for c in range(3):
        cols += [observer[:, c], observer_dot[:, c] * h]
    return np.ascontiguousarray(np.stack(cols, axis=1))


@nb.njit(cache=True)
def _scan(
    t: float, nodes: F64
) -> tuple[
    tuple[float, float, float],
    tuple[float, float, float],
    tuple[float, float, float],
    tuple[float, float, float],
]:
    """Nominal scanning law at time t (days): SRS axes x, y, z and observer position (AU)."""
    pos = (t + _NODE_MARGIN_DAYS) / _NODE_STEP_DAYS
    i = min(max(math.floor(pos), 0), nodes.shape[0] - 2)
    u = pos - i
    om = hermite(nodes, 18, i, u)
    co, so = math.cos(om), math.sin(om)
    a = (hermite(nodes, 0, i, u), hermite(nodes, 2, i, u), hermite(nodes, 4, i, u))
    b = (hermite(nodes, 6, i, u), hermite(nodes, 8, i, u), hermite(nodes, 10, i, u))
    z = (hermite(nodes, 12, i, u), hermite(nodes, 14, i, u), hermite(nodes, 16, i, u))
    # x = cos(omega) a + sin(omega) b, y = z x x = cos(omega) b - sin(omega) a
    return (
        (co * a[0] + so * b[0], co * a[1] + so * b[1], co * a[2] + so * b[2]),
        (co * b[0] - so * a[0], co * b[1] - so * a[1], co * b[2] - so * a[2]),
        z,
        (hermite(nodes, 20, i, u), hermite(nodes, 22, i, u), hermite(nodes, 24, i, u)),
    )


@nb.njit(cache=True)
def _dot(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


@nb.njit(cache=True)
def _wrap(a: float) -> float:
    """Angle wrapped to [-pi, pi)."""
    return (a + math.pi) % _TWO_PI - math.pi


@nb.njit(cache=True)
def _transits_of_star(
    u: tuple[float, float, float], field_phi: F64, zeta_max: float, n_rev: int, t_end: float,
    nodes: F64, out_t: F64, out_f: NDArray[np.int8], out_z: F64, write: bool,
) -> int:  # fmt: skip
    """Field-of-view centre crossings of a fixed direction u; returns how many."""
    n = 0
    margin = math.sin(zeta_max) + 0.03  # the spin axis moves < 1.5 deg per revolution
    for r in range(n_rev):
        t_r = r * SPIN_PERIOD_DAYS
        ax = _scan(t_r, nodes)
        if abs(_dot(ax[2], u)) > margin:
            continue
        for f in range(2):
            phi0 = math.atan2(_dot(ax[1], u), _dot(ax[0], u))
            t = t_r + ((phi0 - field_phi[f]) % _TWO_PI) / _SPIN_RATE
            for _ in range(4):  # the azimuth decreases at about the spin rate
                a = _scan(t, nodes)
                phi = math.atan2(_dot(a[1], u), _dot(a[0], u))
                t += _wrap(phi - field_phi[f]) / _SPIN_RATE
            if t < t_r or t >= t_r + SPIN_PERIOD_DAYS or t >= t_end:
                continue
            zeta = math.asin(min(1.0, max(-1.0, _dot(_scan(t, nodes)[2], u))))
            if abs(zeta) >= zeta_max:
                continue
            if write:
                out_t[n] = t
                out_f[n] = f
                out_z[n] = zeta
            n += 1
    return n


@nb.njit(parallel=True, cache=True)
def _find_transits(
    ux: F64,
    uy: F64,
    uz: F64,
    field_phi: F64,
    zeta_max: float,
    n_rev: int,
    t_end: float,
    nodes: F64,
) -> tuple[I64, F64, NDArray[np.int8], F64]:
    """All transits of all stars: (star, time, field, zeta at the field centre)."""
    n_star = ux.shape[0]
    counts = np.zeros(n_star, np.int64)
    dummy_t = np.zeros(0)
    dummy_f = np.zeros(0, np.int8)
    for s in nb.prange(n_star):
        u = (ux[s], uy[s], uz[s])
        counts[s] = _transits_of_star(
            u, field_phi, zeta_max, n_rev, t_end, nodes, dummy_t, dummy_f, dummy_t, False
        )
    ptr = np.zeros(n_star + 1, np.int64)
    ptr[1:] = np.cumsum(counts)
    tt = np.empty(ptr[-1])
    ff = np.empty(ptr[-1], np.int8)
    zz = np.empty(ptr[-1])
    for s in nb.prange(n_star):
        u = (ux[s], uy[s], uz[s])
        lo, hi = ptr[s], ptr[s + 1]
        _transits_of_star(
            u, field_phi, zeta_max, n_rev, t_end, nodes, tt[lo:hi], ff[lo:hi], zz[lo:hi], True
        )
    return ptr, tt, ff, zz


@nb.njit(cache=True, inline="always")
def _legendre(x: float) -> tuple[float, float, float, float, float, float]:
    x2 = x * x
    return (
        1.0,
        x,
        (3.0 * x2 - 1.0) / 2.0,
        (5.0 * x2 - 3.0) * x / 2.0,
        ((35.0 * x2 - 30.0) * x2 + 3.0) / 8.0,
        ((63.0 * x2 - 70.0) * x2 + 15.0) * x / 8.0,
    )


@nb.njit(parallel=True, cache=True)
def _evaluate(
    star: I32, fov: NDArray[np.int8], cell: I32, t: F64, mu: F64, obs: F64,
    ra0: F64, dec0: F64,
    x: F64, n_stars: int, n_att: int, knot_dt: float, n_glob: int, field_phi: F64,
    nodes: F64, coef: F32, rhs: F64, knot: I32,
) -> None:  # fmt: skip
    """Non-linear model at ``x``: residuals ``obs - computed`` (mas) and the partials.

    The partials are the model's derivatives at ``x`` (dropping only the light
    deflection's change with the star's position, ~1e-8 relative); they steer the
    Gauss-Newton outer loop, whose fixed point the residuals alone set.
    """
    att_off = N_ASTRO * n_stars
    instr_off = att_off + N_AXES * n_att
    for i in nb.prange(star.shape[0]):
        s = star[i]
        ti = t[i]
        a = ra0[s] + x[5 * s] * MAS / math.cos(dec0[s])
        d = dec0[s] + x[5 * s + 1] * MAS
        plx = x[5 * s + 2]  # the reference catalogue has no parallaxes nor proper motions
        pma = x[5 * s + 3]
        pmd = x[5 * s + 4]
        ca, sa, cd, sd = math.cos(a), math.sin(a), math.cos(d), math.sin(d)
        era = (-sa, ca, 0.0)
        edec = (-sd * ca, -sd * sa, cd)
        ax, ay, az, b = _scan(ti, nodes)
        dty = ti / DAYS_PER_YEAR
        p0 = cd * ca + (dty * (pma * era[0] + pmd * edec[0]) - plx * b[0]) * MAS
        p1 = cd * sa + (dty * (pma * era[1] + pmd * edec[1]) - plx * b[1]) * MAS
        p2 = sd + (dty * (pma * era[2] + pmd * edec[2]) - plx * b[2]) * MAS
        pn = math.sqrt(p0 * p0 + p1 * p1 + p2 * p2)
        u0, u1, u2 = p0 / pn, p1 / pn, p2 / pn
        # light deflection by the Sun, (1 + gamma) / 2 times the GR value
        rb = math.sqrt(_dot(b, b))
        n0, n1, n2 = b[0] / rb, b[1] / rb, b[2] / rb
        un = u0 * n0 + u1 * n1 + u2 * n2
        gam = 1.0 + (x[x.shape[0] - 1] if n_glob else 0.0)
        k = SCHWARZSCHILD_HALF_AU_RAD / rb / (1.0 + un)
        dgx, dgy, dgz = k * (n0 - un * u0), k * (n1 - un * u1), k * (n2 - un * u2)
        u0 += (1.0 + gam) * dgx
        u1 += (1.0 + gam) * dgy
        u2 += (1.0 + gam) * dgz
        un2 = math.sqrt(u0 * u0 + u1 * u1 + u2 * u2)
        u0, u1, u2 = u0 / un2, u1 / un2, u2 / un2
        u = (u0, u1, u2)
        # attitude correction: rotation vector (body axes) from the B-spline
        j = min(int(ti / knot_dt), n_att - 4)
        knot[i] = j
        tau = ti / knot_dt - j
        s_ = 1.0 - tau
        bw = (
            s_ * s_ * s_ / 6.0,
            (3.0 * tau**3 - 6.0 * tau**2 + 4.0) / 6.0,
            (-3.0 * tau**3 + 3.0 * tau**2 + 3.0 * tau + 1.0) / 6.0,
            tau**3 / 6.0,
        )
        e0 = e1 = e2 = 0.0
        for q in range(4):
            base = att_off + 3 * (j + q)
            e0 += bw[q] * x[base]
            e1 += bw[q] * x[base + 1]
            e2 += bw[q] * x[base + 2]
        e0 *= MAS
        e1 *= MAS
        e2 *= MAS
        v0, v1, v2 = _dot(ax, u), _dot(ay, u), _dot(az, u)
        th = math.sqrt(e0 * e0 + e1 * e1 + e2 * e2)
        k0 = k1 = k2 = 0.0
        c, sn = 1.0, 0.0
        if th > 0:
            k0, k1, k2 = e0 / th, e1 / th, e2 / th
            c, sn = math.cos(th), math.sin(th)
            kv = k0 * v0 + k1 * v1 + k2 * v2
            # Rot(-theta k) v = v cos - (k x v) sin + k (k.v)(1 - cos)
            cx_ = k1 * v2 - k2 * v1
            cy_ = k2 * v0 - k0 * v2
            cz_ = k0 * v1 - k1 * v0
            v0, v1, v2 = (
                v0 * c - cx_ * sn + k0 * kv * (1 - c),
                v1 * c - cy_ * sn + k1 * kv * (1 - c),
                v2 * c - cz_ * sn + k2 * kv * (1 - c),
            )
        rho2 = v0 * v0 + v1 * v1
        phi = math.atan2(v1, v0)
        zeta = math.atan2(v2, math.sqrt(rho2))
        eta = _wrap(phi - field_phi[fov[i]])
        leg = _legendre(mu[i])
        cal = 0.0
        c6 = instr_off + 6 * cell[i]
        for q in range(N_INSTR):
            cal += leg[q] * x[c6 + q]
        rhs[i] = obs[i] - (eta / MAS + cal)
        # d eta / d u in the scanning frame, rotated back to ICRS: g = R^T (-v1, v0, 0)/rho2
        w0, w1, w2 = -v1 / rho2, v0 / rho2, 0.0
        if th > 0:
            # undo the attitude rotation: Rot(+theta k) w
            kw = k0 * w0 + k1 * w1
            cx_ = k1 * 0.0 - k2 * w1
            cy_ = k2 * w0 - k0 * 0.0
            cz_ = k0 * w1 - k1 * w0
            w0, w1, w2 = (
                w0 * c + cx_ * sn + k0 * kw * (1 - c),
                w1 * c + cy_ * sn + k1 * kw * (1 - c),
                cz_ * sn + k2 * kw * (1 - c),
            )
        g0 = w0 * ax[0] + w1 * ay[0] + w2 * az[0]
        g1 = w0 * ax[1] + w1 * ay[1] + w2 * az[1]
        g2 = w0 * ax[2] + w1 * ay[2] + w2 * az[2]
        g = (g0, g1, g2)
        coef[i, 0] = _dot(g, era) / pn
        coef[i, 1] = _dot(g, edec) / pn
        coef[i, 2] = -_dot(g, b) / pn
        # d eta / d (extra rotation about the scanning frame's axes) ...
        tz = math.tan(zeta)
        q0, q1, q2 = tz * math.cos(phi), tz * math.sin(phi), -1.0
        # ... times the SO(3) left Jacobian at -epsilon: d eta / d epsilon, exactly; a
        # first-order partial is off by |epsilon|/2 ~ 1e-4, enough to stall Gauss-Newton
        # along the weakly determined directions
        if th > 0:
            fa = (1.0 - math.cos(th)) / (th * th)
            fb = (th - math.sin(th)) / (th * th * th)
            x0_ = e1 * q2 - e2 * q1
            x1_ = e2 * q0 - e0 * q2
            x2_ = e0 * q1 - e1 * q0
            q0, q1, q2 = (
                q0 + fa * x0_ + fb * (e1 * x2_ - e2 * x1_),
                q1 + fa * x1_ + fb * (e2 * x0_ - e0 * x2_),
                q2 + fa * x2_ + fb * (e0 * x1_ - e1 * x0_),
            )
        coef[i, 3] = q0
        coef[i, 4] = q1
        coef[i, 5] = q2
        for q in range(N_INSTR):
            coef[i, 6 + q] = leg[q]
        if n_glob:
            coef[i, 12] = (g0 * dgx + g1 * dgy + g2 * dgz) / MAS


# ---------------------------------------------------------------------------- problem


@dataclass(frozen=True, eq=False)
class Observations:
    """What was observed, per row, sorted by star then time."""

    star: NDArray[np.int32]
    fov: NDArray[np.int8]
    cell: NDArray[np.int32]
    t: NDArray[np.float64]
    mu: NDArray[np.float64]
    sigma: NDArray[np.float64]
    value: NDArray[np.float64]


class SyntheticProblem:
    """A simulated GSR problem: observations, the reference it starts from, and its truth.

    It is also a :class:`~dpct.pipelines.gsr.LinearisedModel`: :meth:`linearise` gives
    the system at any point, for the outer loop.

    Attributes
    ----------
    config
        How it was made.
    layout
        Unknown numbering.
    truth
        True corrections to the reference (the solution to recover); they satisfy the
        constraint equations.
    ra, dec
        Reference star positions (radians).
    observations
        The observations.
    constraints
        The 9 equations that fix the null space (frame rotation and spin, mean attitude).
    """

    def __init__(self, config: SimulationConfig | None = None) -> None:
        config = config or SimulationConfig()
        self.config = config
        self._nodes = _scan_nodes(config.mission_days)
        self._field_phi = np.array([BASIC_ANGLE_RAD / 2, -BASIC_ANGLE_RAD / 2])
        zeta_max = math.radians(config.field_ac_half_deg)
        self._row_height = 2 * zeta_max / config.n_ccd_rows
        rng = np.random.default_rng(config.seed)
        # stars on the sphere (true positions) and their field-of-view transits
        ra_all = rng.uniform(0, 2 * np.pi, config.n_stars)
        dec_all = np.arcsin(rng.uniform(-1, 1, config.n_stars))
        n_rev = math.ceil(config.mission_days / SPIN_PERIOD_DAYS)
        transits = _find_transits(
            np.cos(dec_all) * np.cos(ra_all),
            np.cos(dec_all) * np.sin(ra_all),
            np.sin(dec_all),
            self._field_phi,
            zeta_max,
            n_rev,
            config.mission_days,
            self._nodes,
        )
        keep = np.diff(transits[0]) >= config.min_transits
        # a star may still have too alike scans to fix 5 parameters: drop it and redo
        for _ in range(3):
            self._build(
                ra_all[keep], dec_all[keep], transits, keep, np.random.default_rng(config.seed + 1)
            )
            blocks = star_normal_blocks(self._reference_system)
            d = 1.0 / np.sqrt(np.einsum("sii->si", blocks))
            eig = np.linalg.eigvalsh(blocks * d[:, :, None] * d[:, None, :])
            bad = eig[:, 0] / eig[:, -1] < config.min_star_rcond
            if not bad.any():
                break
            keep[np.flatnonzero(keep)[bad]] = False
            self.__dict__.pop("_reference_system", None)
        # indices of the drawn stars that were kept
        self.kept_stars = np.flatnonzero(keep)

    def _build(
        self,
        ra_true: NDArray[np.float64],
        dec_true: NDArray[np.float64],
        transits: tuple[NDArray, NDArray, NDArray, NDArray],
        keep: NDArray[np.bool_],
        rng: np.random.Generator,
    ) -> None:
        config = self.config
        obs = self._observations(*transits, keep, rng)
        n_stars = int(keep.sum())
        n_intervals = math.ceil(config.mission_days * 1440 / config.knot_minutes)
        self.knot_dt = config.mission_days / n_intervals
        n_cells = 2 * config.n_ccd_rows * config.n_ccd_strips
        self.layout = UnknownLayout(
            n_stars=n_stars,
            n_att=n_intervals + 3,
            n_instr=N_INSTR * n_cells,
            n_glob=1 if config.gamma else 0,
        )
        lay = self.layout

        # truth, as corrections to the reference
        truth = np.zeros(lay.n_unknowns)
        astro = lay.astrometric(truth)
        astro[:, 0] = rng.normal(0, config.catalogue_error_mas, n_stars)
        astro[:, 1] = rng.normal(0, config.catalogue_error_mas, n_stars)
        astro[:, 2] = rng.exponential(config.parallax_mean_mas, n_stars)
        astro[:, 3] = rng.normal(0, config.pm_error_mas_yr, n_stars)
        astro[:, 4] = rng.normal(0, config.pm_error_mas_yr, n_stars)
        lay.attitude(truth)[:] = rng.normal(0, config.attitude_error_mas, (lay.n_att, N_AXES))
        scales = np.resize(np.asarray(config.instrument_error_mas), N_INSTR)
        lay.instrument(truth)[:] = (rng.normal(size=(n_cells, N_INSTR)) * scales).ravel()
        # the reference catalogue; the constraints (built on it) hold exactly for the truth
        self.ra = ra_true - astro[:, 0] * MAS / np.cos(dec_true)
        self.dec = dec_true - astro[:, 1] * MAS
        self.constraints = self._make_constraints()
        self.truth = self._project_on_constraints(truth)

        # observe: the non-linear model at the truth, plus noise
        model = -self._evaluate(obs, self.truth)[1]  # observed value 0: rhs = -model
        self._noise_free = model
        noise = obs.sigma * rng.standard_normal(obs.t.shape[0])
        self.observations = Observations(
            obs.star, obs.fov, obs.cell, obs.t, obs.mu, obs.sigma, model + noise
        )

    # ---- construction helpers

    def _observations(
        self,
        ptr: NDArray[np.int64],
        tt: NDArray[np.float64],
        ff: NDArray[np.int8],
        zz: NDArray[np.float64],
        keep: NDArray[np.bool_],
        rng: np.random.Generator,
    ) -> Observations:
        cfg = self.config
        new_index = np.cumsum(keep) - 1
        star_of_transit = np.repeat(np.arange(keep.size), np.diff(ptr))
        sel = keep[star_of_transit]
        star_tr = new_index[star_of_transit[sel]]
        t_tr, f_tr, z_tr = tt[sel], ff[sel], zz[sel]
        strips = np.arange(cfg.n_ccd_strips)
        eta_strip = (strips - (cfg.n_ccd_strips - 1) / 2) * STRIP_SPACING_RAD
        # the field angle decreases at the spin rate: strip s is crossed eta_s/rate earlier
        t = (t_tr[:, None] - eta_strip[None, :] / _SPIN_RATE).ravel()
        star = np.repeat(star_tr, cfg.n_ccd_strips)
        fov = np.repeat(f_tr, cfg.n_ccd_strips)
        strip = np.tile(strips, t_tr.size)
        zeta_max = math.radians(cfg.field_ac_half_deg)
        pos = np.repeat(z_tr, cfg.n_ccd_strips) + zeta_max
        row = np.minimum((pos / self._row_height).astype(np.int64), cfg.n_ccd_rows - 1)
        mu = 2 * (pos - (row + 0.5) * self._row_height) / self._row_height
        cell = (fov.astype(np.int64) * cfg.n_ccd_rows + row) * cfg.n_ccd_strips + strip
        inside = (t >= 0) & (t < cfg.mission_days)
        star, fov, cell, t, mu = star[inside], fov[inside], cell[inside], t[inside], mu[inside]
        order = np.lexsort((t, star))
        n_kept = int(keep.sum())
        lo, hi = cfg.sigma_mas
        sigma_star = np.exp(rng.uniform(np.log(lo), np.log(hi), n_kept))
        star = star[order]
        return Observations(
            star=star.astype(np.int32),
            fov=fov[order],
            cell=cell[order].astype(np.int32),
            t=t[order],
            mu=np.clip(mu[order], -1.0, 1.0),
            sigma=sigma_star[star],
            value=np.zeros(star.size),
        )

    def _evaluate(
        self, obs: Observations, x: NDArray[np.float64]
    ) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.int32]]:
        lay = self.layout
        m = obs.t.shape[0]
        coef = np.empty((m, 12 + lay.n_glob), np.float32)
        rhs = np.empty(m)
        knot = np.empty(m, np.int32)
        _evaluate(
            obs.star, obs.fov, obs.cell, obs.t, obs.mu, obs.value, self.ra, self.dec,
            np.ascontiguousarray(x, np.float64), lay.n_stars, lay.n_att, self.knot_dt,
            lay.n_glob, self._field_phi, self._nodes, coef, rhs, knot,
        )  # fmt: skip
        return coef, rhs, knot

    def _make_constraints(self) -> Constraints:
        lay = self.layout
        # weigh the rows like the data: a typical column norm over sqrt(rows in the sum)
        frame = frame_constraints(self.ra, self.dec, lay, 1.0 / math.sqrt(lay.n_stars))
        att = attitude_constraints(lay, 1.0 / math.sqrt(lay.n_att))
        return Constraints.concatenate(frame, att)

    def _project_on_constraints(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Remove the truth's net rotation, spin and mean attitude, so that ``C x = 0``."""
        x = x.copy()
        lay = self.layout
        sa, ca = np.sin(self.ra), np.cos(self.ra)
        sd, cd = np.sin(self.dec), np.cos(self.dec)
        e_ra = np.stack([-sa, ca, np.zeros_like(sa)], axis=1)
        e_dec = np.stack([-sd * ca, -sd * sa, cd], axis=1)
        astro = lay.astrometric(x)
        # effect of a rotation omega: d(ra*) = e_dec . omega, d(dec) = -e_ra . omega
        design = np.concatenate([e_dec, -e_ra])
        for off in (0, 3):
            data = np.concatenate([astro[:, off], astro[:, off + 1]])
            omega = np.linalg.lstsq(design, data, rcond=None)[0]
            astro[:, off] -= e_dec @ omega
            astro[:, off + 1] += e_ra @ omega
        att = lay.attitude(x)
        att -= att.mean(axis=0)
        return x

    # ---- public

    @property
    def n_observations(self) -> int:
        """Observation rows."""
        return int(self.observations.t.shape[0])

    def linearise(self, x: NDArray[np.float64]) -> GsrSystem:
        """The system linearised at ``x``: partials there, and observed minus computed.

        Its constraint equations apply to the update: ``C dx = -C x``, so that the next
        point satisfies ``C x = 0`` whatever this one does.
        """
        coef, rhs, knot = self._evaluate(self.observations, x)
        c = self.constraints
        rows = np.repeat(np.arange(c.n_rows), np.diff(c.indptr))
        cx = np.bincount(rows, weights=c.data * x[c.indices], minlength=c.n_rows)
        update = Constraints(c.indptr, c.indices, c.data, -cx, c.names)
        return self._system(coef, rhs, knot).with_constraints(update)

    def _system(
        self, coef: NDArray[np.float32], rhs: NDArray[np.float64], knot: NDArray[np.int32]
    ) -> GsrSystem:
        o = self.observations
        lay = self.layout
        n_cells = lay.n_instr // N_INSTR
        return make_system(
            n_stars=lay.n_stars,
            n_att=lay.n_att,
            n_instr=lay.n_instr,
            star=o.star,
            knot=knot,
            instr=o.cell,
            instr_cols=N_INSTR * np.arange(n_cells)[:, None] + np.arange(N_INSTR),
            t=o.t,
            astro=coef[:, 0:3],
            attitude=coef[:, 3:6],
            instrument=coef[:, 6:12],
            glob=coef[:, 12] if lay.n_glob else None,
            rhs=rhs,
            sigma=o.sigma,
            knot_t0=0.0,
            knot_dt=self.knot_dt,
            epoch=0.0,
            constraints=self.constraints,
            n_blocks=self.config.n_blocks,
        )

    @cached_property
    def _reference_system(self) -> GsrSystem:
        return self.linearise(np.zeros(self.layout.n_unknowns))

    def linear_system(self, *, noise: bool = True, seed: int | None = None) -> GsrSystem:
        """The system linearised at the reference, with ``rhs = A truth (+ noise)``.

        Exactly linear, so the least-squares solution is the truth (without noise) or
        scatters about it with the formal covariance (with noise): the tests' yardstick.
        """
        base = self._reference_system
        w = base.inv_sigma.astype(np.float64)
        rhs = matvec(base, self.truth)[: base.n_rows] / w
        if noise:
            rng = np.random.default_rng(self.config.seed + 1 if seed is None else seed)
            rhs = rhs + self.observations.sigma * rng.standard_normal(rhs.shape[0])
        return base.with_rhs(rhs)

    def null_vectors(self) -> NDArray[np.float64]:
        """``(9, n)`` directions the observations (nearly) do not see; constraints fix them.

        Rows 0-2: constant attitude rotation about z, x, y traded against the instrument
        offsets (z: exact) and their across-scan slopes (x, y: exact up to the spread of
        the stars' across-scan positions within a CCD). Rows 3-8: rotation and spin of the
        frame, with the attitude following as closely as its B-splines allow.
        """
        lay = self.layout
        cfg = self.config
        out = np.zeros((9, lay.n_unknowns))
        # z: d eta / d att_z = -1, instrument degree-0 term = +1
        lay.attitude(out[0])[:, 2] = 1.0
        lay.instrument(out[0]).reshape(-1, N_INSTR)[:, 0] = 1.0
        # x, y: d eta / d att = tan(zeta) (cos phi, sin phi): a Legendre series in mu
        strips = np.arange(cfg.n_ccd_strips)
        eta_strip = (strips - (cfg.n_ccd_strips - 1) / 2) * STRIP_SPACING_RAD
        zeta_max = math.radians(cfg.field_ac_half_deg)
        grid = np.linspace(-1, 1, 201)
        for k, trig in ((1, np.cos), (2, np.sin)):
            lay.attitude(out[k])[:, k - 1] = 1.0
            inst = lay.instrument(out[k]).reshape(2, cfg.n_ccd_rows, cfg.n_ccd_strips, N_INSTR)
            for f in range(2):
                for r in range(cfg.n_ccd_rows):
                    zeta = -zeta_max + (r + 0.5 + grid / 2) * self._row_height
                    leg = np.polynomial.legendre.legfit(grid, np.tan(zeta), N_INSTR - 1)
                    for s in strips:
                        inst[f, r, s] = -leg * trig(self._field_phi[f] + eta_strip[s])
        # frame rotation (rows 3-5) and spin (rows 6-8)
        sa, ca = np.sin(self.ra), np.cos(self.ra)
        sd, cd = np.sin(self.dec), np.cos(self.dec)
        e_ra = np.stack([-sa, ca, np.zeros_like(sa)], axis=1)
        e_dec = np.stack([-sd * ca, -sd * sa, cd], axis=1)
        t_fit = (np.arange(8 * (lay.n_att - 3)) + 0.5) * self.knot_dt / 8
        axes = np.array([np.array(_scan(t, self._nodes)[:3]) for t in t_fit])  # (k, 3 axes, 3)
        basis = _bspline_matrix(t_fit, self.knot_dt, lay.n_att)
        for k in range(3):
            omega = np.zeros(3)
            omega[k] = 1.0
            for row, off, tfac in ((3 + k, 0, 1.0), (6 + k, 3, None)):
                astro = lay.astrometric(out[row])
                astro[:, off] = e_dec @ omega
                astro[:, off + 1] = -(e_ra @ omega)
                body = axes @ omega  # (k, 3): omega in the scanning frame
                if tfac is None:
                    body = body * (t_fit / DAYS_PER_YEAR)[:, None]
                for a in range(N_AXES):
                    lay.attitude(out[row])[:, a] = spla.lsqr(
                        basis, body[:, a], atol=1e-14, btol=1e-14
                    )[0]
        return out

    def without_noise(self) -> SyntheticProblem:
        """The same problem with noise-free observations (the model at the truth)."""
        clone = copy.copy(self)
        clone.observations = replace(self.observations, value=self._noise_free.copy())
        clone.__dict__.pop("_reference_system", None)
        return clone


def _bspline_matrix(t: NDArray[np.float64], dt: float, n_att: int) -> sp.csr_array:
    """Sparse ``(len(t), n_att)`` matrix of the uniform cubic B-splines at times ``t``."""
    j = np.minimum((t / dt).astype(np.int64), n_att - 4)
    w = bspline_weights(t / dt - j)
    rows = np.repeat(np.arange(t.size), 4)
    cols = (j[:, None] + np.arange(4)).ravel()
    return sp.csr_array((w.ravel(), (rows, cols)), shape=(t.size, n_att))


def make_problem(config: SimulationConfig | None = None, **changes: object) -> SyntheticProblem:
    """Simulate a GSR problem; keyword arguments override fields of the config."""
    return SyntheticProblem(replace(config or SimulationConfig(), **changes))  # type: ignore[arg-type]
