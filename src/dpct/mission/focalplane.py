"""Focal-plane geometry of the astrometric field: CCD layout, fiducial lines, field angles.

Field angles (η along scan, ζ across scan) are measured in the scanning reference system:
φ = atan2(u_y, u_x) is the SRS longitude of a direction u, ζ = asin(u_z) its latitude, and
η = φ − φ_f with φ_f = +Γ/2 for the preceding FoV (``fov`` 0) and −Γ/2 for the following
FoV (``fov`` 1). The spin makes a star's φ decrease, so it crosses the preceding FoV first
and the following one Γ/ω_z later (106.56 min), and inside a FoV it meets AF1 first.
"""

from __future__ import annotations

import numpy as np

from dpct.mission.constants import (
    AC_CENTRE_PX,
    AC_HALF_WIDTH_PX,
    ARCSEC,
    BASIC_ANGLE_RAD,
    MAS,
    MISSING_AF_SLOT,
    N_AF_STRIPS,
    N_ROWS,
    NS_PER_S,
    PIXEL_AC_MAS,
    ROW_PITCH_ARCSEC,
    SPIN_RATE_RAD_S,
    STRIP_PERIOD_NS,
)

#: (row, strip) of each AF CCD, indexed by ``ccd_index`` 0 … 61 (row-major, 1-based).
AF_CCDS: np.ndarray = np.array(
    [
        (r, s)
        for r in range(1, N_ROWS + 1)
        for s in range(1, N_AF_STRIPS + 1)
        if (r, s) != MISSING_AF_SLOT
    ],
    dtype=np.int64,
)
#: ``CCD_INDEX[row, strip]`` (1-based row and strip) → ccd_index, −1 for no CCD.
CCD_INDEX: np.ndarray = np.full((N_ROWS + 1, N_AF_STRIPS + 1), -1, dtype=np.int64)
CCD_INDEX[AF_CCDS[:, 0], AF_CCDS[:, 1]] = np.arange(AF_CCDS.shape[0])
N_AF_CCDS = int(AF_CCDS.shape[0])

#: Along-scan field angle between adjacent AF strips (4.85 s of spin), rad.
STRIP_PITCH_RAD = STRIP_PERIOD_NS / NS_PER_S * SPIN_RATE_RAD_S
#: Fiducial (observation) line of AF strip j at η_j = (5 − j)·pitch, index 0 unused, rad.
STRIP_ETA_RAD: np.ndarray = np.array(
    [np.nan] + [(5 - j) * STRIP_PITCH_RAD for j in range(1, N_AF_STRIPS + 1)]
)
ROW_PITCH_RAD = ROW_PITCH_ARCSEC * ARCSEC
PIXEL_AC_RAD = PIXEL_AC_MAS * MAS
#: Half AC extent of a CCD's image area, rad.
CCD_HALF_HEIGHT_RAD = AC_HALF_WIDTH_PX * PIXEL_AC_RAD
#: |ζ| beyond which no AF CCD sees a star, rad.
FIELD_HALF_HEIGHT_RAD = 3 * ROW_PITCH_RAD + CCD_HALF_HEIGHT_RAD
#: SRS longitude of each FoV's viewing direction, rad (preceding, following).
FOV_PHI_RAD: np.ndarray = np.array([0.5 * BASIC_ANGLE_RAD, -0.5 * BASIC_ANGLE_RAD])


def row_centre_rad(row: np.ndarray) -> np.ndarray:
    """AC field angle ζ of the centre of CCD row ``row`` (1 … 7), rad."""
    return (np.asarray(row) - 4) * ROW_PITCH_RAD


def ac_pixel(zeta_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CCD row (0 if in a gap or outside) and AC pixel coordinate μ of AC angle ζ."""
    zeta = np.asarray(zeta_rad, dtype=np.float64)
    row = np.rint(zeta / ROW_PITCH_RAD).astype(np.int64) + 4
    mu = AC_CENTRE_PX + (zeta - (row - 4) * ROW_PITCH_RAD) / PIXEL_AC_RAD
    ok = (row >= 1) & (row <= N_ROWS) & (np.abs(mu - AC_CENTRE_PX) <= AC_HALF_WIDTH_PX)
    return np.where(ok, row, 0), mu


# --- geometric calibration (the GSR instrument truth) ----------------------------------

#: The six AL calibration terms per (FoV, CCD): their partials are
#: 1, μ̃, μ̃² − 1/3, C − 1, (G − 15)/5, (C − 1)·μ̃ with μ̃ = (μ − 996.5)/983 ∈ [−1, 1],
#: C = G_BP − G_RP and G in mag.
INSTRUMENT_TERMS = ("offset", "ac1", "ac2", "colour", "magnitude", "colour_ac")
N_INSTRUMENT = len(INSTRUMENT_TERMS) * 2 * N_AF_CCDS


def instrument_partials(mu_px: np.ndarray, bp_rp_mag: np.ndarray, g_mag: np.ndarray) -> np.ndarray:
    """∂η/∂(term value) of the six calibration terms, (n, 6), dimensionless."""
    m = (np.asarray(mu_px, dtype=np.float64) - AC_CENTRE_PX) / AC_HALF_WIDTH_PX
    c = np.asarray(bp_rp_mag, dtype=np.float64) - 1.0
    g = (np.asarray(g_mag, dtype=np.float64) - 15.0) / 5.0
    return np.stack([np.ones_like(m), m, m * m - 1.0 / 3.0, c, g, c * m], axis=-1)


def instrument_columns(fov: np.ndarray, ccd_index: np.ndarray) -> np.ndarray:
    """Unknown indices (n, 6): term k, FoV f, CCD c → k·124 + f·62 + c."""
    base = np.asarray(fov, dtype=np.int64) * N_AF_CCDS + np.asarray(ccd_index, dtype=np.int64)
    return base[:, None] + np.arange(len(INSTRUMENT_TERMS)) * 2 * N_AF_CCDS
