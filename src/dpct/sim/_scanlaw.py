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

import numba
import numpy as np

from dpct.mission.constants import (
    ARCSEC,
    MAS,
    NS_PER_S,
)
from dpct.mission.scanlaw import NominalScanLaw, heliotropic_frame, hermite
from dpct.sim._config import SimConfig
from dpct.sim._rng import Stream, generator

GRID_STEP_NS = 60 * NS_PER_S
_BLOCK = 4096  # B-spline coefficients per seed block
_N_WOBBLE = 3  # sinusoids per axis


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
    om = hermite(nodes, 18, i, u)
    co = math.cos(om)
    so = math.sin(om)
    # x = cosΩ a + sinΩ b, y = cosΩ b − sinΩ a, z: rows of the ICRS → SRS matrix
    for c in range(3):
        fa = hermite(nodes, 2 * c, i, u)
        fb = hermite(nodes, 6 + 2 * c, i, u)
        a_nom[0, c] = co * fa + so * fb
        a_nom[1, c] = co * fb - so * fa
        a_nom[2, c] = hermite(nodes, 12 + 2 * c, i, u)
    # wobble: reference = R(θ_w)·nominal
    w0 = hermite(nodes, 20, i, u)
    w1 = hermite(nodes, 22, i, u)
    w2 = hermite(nodes, 24, i, u)
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
        out[k] = hermite(nodes, 18, i, x - i) % (2.0 * math.pi)
