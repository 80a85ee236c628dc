"""Where a star is seen from Gaia at time t: proper motion, parallax and light deflection.

The observed ("proper") direction of star i at OBMT t is

    u = normalise(u₀ + Δt (μα* p + μδ q) − ϖ (b − (b·u₀) u₀)),   then deflected,

with p, q the local east and north unit vectors, Δt = t − J2016.0 (Julian years, TCB),
b Gaia's barycentric position in au (taken heliocentric: Gaia is 1.01 × the Earth–Sun
distance from the Sun, opposite to the Sun direction) and the gravitational deflection by
the Sun, δ = (1 + γ) (GM/c² r) cot(χ/2), χ the Sun–star angle, directed away from the Sun.
Stellar aberration and radial motion are not simulated: the simulator and its pipelines
work with proper directions.
"""

from __future__ import annotations

import numpy as np

from dpct.mission.constants import (
    ARCSEC,
    CATALOGUE_EPOCH_JYEAR,
    DAY_NS,
    L2_DISTANCE_FACTOR,
    MAS,
    OBLIQUITY_J2000_ARCSEC,
    OBMT_ZERO_JD_TCB,
    SCHWARZSCHILD_HALF_AU_RAD,
)
from dpct.mission.scanlaw import sun

_CE = np.cos(OBLIQUITY_J2000_ARCSEC * ARCSEC)
_SE = np.sin(OBLIQUITY_J2000_ARCSEC * ARCSEC)


def jyear_tcb(obmt_ns: np.ndarray) -> np.ndarray:
    """Julian year (TCB) of OBMT ns, by the linear OBMT → TCB relation."""
    t = np.asarray(obmt_ns, dtype=np.int64)
    return 2000.0 + (OBMT_ZERO_JD_TCB - 2451545.0 + t / DAY_NS) / 365.25


def sun_icrs(obmt_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vector from Gaia to the Sun in ICRS (n, 3) and the Gaia–Sun distance (au)."""
    lam, _, r = sun(obmt_ns)
    s = np.stack([np.cos(lam), np.sin(lam) * _CE, np.sin(lam) * _SE], axis=-1)
    return s, r * L2_DISTANCE_FACTOR


def local_frame(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """East (p) and north (q) unit vectors at unit directions u (n, 3)."""
    ra = np.arctan2(u[:, 1], u[:, 0])
    dec = np.arcsin(np.clip(u[:, 2], -1, 1))
    p = np.stack([-np.sin(ra), np.cos(ra), np.zeros_like(ra)], axis=-1)
    q = np.stack([-np.sin(dec) * np.cos(ra), -np.sin(dec) * np.sin(ra), np.cos(dec)], axis=-1)
    return p, q


def observed_direction(
    u0: np.ndarray,
    parallax_mas: np.ndarray,
    pmra_masyr: np.ndarray,
    pmdec_masyr: np.ndarray,
    obmt_ns: np.ndarray,
    gamma: float,
) -> np.ndarray:
    """Proper direction (n, 3) of stars at times ``obmt_ns`` as seen by Gaia.

    Parameters
    ----------
    u0
        ICRS unit vectors at J2016.0, (n, 3).
    parallax_mas, pmra_masyr, pmdec_masyr
        Astrometric parameters.
    obmt_ns
        Observation times (n,).
    gamma
        PPN γ of the light deflection (1 in general relativity).
    """
    p, q = local_frame(u0)
    dt = jyear_tcb(obmt_ns) - CATALOGUE_EPOCH_JYEAR
    s, r = sun_icrs(obmt_ns)
    b = -s * r[:, None]  # Gaia's (heliocentric ≈ barycentric) position, au
    b_perp = b - (b * u0).sum(-1, keepdims=True) * u0
    u = (
        u0
        + (dt * pmra_masyr * MAS)[:, None] * p
        + (dt * pmdec_masyr * MAS)[:, None] * q
        - (parallax_mas * MAS)[:, None] * b_perp
    )
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    return deflect(u, s, r, gamma)


def deflection_vector(u: np.ndarray, s: np.ndarray, r_au: np.ndarray) -> np.ndarray:
    """Deflection per unit (1 + γ): (GM/c² r) cot(χ/2) times the away-from-Sun unit vector."""
    cos_chi = np.clip((u * s).sum(-1), -1.0, 1.0)
    sin_chi = np.sqrt(np.maximum(1 - cos_chi**2, 1e-30))
    away = (u * cos_chi[:, None] - s) / sin_chi[:, None]
    scale = SCHWARZSCHILD_HALF_AU_RAD / r_au * (1 + cos_chi) / sin_chi
    return away * scale[:, None]


def deflect(u: np.ndarray, s: np.ndarray, r_au: np.ndarray, gamma: float) -> np.ndarray:
    """Apply the Sun's light deflection with PPN ``gamma`` to unit directions ``u``."""
    v = u + (1 + gamma) * deflection_vector(u, s, r_au)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)
