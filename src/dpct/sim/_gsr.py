"""GSR observations: along-scan abscissa residuals of primary stars with their partials.

One row per AF window of a primary star (G ≤ ``gsr.g_max_mag``). With η the along-scan
field angle in the star's FoV (nominal basic angle: the BAM-measured variation is taken
as already corrected) plus the CCD's geometric calibration,

    al_residual = η(true star, true attitude, true calibration, true γ)
                − η(reference star, reference attitude, zero calibration, γ = 1) + ε,

evaluated with the same attitude kernel as the AF transits at the transit time. The
truth − reference differences are small (≈ 1 mas), so to first order

    al_residual = Σ astro_partials·Δastro + Σ att_partials·Δc + Σ instr_partials·Δinstr
                + gamma_partial·(γ − 1) + ε,

with every partial evaluated at the reference; the neglected second-order terms are
below 10⁻⁴ µas. ε is Gaussian with σ = √(σ_CR² + floor²), σ_CR the Cramér–Rao bound of
the window's centroid (nominal LSF, joint fit of centroid, flux and background).

Units: residual, error and unknowns in µas (proper motions in µas/yr, so their partials
are in years); attitude unknowns are the B-spline coefficients (µas) of the small SRS
rotation true ∘ reference⁻¹ — axis-major, 4 coefficients per axis from
``att_first_coeff``; instrument unknowns are indexed as in :func:`instrument_columns`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa

from dpct.mission.constants import CATALOGUE_EPOCH_JYEAR, DEG, MAS, PIXEL_AL_MAS, UAS
from dpct.mission.focalplane import (
    AF_CCDS,
    FOV_PHI_RAD,
    instrument_columns,
    instrument_partials,
)
from dpct.mission.schemas import SCHEMAS
from dpct.sim._af import AfWindows, gate_lines, sky_background_e, star_flux_e
from dpct.sim._astrometry import (
    deflection_vector,
    jyear_tcb,
    local_frame,
    observed_direction,
    sun_icrs,
)
from dpct.sim._catalogue import unit_vectors
from dpct.sim._config import SimConfig
from dpct.sim._lsf import LsfParams, cramer_rao_centroid
from dpct.sim._rng import Stream, generator
from dpct.sim._scanlaw import AttitudeGrid, attitude_many


@lru_cache(maxsize=8)
def _error_table(config: SimConfig) -> tuple[np.ndarray, np.ndarray]:
    g = np.arange(2.0, 21.6, 0.05)
    af = config.af
    flux_full = star_flux_e(g)
    frac = gate_lines(flux_full, af.full_well_e, af.gating) / 4500.0
    n = np.where(g <= af.bright_g_mag, af.bright_samples, af.faint_samples)
    nominal = LsfParams(0.85, 0.85 * 2.6, 0.15, 0.0)
    sig = np.empty(g.size)
    for size in np.unique(n):
        m = n == size
        sig[m] = cramer_rao_centroid(
            flux_full[m] * frac[m],
            sky_background_e(np.full(m.sum(), 30 * DEG), af.sky_background_e) * frac[m],
            af.ron_e,
            nominal,
            int(size),
        )
    sig_uas = np.hypot(sig * PIXEL_AL_MAS * 1e3, config.gsr.error_floor_uas)
    return g, sig_uas


def al_error_uas(config: SimConfig, g_mag: np.ndarray) -> np.ndarray:
    """Per-CCD AL abscissa error assigned to a star of magnitude G, µas."""
    g, s = _error_table(config)
    return np.interp(g_mag, g, s)


def _phi_and_gradient(a: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = np.einsum("nij,nj->ni", a, u)
    rho2 = v[:, 0] ** 2 + v[:, 1] ** 2
    phi = np.arctan2(v[:, 1], v[:, 0])
    g_srs = np.stack([-v[:, 1] / rho2, v[:, 0] / rho2, np.zeros_like(rho2)], axis=-1)
    return phi, g_srs, v


def gsr_rows(
    config: SimConfig,
    stars: dict[str, np.ndarray],
    win: AfWindows,
    grid: AttitudeGrid,
    calibration: np.ndarray,
    chunk_index: int,
) -> tuple[pa.Table, pa.Table]:
    """GSR observation rows of a chunk and the attitude truth they touch.

    Returns
    -------
    observations, attitude_truth
        The ``gsr_observations`` table and the ``gsr_attitude`` truth: the true
        coefficients (µas) of every B-spline coefficient the rows reference.
    """
    sel = np.flatnonzero(stars["primary"][win.star])
    n = sel.size
    si = win.star[sel]
    t = win.transit_ns[sel]
    fov = win.fov[sel]
    ccd = win.ccd[sel]
    mu = win.mu_px[sel]
    colour = stars["bp_rp_mag"][si]
    g = stars["g_mag"][si]
    # attitude at the transit times
    mats = np.empty((3, n, 3, 3))
    attitude_many(grid.t_rel(t), grid.as_tuple(), mats, np.empty(n))
    a_ref, a_true = mats[1], mats[2]
    # true and reference star directions
    gamma_true = 1.0 + config.gsr.gamma_minus_one
    plx, pmra, pmdec = stars["parallax_mas"][si], stars["pmra_masyr"][si], stars["pmdec_masyr"][si]
    u_true = observed_direction(stars["u"][si], plx, pmra, pmdec, t, gamma_true)
    d = stars["delta"][si] * 1e-3  # mas, mas/yr
    dec_t = stars["dec"][si]
    ra_ref = stars["ra"][si] - d[:, 0] * MAS / np.cos(dec_t)
    dec_ref = dec_t - d[:, 1] * MAS
    u0_ref = unit_vectors(ra_ref, dec_ref)
    plx_r, pmra_r, pmdec_r = plx - d[:, 2], pmra - d[:, 3], pmdec - d[:, 4]
    u_ref = observed_direction(u0_ref, plx_r, pmra_r, pmdec_r, t, 1.0)
    # field angles
    phi_f = FOV_PHI_RAD[fov]
    phi_true, _, _ = _phi_and_gradient(a_true, u_true)
    phi_ref, g_srs, v_ref = _phi_and_gradient(a_ref, u_ref)
    ip = instrument_partials(mu, colour, g)
    instr = (calibration[fov, ccd] * ip).sum(-1)
    eta_true = phi_true - phi_f + instr
    eta_ref = phi_ref - phi_f
    resid = ((eta_true - eta_ref + np.pi) % (2 * np.pi) - np.pi) / UAS
    sigma = al_error_uas(config, g)
    rng = generator(config.seed, Stream.GSR_NOISE, chunk_index)
    if config.gsr.noise:
        resid = resid + rng.standard_normal(n) * sigma
    # partials at the reference
    g_icrs = np.einsum("nji,nj->ni", a_ref, g_srs)  # Aᵀ g
    p, q = local_frame(u0_ref)
    s_sun, r_sun = sun_icrs(t)
    b = -s_sun * r_sun[:, None]
    b_perp = b - (b * u_ref).sum(-1, keepdims=True) * u_ref
    dt = jyear_tcb(t) - CATALOGUE_EPOCH_JYEAR
    gp, gq = (g_icrs * p).sum(-1), (g_icrs * q).sum(-1)
    astro = np.stack([gp, gq, -(g_icrs * b_perp).sum(-1), dt * gp, dt * gq], axis=-1)
    scan_angle = np.arctan2(gp, gq)
    p_att = np.cross(g_srs, v_ref)  # ∂η/∂θ (SRS axes)
    kx = (grid.t_rel(t) + grid.knot_offset_s) / grid.knot_s
    first = np.floor(kx).astype(np.int64)
    v = kx - first
    basis = (
        np.stack(
            [(1 - v) ** 3, 3 * v**3 - 6 * v**2 + 4, -3 * v**3 + 3 * v**2 + 3 * v + 1, v**3], axis=1
        )
        / 6.0
    )
    att = (p_att[:, :, None] * basis[:, None, :]).reshape(n, 12)
    first_abs = first + grid.first_knot
    gamma_p = (g_icrs * deflection_vector(u_ref, s_sun, r_sun)).sum(-1) / UAS
    cols = instrument_columns(fov, ccd)

    def lists(values: np.ndarray, width: int, type_: pa.DataType) -> pa.Array:
        off = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
        return pa.ListArray.from_arrays(off, pa.array(values.reshape(-1), type=type_))

    table = pa.Table.from_arrays(
        [
            pa.array(win.window_id[sel]),
            pa.array(stars["source_id"][si]),
            pa.array(t),
            pa.array(fov.astype(np.int8)),
            pa.array(ccd.astype(np.int16)),
            pa.array(AF_CCDS[ccd, 0].astype(np.int8)),
            pa.array(AF_CCDS[ccd, 1].astype(np.int8)),
            pa.array(scan_angle),
            pa.array(resid),
            pa.array(sigma),
            lists(astro, 5, pa.float64()),
            pa.array(first_abs),
            lists(att, 12, pa.float64()),
            lists(cols.astype(np.int32), 6, pa.int32()),
            lists(ip, 6, pa.float64()),
            pa.array(gamma_p),
        ],
        schema=SCHEMAS["gsr_observations"],
    )
    touched = np.unique(first_abs[:, None] + np.arange(4)).astype(np.int64)
    theta = grid.coeffs[touched - grid.first_knot] / UAS
    attitude = pa.Table.from_arrays(
        [pa.array(touched)] + [pa.array(theta[:, a]) for a in range(3)],
        schema=SCHEMAS["gsr_attitude"],
    )
    return table, attitude
