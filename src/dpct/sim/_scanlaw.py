"""Nominal scanning law, the true attitude and its reference, as fast evaluable functions.

The nominal scanning law (NSL) follows the three motions of [S1]: the Sun's ecliptic
longitude λ(t), the precession phase ν of the spin axis z around the Sun at solar aspect
angle ξ = 45°, and the heliotropic spin phase Ω about z. With the NSL's constant-speed
condition |dz/dt| = S·dλ/dt, ν is an autonomous function of λ,

    dλ/dν = g(ν) = sin ξ / (cos ξ sin ν + √(S² − cos² ν)),

and the inertial spin rate about z is held at ω_z = 59.9641857803″/s, so

    Ω(t) = Ω₀ + ω_z (t − t₀) − cos ξ (ν − ν₀) − sin ξ ∫ sin ν dλ.

Both integrals are evaluated from the Fourier series of g and g·sin ν (exact to rounding),
so the attitude has a closed form at any time: nothing is integrated step by step, and
any chunk gets the same attitude as any other. S is chosen so that one precession loop
takes 63 days on average.

Inside a chunk the slowly turning spin-free frame (spin axis z and the Sun-ward scan-plane
axis) and Ω are interpolated (cubic Hermite with exact derivatives on 60 s nodes of the
absolute OBMT grid, error < 10⁻¹⁵ rad) by a Numba kernel, which rotates the frame by Ω
about z and applies two small rotations in the scanning reference system (SRS):

* the **wobble** θ_w(t) — realised minus commanded attitude: three sinusoids per axis with
  periods of 15 min – 6 h, *defined* as their cubic Hermite interpolant on the same 60 s
  nodes (so it is identical in every chunk); nominal ∘ wobble is the *reference attitude*
  a GSR solver starts from;
* the **attitude error** θ_e(t) — a cubic B-spline per axis with knots every
  ``attitude_knot_s`` on the absolute OBMT grid; reference ∘ error is the *true attitude*
  and the B-spline coefficients are the GSR attitude truth.

Rotation convention: a small rotation θ of the SRS changes a direction's SRS coordinates
by u → u − θ × u.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numba
import numpy as np

from dpct.sim._config import SimConfig
from dpct.sim._constants import (
    ARCSEC,
    DAY_NS,
    DEG,
    MAS,
    NS_PER_S,
    NSL_START_OBMT_NS,
    OBLIQUITY_J2000_ARCSEC,
    OBMT_ZERO_JD_TCB,
    PRECESSION_PERIOD_DAYS,
    SOLAR_ASPECT_DEG,
    SPIN_RATE_ARCSEC_S,
    SPIN_RATE_RAD_S,
)
from dpct.sim._rng import Stream, generator

GRID_STEP_NS = 60 * NS_PER_S
_XI = SOLAR_ASPECT_DEG * DEG
_EPS = OBLIQUITY_J2000_ARCSEC * ARCSEC
_N_FOURIER = 256
_BLOCK = 4096  # B-spline coefficients per seed block
_N_WOBBLE = 3  # sinusoids per axis


def sun(obmt_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geocentric Sun: ecliptic longitude (J2000, rad, unwrapped), its rate (rad/s), r (au).

    Notes
    -----
    Low-precision formulae of the Astronomical Almanac (±0.01°), precessed from the
    equinox of date to J2000 with the general precession 5028.8″/century. Gaia at L2 sees
    the Sun in the same direction as the Earth does. TCB is used for TT (20 s apart).
    """
    n = np.asarray(obmt_ns, dtype=np.float64) / DAY_NS + (OBMT_ZERO_JD_TCB - 2451545.0)
    mean_l = 280.460 + 0.9856474 * n
    g = np.deg2rad(357.528 + 0.9856003 * n)
    lam_deg = mean_l + 1.915 * np.sin(g) + 0.020 * np.sin(2 * g) - 1.396971 * n / 36525.0
    dg = 0.9856003 * DEG
    rate_deg_day = (
        0.9856474 + 1.915 * np.cos(g) * dg + 0.040 * np.cos(2 * g) * dg - 1.396971 / 36525.0
    )
    r_au = 1.00014 - 0.01671 * np.cos(g) - 0.00014 * np.cos(2 * g)
    return lam_deg * DEG, rate_deg_day * DEG / 86_400.0, r_au


def _g_of(nu: np.ndarray, s: float) -> np.ndarray:
    return math.sin(_XI) / (math.cos(_XI) * np.sin(nu) + np.sqrt(s * s - np.cos(nu) ** 2))


def _solve_s() -> float:
    # Mean loop period = 365.25 d × mean(g): one loop advances λ by 2π·mean(g).
    nu = 2 * np.pi * np.arange(_N_FOURIER) / _N_FOURIER
    target = PRECESSION_PERIOD_DAYS / 365.25
    lo, hi = 1.01, 50.0  # mean(g) falls monotonically with S: bisect to rounding
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _g_of(nu, mid).mean() > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return 0.5 * (lo + hi)


def _fourier(values: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    spec = np.fft.rfft(values) / values.size
    k_max = 48  # coefficients fall as e^{-2k}: 48 terms are exact to rounding
    return float(spec[0].real), 2 * spec[1 : k_max + 1].real, -2 * spec[1 : k_max + 1].imag


@dataclass(frozen=True)
class NominalScanLaw:
    """The NSL's closed form: λ(t), ν(t), Ω(t) and their rates, OBMT in ns.

    Parameters
    ----------
    nu_ref, omega_ref
        Precession and heliotropic spin phases (rad) at the NSL start (OBMT 1078.3795 rev).
    """

    nu_ref: float = 0.0
    omega_ref: float = 0.0

    @cached_property
    def speed_s(self) -> float:
        """NSL precession speed S = |dz/dt| / (dλ/dt) giving the 63-day mean loop."""
        return _solve_s()

    @cached_property
    def _series(self) -> tuple[float, np.ndarray, np.ndarray, float, np.ndarray, np.ndarray]:
        nu = 2 * np.pi * np.arange(_N_FOURIER) / _N_FOURIER
        g = _g_of(nu, self.speed_s)
        return (*_fourier(g), *_fourier(g * np.sin(nu)))

    def _integral(self, nu: np.ndarray, which: int) -> tuple[np.ndarray, np.ndarray]:
        c0, a, b = self._series[3 * which : 3 * which + 3]
        k = np.arange(1, a.size + 1)
        kn = np.multiply.outer(nu, k)
        val = c0 * nu + (np.sin(kn) * (a / k) - (np.cos(kn) - 1.0) * (b / k)).sum(-1)
        der = c0 + (np.cos(kn) * a + np.sin(kn) * b).sum(-1)
        return val, der

    def angles(self, obmt_ns: np.ndarray) -> dict[str, np.ndarray]:
        """Nominal angles and rates at ``obmt_ns`` (int64 array).

        Returns
        -------
        dict
            ``lam`` (Sun longitude, rad, unwrapped), ``nu`` (rad, unwrapped), ``omega``
            (heliotropic spin phase, rad in [0, 2π)), ``lam_dot``, ``nu_dot``,
            ``omega_dot`` (rad/s) and ``r_au`` (Sun distance, au).
        """
        t = np.atleast_1d(np.asarray(obmt_ns, dtype=np.int64))
        lam, lam_dot, r_au = sun(t)
        lam0 = sun(np.array([NSL_START_OBMT_NS]))[0][0]
        g_ref, _ = self._integral(np.array([self.nu_ref]), 0)
        target = lam - lam0 + g_ref[0]
        c0 = self._series[0]
        nu = self.nu_ref + (lam - lam0) / c0
        for _ in range(50):
            val, der = self._integral(nu, 0)
            step = (val - target) / der
            nu = nu - step
            if np.all(np.abs(step) <= 1e-15 + 4e-16 * np.abs(nu)):
                break
        h_nu, _ = self._integral(nu, 1)
        h_ref, _ = self._integral(np.array([self.nu_ref]), 1)
        # ω_z·(t − t₀) modulo 2π in extended precision: the product reaches ~10⁵ rad.
        dt = (t - NSL_START_OBMT_NS).astype(np.longdouble) / np.longdouble(NS_PER_S)
        two_pi = np.longdouble(2) * np.longdouble("3.14159265358979323846264338327950288")
        w = np.longdouble(SPIN_RATE_ARCSEC_S) * two_pi / np.longdouble(1_296_000)
        spin = np.fmod(w * dt, two_pi).astype(np.float64)
        omega = (
            self.omega_ref
            + spin
            - math.cos(_XI) * (nu - self.nu_ref)
            - math.sin(_XI) * (h_nu - h_ref[0])
        )
        omega = np.mod(omega, 2 * np.pi)
        nu_dot = lam_dot / _g_of(nu, self.speed_s)
        omega_dot = SPIN_RATE_RAD_S - nu_dot * math.cos(_XI) - lam_dot * math.sin(_XI) * np.sin(nu)
        return {
            "lam": lam,
            "nu": nu,
            "omega": omega,
            "lam_dot": lam_dot,
            "nu_dot": nu_dot,
            "omega_dot": omega_dot,
            "r_au": r_au,
        }


def heliotropic_frame(angles: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The spin-free SRS frame (rows a, b, z in ICRS) and its time derivative (per s).

    z is the spin axis; a is the Sun direction projected on the scan plane (x = a at
    Ω = 0) and b = z × a. The frame turns with the angular velocity W = λ̇ n + ν̇ s
    (n the ecliptic pole, s the Sun), so its rows' derivatives are W × row.
    """
    lam, nu = angles["lam"], angles["nu"]
    xi = _XI
    sl, cl, sn, cn = np.sin(lam), np.cos(lam), np.sin(nu), np.cos(nu)
    zero = np.zeros_like(lam)
    sun_e = np.stack([cl, sl, zero], -1)
    c = np.stack([-cn * sl, cn * cl, sn], -1)
    z = math.cos(xi) * sun_e + math.sin(xi) * c
    a = math.sin(xi) * sun_e - math.cos(xi) * c
    b = np.cross(z, a)
    frame_e = np.stack([a, b, z], axis=1)  # (n, 3 rows, 3 ecliptic comps)
    w = angles["lam_dot"][:, None] * np.array([0.0, 0.0, 1.0]) + angles["nu_dot"][:, None] * sun_e
    dframe_e = np.cross(w[:, None, :], frame_e)
    rot = np.array(
        [
            [1.0, 0.0, 0.0],
            [0.0, math.cos(_EPS), -math.sin(_EPS)],
            [0.0, math.sin(_EPS), math.cos(_EPS)],
        ]
    )  # ecliptic → ICRS
    return frame_e @ rot.T, dframe_e @ rot.T


@dataclass(frozen=True)
class AttitudeGrid:
    """Everything the attitude kernel needs for one time interval (arrays for Numba).

    ``t_rel`` arguments of the kernels are seconds since ``origin_ns``.
    """

    origin_ns: int
    step_s: float
    nodes: np.ndarray  # (n, 26): (value, rate·h) of frame a, b, z (ICRS), Ω (unwrapped), θ_w
    knot_s: float
    knot_offset_s: float  # (origin − first local knot) in s
    first_knot: int  # absolute index of coeffs[0]
    coeffs: np.ndarray  # (m, 3) B-spline coefficients, rad

    def as_tuple(self) -> tuple:
        """The kernels' argument tuple."""
        return (
            self.step_s,
            self.nodes,
            self.knot_s,
            self.knot_offset_s,
            self.coeffs,
        )

    def t_rel(self, obmt_ns: np.ndarray) -> np.ndarray:
        """Seconds since the grid origin (exact integer difference, then float)."""
        return (np.asarray(obmt_ns, dtype=np.int64) - self.origin_ns) / NS_PER_S


class ScanLaw:
    """The mission's attitude: nominal law, wobble (reference) and error (truth).

    Parameters
    ----------
    config
        Simulation configuration (seed and ``scanlaw`` section).
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        sc = config.scanlaw
        self.nominal = NominalScanLaw(sc.precession_phase_rad, sc.spin_phase_rad)
        self.knot_ns = round(sc.attitude_knot_s * NS_PER_S)
        rng = generator(config.seed, Stream.ATTITUDE_ERROR, 0)
        weights = rng.uniform(0.5, 1.5, (3, _N_WOBBLE))
        weights *= np.sqrt(_N_WOBBLE / (weights**2).sum(axis=1, keepdims=True))
        amp = sc.wobble_arcsec * ARCSEC * math.sqrt(2.0) * weights / math.sqrt(_N_WOBBLE)
        periods = np.exp(rng.uniform(math.log(900.0), math.log(21_600.0), (3, _N_WOBBLE)))
        phases = rng.uniform(0, 2 * np.pi, (3, _N_WOBBLE))
        self.wobble = np.ascontiguousarray(np.stack([amp, 2 * np.pi / periods, phases], axis=-1))

    def error_coefficients(self, first: int, stop: int) -> np.ndarray:
        """True attitude-error B-spline coefficients ``first … stop − 1``, (n, 3), rad."""
        sigma = self.config.scanlaw.attitude_error_mas * MAS
        out = []
        for block in range(first // _BLOCK, (stop - 1) // _BLOCK + 1):
            rng = generator(self.config.seed, Stream.ATTITUDE_ERROR, 1, block)
            out.append(rng.normal(0.0, sigma, (_BLOCK, 3)))
        allc = np.concatenate(out)
        base = (first // _BLOCK) * _BLOCK
        return np.ascontiguousarray(allc[first - base : stop - base])

    def grid(self, start_ns: int, stop_ns: int) -> AttitudeGrid:
        """Build the kernel inputs valid on ``[start_ns, stop_ns]``."""
        n0 = start_ns // GRID_STEP_NS
        n1 = -(-stop_ns // GRID_STEP_NS) + 1
        t_nodes = np.arange(n0, n1 + 1, dtype=np.int64) * GRID_STEP_NS
        a = self.nominal.angles(t_nodes)
        h = GRID_STEP_NS / NS_PER_S
        frame, frame_dot = heliotropic_frame(a)
        ts = t_nodes / NS_PER_S
        arg = self.wobble[None, :, :, 1] * ts[:, None, None] + self.wobble[None, :, :, 2]
        wob = (self.wobble[None, :, :, 0] * np.sin(arg)).sum(-1)  # (n, 3)
        wob_dot = (self.wobble[None, :, :, 0] * self.wobble[None, :, :, 1] * np.cos(arg)).sum(-1)
        cols = []
        for r in range(3):
            for c in range(3):
                cols += [frame[:, r, c], frame_dot[:, r, c] * h]
        cols += [np.unwrap(a["omega"]), a["omega_dot"] * h]
        for ax in range(3):
            cols += [wob[:, ax], wob_dot[:, ax] * h]
        nodes = np.stack(cols, axis=1)
        origin = int(t_nodes[0])
        j0 = origin // self.knot_ns - 1
        j1 = stop_ns // self.knot_ns + 5
        return AttitudeGrid(
            origin_ns=origin,
            step_s=h,
            nodes=np.ascontiguousarray(nodes),
            knot_s=self.knot_ns / NS_PER_S,
            knot_offset_s=(origin - j0 * self.knot_ns) / NS_PER_S,
            first_knot=int(j0),
            coeffs=self.error_coefficients(int(j0), int(j1)),
        )

    def matrices(self, obmt_ns: np.ndarray) -> dict[str, np.ndarray]:
        """Attitude matrices ICRS → SRS at ``obmt_ns``: ``nominal``, ``reference``, ``true``.

        Each is (n, 3, 3) with rows the SRS axes x, y, z in ICRS; ``omega`` (n,) is the
        heliotropic spin phase (rad).
        """
        t = np.atleast_1d(np.asarray(obmt_ns, dtype=np.int64))
        out = np.empty((3, t.size, 3, 3))
        omega = np.empty(t.size)
        # one grid per cluster of times (sparse times far apart need no grid between them)
        order = np.argsort(t, kind="stable")
        ts = t[order]
        cuts = np.flatnonzero(np.diff(ts) > 2 * 3600 * NS_PER_S) + 1
        for part in np.split(np.arange(t.size), cuts):
            idx = order[part]
            g = self.grid(int(ts[part[0]]), int(ts[part[-1]]))
            sub = np.empty((3, idx.size, 3, 3))
            sub_om = np.empty(idx.size)
            attitude_many(g.t_rel(t[idx]), g.as_tuple(), sub, sub_om)
            out[:, idx] = sub
            omega[idx] = sub_om
        return {"nominal": out[0], "reference": out[1], "true": out[2], "omega": omega}


# --- Numba kernels -----------------------------------------------------------------------


@numba.njit(cache=True)
def _hermite(nodes: np.ndarray, col: int, i: int, u: float) -> float:
    h00 = (1.0 + 2.0 * u) * (1.0 - u) ** 2
    h10 = u * (1.0 - u) ** 2
    h01 = u * u * (3.0 - 2.0 * u)
    h11 = u * u * (u - 1.0)
    return (
        h00 * nodes[i, col]
        + h10 * nodes[i, col + 1]
        + h01 * nodes[i + 1, col]
        + h11 * nodes[i + 1, col + 1]
    )


@numba.njit(cache=True)
def _rotate_small(t0: float, t1: float, t2: float, a: np.ndarray, out: np.ndarray) -> None:
    # out = R(θ)·a with R(θ)u = u − (sinθ/θ) θ×u + ((1 − cosθ)/θ²) θ×(θ×u)
    th2 = t0 * t0 + t1 * t1 + t2 * t2
    if th2 < 1e-8:
        s = 1.0 - th2 / 6.0
        c = 0.5 - th2 / 24.0
    else:
        th = math.sqrt(th2)
        s = math.sin(th) / th
        c = (1.0 - math.cos(th)) / th2
    for j in range(3):
        u0 = a[0, j]
        u1 = a[1, j]
        u2 = a[2, j]
        x0 = t1 * u2 - t2 * u1
        x1 = t2 * u0 - t0 * u2
        x2 = t0 * u1 - t1 * u0
        y0 = t1 * x2 - t2 * x1
        y1 = t2 * x0 - t0 * x2
        y2 = t0 * x1 - t1 * x0
        out[0, j] = u0 - s * x0 + c * y0
        out[1, j] = u1 - s * x1 + c * y1
        out[2, j] = u2 - s * x2 + c * y2


@numba.njit(cache=True)
def attitude_at(
    t_rel: float,
    grid: tuple,
    a_nom: np.ndarray,
    a_ref: np.ndarray,
    a_true: np.ndarray,
) -> float:
    """Fill the three 3×3 attitude matrices at ``t_rel`` (s); return heliotropic Ω (rad)."""
    step, nodes, knot_s, knot_off, coeffs = grid
    x = t_rel / step
    i = math.floor(x)
    if i > nodes.shape[0] - 2:
        i = nodes.shape[0] - 2
    if i < 0:
        i = 0
    u = x - i
    om = _hermite(nodes, 18, i, u)
    co = math.cos(om)
    so = math.sin(om)
    # x = cosΩ a + sinΩ b, y = cosΩ b − sinΩ a, z: rows of the ICRS → SRS matrix
    for c in range(3):
        fa = _hermite(nodes, 2 * c, i, u)
        fb = _hermite(nodes, 6 + 2 * c, i, u)
        a_nom[0, c] = co * fa + so * fb
        a_nom[1, c] = co * fb - so * fa
        a_nom[2, c] = _hermite(nodes, 12 + 2 * c, i, u)
    # wobble: reference = R(θ_w)·nominal
    w0 = _hermite(nodes, 20, i, u)
    w1 = _hermite(nodes, 22, i, u)
    w2 = _hermite(nodes, 24, i, u)
    _rotate_small(w0, w1, w2, a_nom, a_ref)
    # error: true = R(θ_e)·reference, θ_e a uniform cubic B-spline
    kx = (t_rel + knot_off) / knot_s
    j = math.floor(kx)
    v = kx - j
    v2 = v * v
    v3 = v2 * v
    bs0 = (1.0 - v) ** 3 / 6.0
    bs1 = (3.0 * v3 - 6.0 * v2 + 4.0) / 6.0
    bs2 = (-3.0 * v3 + 3.0 * v2 + 3.0 * v + 1.0) / 6.0
    bs3 = v3 / 6.0
    e0 = (
        bs0 * coeffs[j, 0]
        + bs1 * coeffs[j + 1, 0]
        + bs2 * coeffs[j + 2, 0]
        + bs3 * coeffs[j + 3, 0]
    )
    e1 = (
        bs0 * coeffs[j, 1]
        + bs1 * coeffs[j + 1, 1]
        + bs2 * coeffs[j + 2, 1]
        + bs3 * coeffs[j + 3, 1]
    )
    e2 = (
        bs0 * coeffs[j, 2]
        + bs1 * coeffs[j + 1, 2]
        + bs2 * coeffs[j + 2, 2]
        + bs3 * coeffs[j + 3, 2]
    )
    _rotate_small(e0, e1, e2, a_ref, a_true)
    return om


@numba.njit(cache=True)
def attitude_many(t_rel: np.ndarray, grid: tuple, out: np.ndarray, omega: np.ndarray) -> None:
    """Vectorised :func:`attitude_at`: ``out`` is (3, n, 3, 3) nominal/reference/true."""
    for k in range(t_rel.size):
        omega[k] = attitude_at(t_rel[k], grid, out[0, k], out[1, k], out[2, k])


def matrix_to_quaternion(m: np.ndarray) -> np.ndarray:
    """Quaternions (x, y, z, w), scalar last, of rotation matrices (n, 3, 3).

    The quaternion rotates ICRS coordinates into SRS coordinates (``u_srs = M u_icrs``),
    with w ≥ 0.
    """
    m = np.asarray(m)
    tr = np.trace(m, axis1=-2, axis2=-1)
    q = np.empty((*m.shape[:-2], 4))
    w = 0.5 * np.sqrt(np.maximum(1.0 + tr, 0.0))
    # Shepperd: choose the largest pivot for stability.
    diag = np.stack([m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], axis=-1)
    piv = np.argmax(np.concatenate([diag, tr[..., None]], axis=-1), axis=-1)
    for k in range(4):
        sel = piv == k
        if not np.any(sel):
            continue
        mm = m[sel]
        if k == 3:
            ww = w[sel]
            x = (mm[:, 2, 1] - mm[:, 1, 2]) / (4 * ww)
            y = (mm[:, 0, 2] - mm[:, 2, 0]) / (4 * ww)
            z = (mm[:, 1, 0] - mm[:, 0, 1]) / (4 * ww)
            qq = np.stack([x, y, z, ww], axis=-1)
        else:
            i, j, h = k, (k + 1) % 3, (k + 2) % 3
            r = np.sqrt(np.maximum(1.0 + mm[:, i, i] - mm[:, j, j] - mm[:, h, h], 0.0))
            qi = 0.5 * r
            qj = (mm[:, j, i] + mm[:, i, j]) / (2 * r)
            qh = (mm[:, h, i] + mm[:, i, h]) / (2 * r)
            qw = (mm[:, h, j] - mm[:, j, h]) / (2 * r)
            qq = np.empty((mm.shape[0], 4))
            qq[:, i], qq[:, j], qq[:, h], qq[:, 3] = qi, qj, qh, qw
        q[sel] = qq
    q *= np.where(q[..., 3:4] < 0, -1.0, 1.0)
    return q


@numba.njit(cache=True)
def spin_phase_many(t_rel: np.ndarray, grid: tuple, out: np.ndarray) -> None:
    """Heliotropic spin phase Ω (rad, [0, 2π)) from the grid, at ``t_rel`` (s)."""
    step, nodes = grid[0], grid[1]
    for k in range(t_rel.size):
        x = t_rel[k] / step
        i = min(max(math.floor(x), 0), nodes.shape[0] - 2)
        out[k] = _hermite(nodes, 18, i, x - i) % (2.0 * math.pi)
