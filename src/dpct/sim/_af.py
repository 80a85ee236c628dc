"""AF windows: 1-D AC-binned samples of the true LSF with photon and read-out noise.

For each AF transit the on-board logic places a window of ``af.faint_samples`` (G > 16)
or ``af.bright_samples`` (G ≤ 16) AL samples, centred on the predicted image position
(prediction error ``af.onboard_al_error_px`` rms) and aligned on the TDI line grid
(lines at integer multiples of 982.8 µs of OBMT). Sample k of a window whose first
sample crossed the fiducial line at ``obmt_ns`` sees the sky that crossed it during
line k, so with the true crossing time t_c the true centroid in sample units is
c = (t_c − obmt_ns) / 982 800 ns, and

    λ_k = F·P(k − c; LSF(ccd, colour, t)) + B,   sample = Poisson(λ_k) + N(0, RON²).

F is the star's electrons over the integrated lines (bright stars are gated so that the
peak sample stays below half the full well), B the sky per sample (brighter toward the
Galactic plane, plus injected background jumps). Optional effects: cosmic rays (one hit
sample, exponential charge), saturation (clip at the full well, flagged), truncated
windows (a close neighbour: 6 … n − 1 samples kept at one end), and corruption inside
data-qualifier bad intervals (random gain 0.3–3 and offset, so that a pipeline that
ignores qualifiers is visibly hurt).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa

from dpct.mission.constants import (
    CCD_INTEGRATION_S,
    DEG,
    G_ZERO_POINT_MAG,
    GATE_LINES,
    NS_PER_S,
    TDI_PERIOD_NS,
)
from dpct.mission.focalplane import AF_CCDS
from dpct.mission.schemas import SCHEMAS
from dpct.sim._anomalies import Events, background_delta_e
from dpct.sim._config import SimConfig
from dpct.sim._lsf import LsfModel, sampled_profile
from dpct.sim._rng import Stream, generator
from dpct.sim._transits import Transits

#: Peak fraction of the flux in one sample for the nominal LSF (σ_c ≈ 0.85 px), used by
#: the on-board gate choice.
PEAK_FRACTION = 0.42


@dataclass(frozen=True)
class AfWindows:
    """AF windows of a chunk: the telemetry and truth tables plus what GSR rows need."""

    telemetry: pa.Table
    truth: pa.Table
    star: np.ndarray  # index into the chunk's star arrays
    fov: np.ndarray
    ccd: np.ndarray
    strip: np.ndarray
    mu_px: np.ndarray
    transit_ns: np.ndarray
    window_id: np.ndarray


def star_flux_e(g_mag: np.ndarray) -> np.ndarray:
    """Electrons of a star over a full (ungated) CCD transit, from its G magnitude."""
    return CCD_INTEGRATION_S * 10 ** (-0.4 * (np.asarray(g_mag) - G_ZERO_POINT_MAG))


def gate_lines(flux_full_e: np.ndarray, full_well_e: float, gating: bool) -> np.ndarray:
    """Integrated TDI lines chosen on board: the longest gate keeping the peak ≤ FW/2."""
    flux = np.asarray(flux_full_e)
    if not gating:
        return np.full(flux.shape, GATE_LINES[0], dtype=np.int64)
    # longest gate with flux·(lines/4500)·peak fraction ≤ FW/2 (the shortest one if none)
    allowed = 0.5 * full_well_e / (np.maximum(flux, 1e-300) * PEAK_FRACTION) * GATE_LINES[0]
    asc = np.asarray(GATE_LINES[::-1])
    pick = np.searchsorted(asc, allowed, side="right") - 1
    return asc[np.maximum(pick, 0)]


def sky_background_e(b_gal_rad: np.ndarray, base_e: float) -> np.ndarray:
    """Mean sky background per ungated sample, brighter toward the Galactic plane."""
    return base_e * (1 + 2 * np.exp(-np.abs(b_gal_rad) / (10 * DEG)))


def make_af_windows(
    config: SimConfig,
    lsf: LsfModel,
    stars: dict[str, np.ndarray],
    transits: Transits,
    origin_ns: int,
    events: Events,
    chunk_index: int,
    start_ns: int,
    stop_ns: int,
) -> AfWindows:
    """Build the chunk's AF windows from its transits.

    Windows belong to the chunk whose interval holds their ``obmt_ns`` (sample 0).
    """
    af = config.af
    rng = generator(config.seed, Stream.AF_NOISE, chunk_index)
    order = np.lexsort((transits.ccd, transits.t_rel_s))
    star = transits.star[order]
    fov = transits.fov[order]
    ccd = transits.ccd[order]
    strip = transits.strip[order]
    mu = transits.mu_px[order]
    t_rel_ns = transits.t_rel_s[order] * NS_PER_S  # float ns since origin
    n = star.size
    g = stars["g_mag"][star]
    # window placement on the TDI line grid, from the on-board prediction
    n_full = np.where(g <= af.bright_g_mag, af.bright_samples, af.faint_samples)
    pred = t_rel_ns + rng.normal(0.0, af.onboard_al_error_px, n) * TDI_PERIOD_NS
    o_line, o_rem = divmod(origin_ns, TDI_PERIOD_NS)
    line0 = o_line + np.rint((o_rem + pred) / TDI_PERIOD_NS - 0.5 * (n_full - 1)).astype(np.int64)
    # truncation by a close neighbour
    trunc = rng.random(n) < af.truncation_probability
    keep_n = np.where(trunc, rng.integers(6, n_full), n_full)
    at_start = rng.random(n) < 0.5
    first = np.where(trunc & at_start, n_full - keep_n, 0)
    obmt0 = (line0 + first) * TDI_PERIOD_NS
    cr_hit = rng.random(n) < af.cosmic_ray_probability
    cr_pos = (rng.random(n) * keep_n).astype(np.int64)
    cr_e = rng.exponential(af.cosmic_ray_mean_e, n)
    ac_pred = mu + rng.normal(0.0, af.onboard_ac_error_px, n)
    sky_scatter = np.exp(0.1 * rng.standard_normal(n))
    mine = (obmt0 >= start_ns) & (obmt0 < stop_ns)
    sel = np.flatnonzero(mine)
    star, fov, ccd, strip, mu, t_rel_ns, g = (
        a[sel] for a in (star, fov, ccd, strip, mu, t_rel_ns, g)
    )
    n_full, keep_n, first, obmt0, trunc = (a[sel] for a in (n_full, keep_n, first, obmt0, trunc))
    cr_hit, cr_pos, cr_e, ac_pred, sky_scatter = (
        a[sel] for a in (cr_hit, cr_pos, cr_e, ac_pred, sky_scatter)
    )
    n = sel.size
    centroid = ((origin_ns - obmt0) + t_rel_ns) / TDI_PERIOD_NS  # exact int part + float
    transit_ns = origin_ns + np.rint(t_rel_ns).astype(np.int64)
    colour = stars["bp_rp_mag"][star]
    flux_full = star_flux_e(g)
    lines = gate_lines(flux_full, af.full_well_e, af.gating)
    frac = lines / GATE_LINES[0]
    flux = flux_full * frac
    bkg = sky_background_e(stars["b_gal"][star], af.sky_background_e) * sky_scatter * frac
    bkg = bkg + background_delta_e(config.anomalies, obmt0, ccd, fov)
    p = lsf.params(ccd, colour, obmt0)
    ron = np.where(AF_CCDS[ccd, 1] == 1, af.ron_af1_e, af.ron_e)
    corrupt = np.zeros(n, dtype=bool)
    for s, e, c, f in zip(
        events.dq_start_ns, events.dq_stop_ns, events.dq_ccd_index, events.dq_fov, strict=True
    ):
        corrupt |= (obmt0 >= s) & (obmt0 < e) & ((c < 0) | (ccd == c)) & ((f < 0) | (fov == f))
    gap = np.zeros(n, dtype=bool)
    for s, e in zip(events.gap_start_ns, events.gap_stop_ns, strict=True):
        gap |= (obmt0 >= s) & (obmt0 < e)
    if gap.any():
        keep = np.flatnonzero(~gap)
        star, fov, ccd, strip, mu, t_rel_ns, g, colour = (
            a[keep] for a in (star, fov, ccd, strip, mu, t_rel_ns, g, colour)
        )
        keep_n, first, obmt0, trunc, cr_hit, cr_pos, cr_e, ac_pred = (
            a[keep] for a in (keep_n, first, obmt0, trunc, cr_hit, cr_pos, cr_e, ac_pred)
        )
        centroid, transit_ns, lines, flux, bkg, ron, corrupt = (
            a[keep] for a in (centroid, transit_ns, lines, flux, bkg, ron, corrupt)
        )
        p = p.take(keep)
        n = keep.size
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(keep_n, out=offsets[1:])
    values = np.empty(int(offsets[-1]), dtype=np.float32)
    saturated = np.zeros(n, dtype=np.bool_)
    cr_sample = np.where(cr_hit, cr_pos, -1)
    sat_level = af.full_well_e if af.saturation else np.inf
    _window_samples(
        rng,
        centroid,
        np.broadcast_to(p.sigma_core_px, n).astype(np.float64),
        np.broadcast_to(p.sigma_halo_px, n).astype(np.float64),
        np.broadcast_to(p.halo_weight, n).astype(np.float64),
        np.broadcast_to(p.asym_px, n).astype(np.float64),
        flux,
        bkg,
        ron.astype(np.float64),
        offsets,
        cr_sample,
        cr_e,
        corrupt,
        sat_level,
        values,
        saturated,
    )
    window_id = (np.int64(chunk_index) << 24) | np.arange(n, dtype=np.int64)
    row = AF_CCDS[ccd, 0]
    tel = pa.Table.from_arrays(
        [
            pa.array(window_id),
            pa.array(obmt0),
            pa.array(stars["source_id"][star]),
            pa.array(fov.astype(np.int8)),
            pa.array(ccd.astype(np.int16)),
            pa.array(row.astype(np.int8)),
            pa.array(strip.astype(np.int8)),
            pa.array(g.astype(np.float32)),
            pa.array(colour.astype(np.float32)),
            pa.array(keep_n.astype(np.int16)),
            pa.array(first.astype(np.int16)),
            pa.array(trunc),
            pa.array(lines.astype(np.int16)),
            pa.array(ac_pred.astype(np.float32)),
            pa.array(ron.astype(np.float32)),
            pa.array(saturated),
            pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values)),
        ],
        schema=SCHEMAS["af_windows"],
    )
    truth = pa.Table.from_arrays(
        [
            pa.array(window_id),
            pa.array(obmt0),
            pa.array(stars["source_id"][star]),
            pa.array(transit_ns),
            pa.array(centroid),
            pa.array(flux),
            pa.array(bkg),
            pa.array(np.broadcast_to(p.sigma_core_px, n).astype(np.float64)),
            pa.array(np.broadcast_to(p.sigma_halo_px, n).astype(np.float64)),
            pa.array(np.broadcast_to(p.halo_weight, n).astype(np.float64)),
            pa.array(np.broadcast_to(p.asym_px, n).astype(np.float64)),
            pa.array(mu),
            pa.array(cr_sample.astype(np.int16)),
            pa.array(np.where(cr_sample >= 0, cr_e, 0.0).astype(np.float32)),
            pa.array(corrupt),
        ],
        schema=SCHEMAS["af_truth"],
    )
    return AfWindows(tel, truth, star, fov, ccd, strip, mu, transit_ns, window_id)


@numba.njit(cache=True)
def _window_samples(
    rng: np.random.Generator,
    centroid: np.ndarray,
    sc: np.ndarray,
    sh: np.ndarray,
    a: np.ndarray,
    d: np.ndarray,
    flux: np.ndarray,
    bkg: np.ndarray,
    ron: np.ndarray,
    offsets: np.ndarray,
    cr_sample: np.ndarray,
    cr_e: np.ndarray,
    corrupt: np.ndarray,
    sat_level: float,
    out: np.ndarray,
    saturated: np.ndarray,
) -> None:
    prof = np.empty(64)
    for i in range(centroid.size):
        o = offsets[i]
        n = offsets[i + 1] - o
        sampled_profile(centroid[i], sc[i], sh[i], a[i], d[i], n, 0, prof)
        gain = 1.0
        shift = 0.0
        if corrupt[i]:
            gain = math.exp(rng.uniform(math.log(0.3), math.log(3.0)))
            shift = rng.normal(0.0, 200.0)
        for k in range(n):
            lam = flux[i] * prof[k] + bkg[i]
            v = rng.poisson(lam) + rng.normal(0.0, ron[i])
            if k == cr_sample[i]:
                v += cr_e[i]
            if v >= sat_level:
                v = sat_level
                saturated[i] = True
            out[o + k] = v * gain + shift
