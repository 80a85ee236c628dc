"""Find every AF CCD transit of every star in a chunk, to nanosecond-level precision.

1. At the middle of each piece of the chunk (≤ 15 min) the true attitude maps the sky
   pixels' centres to field angles; pixels whose centre passes within the AF field (plus
   the pixel radius and the spin-axis drift) of either FoV during the piece (the chunk
   ± 60 s) are kept — about 1 % of the sky.
2. Their stars are regenerated, and each star's FoV-centre crossing time is predicted
   from its SRS longitude (t = t_m + Δφ/ω_z); stars outside the chunk or the field drop.
3. A Numba kernel solves, for each candidate and AF strip j, η_obs(t) = η_j by Newton
   iteration on the true attitude, where η_obs is the star's along-scan field angle in
   its FoV — whose direction moves with the true basic angle, φ_f = ±(Γ + ΔΓ(t))/2 —
   plus the CCD's geometric calibration. The CCD (row) is read from ζ at the crossing;
   stars in the gaps between rows, or in row 4 at AF9, have no transit there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from dpct.mission.constants import (
    AC_CENTRE_PX,
    AC_HALF_WIDTH_PX,
    ARCSEC,
    BASIC_ANGLE_RAD,
    N_AF_STRIPS,
    NS_PER_S,
    SPIN_RATE_RAD_S,
)
from dpct.mission.focalplane import (
    CCD_INDEX,
    FIELD_HALF_HEIGHT_RAD,
    FOV_PHI_RAD,
    PIXEL_AC_RAD,
    ROW_PITCH_RAD,
    STRIP_ETA_RAD,
)
from dpct.sim._astrometry import observed_direction
from dpct.sim._bam import bav_rad
from dpct.sim._catalogue import PIXEL_RADIUS_RAD, sky_pixels, stars_in_pixels
from dpct.sim._config import SimConfig
from dpct.sim._scanlaw import AttitudeGrid, attitude_at, attitude_many

MARGIN_S = 60.0
_ZETA_MARGIN_RAD = 120 * ARCSEC  # spin-axis drift over half a piece plus wobble


@dataclass(frozen=True)
class Transits:
    """AF CCD transits found in a chunk (one entry per star × FoV × strip crossing).

    ``star`` indexes the chunk's star arrays; ``t_rel_s`` is seconds from the attitude
    grid's origin; ``mu_px`` is the AC pixel coordinate at the crossing.
    """

    star: np.ndarray
    fov: np.ndarray
    strip: np.ndarray
    ccd: np.ndarray
    t_rel_s: np.ndarray
    zeta_rad: np.ndarray
    mu_px: np.ndarray


def _wrap(x: np.ndarray) -> np.ndarray:
    return (x + np.pi) % (2 * np.pi) - np.pi


def select_pixels(a_mid: np.ndarray, t_lo_s: float, t_hi_s: float) -> np.ndarray:
    """Sky pixels that can hold a transit between ``t_lo_s`` and ``t_hi_s`` (s from t_m)."""
    px = sky_pixels()
    lim = FIELD_HALF_HEIGHT_RAD + _ZETA_MARGIN_RAD + PIXEL_RADIUS_RAD
    near = np.flatnonzero(np.abs(px.centre @ a_mid[2]) < np.sin(lim))
    v = px.centre[near] @ a_mid.T
    phi = np.arctan2(v[:, 1], v[:, 0])
    pad = PIXEL_RADIUS_RAD / SPIN_RATE_RAD_S
    hit = np.zeros(near.size, dtype=bool)
    for f in (0, 1):
        tc = _wrap(phi - FOV_PHI_RAD[f]) / SPIN_RATE_RAD_S
        hit |= (tc >= t_lo_s - pad) & (tc <= t_hi_s + pad)
    return near[hit]


PIECE_S = 900.0
"""Candidates are predicted from the attitude at the middle of pieces at most this long:
the field-height margin covers the spin axis's drift over half a piece (it moves a few
degrees a day), so a longer chunk is searched piece by piece rather than from its middle."""
_OVERLAP_S = 5.0  # pieces' prediction windows overlap; duplicates are dropped


def _attitude_matrix(grid: AttitudeGrid, t_ns: int) -> np.ndarray:
    mats = np.empty((3, 1, 3, 3))
    attitude_many(grid.t_rel(np.array([t_ns])), grid.as_tuple(), mats, np.empty(1))
    return mats[2, 0]


def find_transits(
    config: SimConfig,
    grid: AttitudeGrid,
    bav_params: tuple,
    calibration: np.ndarray,
    start_ns: int,
    stop_ns: int,
) -> tuple[dict[str, np.ndarray], Transits]:
    """Stars near the scan and their AF transits in ``[start_ns, stop_ns)`` (± margin).

    Returns
    -------
    stars, transits
        The generated stars (see :func:`stars_in_pixels`) and the transits found.
    """
    pieces = max(1, math.ceil((stop_ns - start_ns) / (PIECE_S * NS_PER_S)))
    edges = np.linspace(start_ns, stop_ns, pieces + 1).round().astype(np.int64)
    windows = []  # (piece middle, attitude there, prediction window in s from the middle)
    for k in range(pieces):
        mid = int(edges[k] + edges[k + 1]) // 2
        lo = (edges[k] - mid) / NS_PER_S - (MARGIN_S if k == 0 else _OVERLAP_S)
        hi = (edges[k + 1] - mid) / NS_PER_S + (MARGIN_S if k == pieces - 1 else _OVERLAP_S)
        windows.append((mid, _attitude_matrix(grid, mid), lo, hi))
    pixels = np.unique(np.concatenate([select_pixels(a, lo, hi) for _, a, lo, hi in windows]))
    stars = stars_in_pixels(config, pixels)
    n = stars["source_id"].size
    gamma = 1.0 + config.gsr.gamma_minus_one
    cand_star, cand_fov, cand_tc = [], [], []
    for t_mid_ns, a_mid, lo, hi in windows:
        u_mid = observed_direction(
            stars["u"],
            stars["parallax_mas"],
            stars["pmra_masyr"],
            stars["pmdec_masyr"],
            np.full(n, t_mid_ns),
            gamma,
        )
        v = u_mid @ a_mid.T
        phi = np.arctan2(v[:, 1], v[:, 0])
        zeta = np.arcsin(np.clip(v[:, 2], -1, 1))
        in_field = np.abs(zeta) < FIELD_HALF_HEIGHT_RAD + _ZETA_MARGIN_RAD
        for f in (0, 1):
            tc = _wrap(phi - FOV_PHI_RAD[f]) / SPIN_RATE_RAD_S
            idx = np.flatnonzero(in_field & (tc >= lo) & (tc <= hi))
            cand_star.append(idx)
            cand_fov.append(np.full(idx.size, f, dtype=np.int64))
            cand_tc.append(t_mid_ns + np.rint(tc[idx] * NS_PER_S).astype(np.int64))
    star = np.concatenate(cand_star)
    fov = np.concatenate(cand_fov)
    tc_ns = np.concatenate(cand_tc)
    # a crossing predicted in two overlapping pieces is one crossing (a star crosses a
    # field once every 6 h, far more than a piece)
    _, first = np.unique(star * 2 + fov, return_index=True)
    first.sort()  # keep the search order (one piece: exactly as without pieces)
    star, fov, tc_ns = star[first], fov[first], tc_ns[first]
    u_c = observed_direction(
        stars["u"][star],
        stars["parallax_mas"][star],
        stars["pmra_masyr"][star],
        stars["pmdec_masyr"][star],
        tc_ns,
        gamma,
    )
    m = star.size
    out_t = np.empty((m, N_AF_STRIPS))
    out_zeta = np.empty((m, N_AF_STRIPS))
    out_mu = np.empty((m, N_AF_STRIPS))
    out_ccd = np.empty((m, N_AF_STRIPS), dtype=np.int64)
    _solve_strips(
        np.ascontiguousarray(u_c),
        fov,
        grid.t_rel(tc_ns),
        stars["bp_rp_mag"][star],
        stars["g_mag"][star],
        grid.as_tuple(),
        bav_params,
        np.ascontiguousarray(calibration),
        STRIP_ETA_RAD,
        CCD_INDEX,
        out_t,
        out_zeta,
        out_mu,
        out_ccd,
    )
    ok = out_ccd >= 0
    ci, sj = np.nonzero(ok)
    return stars, Transits(
        star=star[ci],
        fov=fov[ci],
        strip=sj + 1,
        ccd=out_ccd[ok],
        t_rel_s=out_t[ok],
        zeta_rad=out_zeta[ok],
        mu_px=out_mu[ok],
    )


@numba.njit(cache=True)
def instrument_offset(
    cal: np.ndarray, f: int, ccd: int, mu: float, colour: float, g: float
) -> float:
    """AL geometric-calibration offset (rad) of CCD ``ccd`` in FoV ``f`` (see
    :func:`dpct.mission.focalplane.instrument_partials`)."""
    m = (mu - AC_CENTRE_PX) / AC_HALF_WIDTH_PX
    c = colour - 1.0
    gg = (g - 15.0) / 5.0
    p = cal[f, ccd]
    return p[0] + p[1] * m + p[2] * (m * m - 1.0 / 3.0) + p[3] * c + p[4] * gg + p[5] * c * m


@numba.njit(cache=True)
def _solve_strips(
    u: np.ndarray,
    fov: np.ndarray,
    tc: np.ndarray,
    colour: np.ndarray,
    gmag: np.ndarray,
    grid: tuple,
    bav: tuple,
    cal: np.ndarray,
    strip_eta: np.ndarray,
    ccd_index: np.ndarray,
    out_t: np.ndarray,
    out_zeta: np.ndarray,
    out_mu: np.ndarray,
    out_ccd: np.ndarray,
) -> None:
    a_nom = np.empty((3, 3))
    a_ref = np.empty((3, 3))
    a_true = np.empty((3, 3))
    w = SPIN_RATE_RAD_S
    for i in range(u.shape[0]):
        sgn = 1.0 if fov[i] == 0 else -1.0
        u0 = u[i, 0]
        u1 = u[i, 1]
        u2 = u[i, 2]
        t = tc[i] - strip_eta[1] / w
        # ΔΓ changes by < 10⁻¹¹ rad during one transit: evaluate it once per FoV crossing.
        om = attitude_at(t, grid, a_nom, a_ref, a_true)
        half = sgn * 0.5 * (BASIC_ANGLE_RAD + bav_rad(t, om, bav))
        for j in range(1, strip_eta.size):
            if j > 1:
                t += (strip_eta[j - 1] - strip_eta[j]) / w
            ccd = -1
            zeta = 0.0
            mu = 0.0
            for _ in range(10):
                attitude_at(t, grid, a_nom, a_ref, a_true)
                v0 = a_true[0, 0] * u0 + a_true[0, 1] * u1 + a_true[0, 2] * u2
                v1 = a_true[1, 0] * u0 + a_true[1, 1] * u1 + a_true[1, 2] * u2
                v2 = a_true[2, 0] * u0 + a_true[2, 1] * u1 + a_true[2, 2] * u2
                zeta = math.atan2(v2, math.sqrt(v0 * v0 + v1 * v1))
                eta = math.atan2(v1, v0) - half
                eta = (eta + math.pi) % (2.0 * math.pi) - math.pi
                row = math.floor(zeta / ROW_PITCH_RAD + 0.5) + 4
                mu = AC_CENTRE_PX + (zeta - (row - 4) * ROW_PITCH_RAD) / PIXEL_AC_RAD
                ccd = -1
                if 1 <= row <= 7 and abs(mu - AC_CENTRE_PX) <= AC_HALF_WIDTH_PX:
                    ccd = ccd_index[row, j]
                if ccd >= 0:
                    eta += instrument_offset(cal, fov[i], ccd, mu, colour[i], gmag[i])
                step = (eta - strip_eta[j]) / w
                t += step
                if abs(step) < 1e-9:
                    break
            out_t[i, j - 1] = t
            out_zeta[i, j - 1] = zeta
            out_mu[i, j - 1] = mu
            out_ccd[i, j - 1] = ccd
