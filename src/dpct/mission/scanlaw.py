"""The nominal scanning law (NSL) of Gaia: the Sun's place, the NSL's closed form and the
spin-free heliotropic frame.

Mission knowledge, not simulation: the simulator builds its attitude on it, and the BAM
pipeline takes the spin phase Ω, the argument of the basic-angle harmonics, from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numba
import numpy as np

from dpct.mission.constants import (
    ARCSEC,
    DAY_NS,
    DEG,
    NS_PER_S,
    NSL_START_OBMT_NS,
    OBLIQUITY_J2000_ARCSEC,
    OBMT_ZERO_JD_TCB,
    PRECESSION_PERIOD_DAYS,
    SOLAR_ASPECT_DEG,
    SPIN_RATE_ARCSEC_S,
    SPIN_RATE_RAD_S,
)

_XI = SOLAR_ASPECT_DEG * DEG
_EPS = OBLIQUITY_J2000_ARCSEC * ARCSEC
_N_FOURIER = 256


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


@numba.njit(cache=True)
def hermite(nodes: np.ndarray, col: int, i: int, u: float) -> float:
    """Cubic Hermite interpolation at ``u`` in [0, 1] between rows ``i`` and ``i + 1``.

    ``nodes[:, col]`` holds values and ``nodes[:, col + 1]`` their rates times the node
    step: how the simulator's attitude kernels and the GSR test problem evaluate the
    scanning law between closed-form nodes, with exact derivatives.
    """
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
