"""Basic Angle Monitor: the true basic-angle variation and the BAM fringe images.

True basic-angle variation (µas), a function of OBMT t and heliotropic spin phase Ω:

    ΔΓ(t) = Σ_{k=1..K} [C_k cos kΩ + S_k sin kΩ]          spin harmonics, K ≥ 8
            + r (t − t_NSL) + A_s sin(2π t / 30 d + φ_s)     slow drifts
            + Σ_{t_j ≤ t} J_j                               jumps (random, thermal, injected)

with |C_k, S_k| = A₁ ρ^{k−1} (A₁ = 1 mas, ρ = 0.5: k = 8 has ≈ 8 µas) and random phases.

BAM geometry (placeholder, see docs/simulator.md): one BAM CCD (row 1) receives both
fields' fringe patterns in two windows; each window is read as ``bam.samples`` AL pixels
× 80 AC pixels binned AC into one AL profile. A profile is

    I(x) = B + A·E(x)·[1 + V cos(2π (x − x_c)/P − φ)],  E(x) = exp(−(x − e_c)²/2σ_e²),

x the sample index, x_c = (n − 1)/2. A shift s of the pattern (µas on the sky, one AL
pixel = 58.93 mas) changes the phase by 2π s/(P · 58.93 mas). The preceding field is
shifted by +ΔΓ/2 and the following by −ΔΓ/2, both by a common mode, so the difference
of the two fields' shifts is ΔΓ.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa

from dpct.mission.constants import DAY_NS, NS_PER_S, NSL_START_OBMT_NS, PIXEL_AL_MAS, UAS
from dpct.mission.schemas import SCHEMAS
from dpct.sim._anomalies import Events, in_intervals
from dpct.sim._config import SimConfig
from dpct.sim._rng import Stream, generator

SLOW_PERIOD_DAYS = 30.0
COMMON_MODE_PERIOD_S = 2.3 * 86_400.0
PIXEL_AL_UAS = PIXEL_AL_MAS * 1e3
_AL_FIRST_PX = 1750
_AC_FIRST_PX = (600, 1300)
_N_AC_BINNED = 80
_ENVELOPE_OFFSET_PX = (3.0, -5.0)


@dataclass(frozen=True)
class BavParts:
    """Components of the true basic-angle variation at some times, µas."""

    harmonic: np.ndarray
    slow: np.ndarray
    jump: np.ndarray
    common: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.harmonic + self.slow + self.jump


class BasicAngle:
    """The true basic-angle variation (drawn once from the seed)."""

    def __init__(self, config: SimConfig) -> None:
        b = config.bam
        rng = generator(config.seed, Stream.INSTRUMENT, 2)
        k = np.arange(1, b.harmonics + 1)
        amp = b.k1_amplitude_uas * b.harmonic_decay ** (k - 1)
        phase = rng.uniform(0, 2 * np.pi, k.size)
        self.cos_uas = amp * np.cos(phase)
        self.sin_uas = amp * np.sin(phase)
        self.rate_uas_per_day = b.drift_uas_per_day
        self.slow_amplitude_uas = b.slow_amplitude_uas
        self.slow_phase = float(rng.uniform(0, 2 * np.pi))
        self.common_mode_uas = b.common_mode_uas
        self.common_phase = float(rng.uniform(0, 2 * np.pi))
        self.fringe_phase0 = rng.uniform(0, 2 * np.pi, 2)

    def parts(self, obmt_ns: np.ndarray, omega: np.ndarray, events: Events) -> BavParts:
        """ΔΓ components at ``obmt_ns`` (inside the interval ``events`` was made for)."""
        t = np.asarray(obmt_ns, dtype=np.int64)
        k = np.arange(1, self.cos_uas.size + 1)
        ko = np.multiply.outer(np.asarray(omega), k)
        harmonic = (np.cos(ko) * self.cos_uas + np.sin(ko) * self.sin_uas).sum(-1)
        days = t / DAY_NS
        slow = self.rate_uas_per_day * (t - NSL_START_OBMT_NS) / DAY_NS + (
            self.slow_amplitude_uas * np.sin(2 * np.pi * days / SLOW_PERIOD_DAYS + self.slow_phase)
        )
        idx = np.searchsorted(events.bav_jump_obmt_ns, t, side="right")
        cum = np.concatenate([[0.0], np.cumsum(events.bav_jump_uas)])
        jump = events.bav_jump_offset_uas + cum[idx]
        common = self.common_mode_uas * np.sin(
            2 * np.pi * (t / NS_PER_S) / COMMON_MODE_PERIOD_S + self.common_phase
        )
        return BavParts(harmonic, slow, jump, common)

    def kernel_params(self, origin_ns: int, events: Events) -> tuple:
        """Argument tuple of :func:`bav_rad` for a grid starting at ``origin_ns``."""
        origin_days = origin_ns / DAY_NS
        slow_phase = math.fmod(
            2 * math.pi * origin_days / SLOW_PERIOD_DAYS + self.slow_phase, 2 * math.pi
        )
        return (
            self.cos_uas * UAS,
            self.sin_uas * UAS,
            self.rate_uas_per_day * UAS / 86_400.0,
            (NSL_START_OBMT_NS - origin_ns) / NS_PER_S,
            self.slow_amplitude_uas * UAS,
            2 * math.pi / (SLOW_PERIOD_DAYS * 86_400.0),
            slow_phase,
            (events.bav_jump_obmt_ns - origin_ns) / NS_PER_S,
            np.asarray(events.bav_jump_uas, dtype=np.float64) * UAS,
            events.bav_jump_offset_uas * UAS,
        )


@numba.njit(cache=True)
def bav_rad(t_rel: float, omega: float, p: tuple) -> float:
    """Numba twin of :meth:`BasicAngle.parts` (total ΔΓ, rad); ``t_rel`` s from the origin."""
    cos_k, sin_k, rate, t_nsl, slow_amp, slow_w, slow_phase, jump_t, jump_a, offset = p
    c1 = math.cos(omega)
    s1 = math.sin(omega)
    ck = c1
    sk = s1
    val = 0.0
    for k in range(cos_k.size):
        val += cos_k[k] * ck + sin_k[k] * sk
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
    val += rate * (t_rel - t_nsl) + slow_amp * math.sin(slow_w * t_rel + slow_phase)
    val += offset
    for j in range(jump_t.size):
        if jump_t[j] <= t_rel:
            val += jump_a[j]
    return val


@numba.njit(cache=True)
def _fringes(
    rng: np.random.Generator,
    phase: np.ndarray,
    period: np.ndarray,
    vis: np.ndarray,
    envelope: np.ndarray,
    fov: np.ndarray,
    bkg: float,
    ron: float,
    out: np.ndarray,
) -> None:
    # cos(w(x − x_c) − φ) by a rotating phasor: two multiplications per sample, with an
    # accumulated rounding error < 10⁻¹³ over 4500 samples.
    n = envelope.shape[1]
    xc = 0.5 * (n - 1)
    for r in range(phase.size):
        w = 2.0 * math.pi / period[r]
        arg = -w * xc - phase[r]
        c = math.cos(arg)
        s = math.sin(arg)
        dc = math.cos(w)
        ds = math.sin(w)
        env = envelope[fov[r]]
        v = vis[r]
        for x in range(n):
            lam = bkg + env[x] * (1.0 + v * c)
            out[r * n + x] = rng.poisson(lam) + rng.normal(0.0, ron)
            c, s = c * dc - s * ds, s * dc + c * ds


def bam_products(
    config: SimConfig,
    basic_angle: BasicAngle,
    omega_of: Callable[[np.ndarray], np.ndarray],
    events: Events,
    chunk_index: int,
    start_ns: int,
    stop_ns: int,
) -> tuple[pa.Table, pa.Table]:
    """BAM images (telemetry) and their truth for one chunk.

    Parameters
    ----------
    omega_of
        Callable giving the heliotropic spin phase (rad) at OBMT ns.
    """
    b = config.bam
    period_ns = round(DAY_NS / (b.images_per_day * config.scale))
    k0 = -(-start_ns // period_ns)
    k1 = -(-stop_ns // period_ns)
    ids = np.arange(k0, k1, dtype=np.int64)
    t = ids * period_ns
    keep = ~in_intervals(t, events.gap_start_ns, events.gap_stop_ns)
    ids, t = ids[keep], t[keep]
    n_img = ids.size
    parts = basic_angle.parts(t, omega_of(t), events) if n_img else None
    fov = np.tile(np.array([0, 1], dtype=np.int8), n_img)
    rows_t = np.repeat(t, 2)
    rows_id = np.repeat(ids, 2)
    sign = np.where(fov == 0, 0.5, -0.5)
    if parts is None:
        bav = harmonic = slow = jump = common = np.zeros(0)
    else:
        bav = np.repeat(parts.total, 2)
        harmonic = np.repeat(parts.harmonic, 2)
        slow = np.repeat(parts.slow, 2)
        jump = np.repeat(parts.jump, 2)
        common = np.repeat(parts.common, 2)
    shift = sign * bav + common
    years = (rows_t - NSL_START_OBMT_NS) / DAY_NS / 365.25
    period = np.asarray(b.fringe_period_px)[fov] * (1 + 1e-6 * years)
    vis = np.asarray(b.visibility)[fov] * (1 - 0.01 * years)
    phase = basic_angle.fringe_phase0[fov] + 2 * np.pi * shift / (period * PIXEL_AL_UAS)
    env_c = 0.5 * (b.samples - 1) + np.asarray(_ENVELOPE_OFFSET_PX)[fov]
    samples = np.empty(2 * n_img * b.samples, dtype=np.float64)
    x = np.arange(b.samples)
    centres = 0.5 * (b.samples - 1) + np.asarray(_ENVELOPE_OFFSET_PX)
    envelope = b.peak_e * np.exp(-0.5 * ((x - centres[:, None]) / b.envelope_sigma_px) ** 2)
    rng = generator(config.seed, Stream.BAM_NOISE, chunk_index)
    _fringes(rng, phase, period, vis, envelope, fov, b.background_e, b.ron_e, samples)
    offsets = (np.arange(2 * n_img + 1) * b.samples).astype(np.int32)
    values = pa.array(samples.astype(np.float32))
    n_rows = 2 * n_img
    tel = pa.Table.from_arrays(
        [
            pa.array(rows_id),
            pa.array(rows_t),
            pa.array(fov),
            pa.array(np.full(n_rows, _AL_FIRST_PX, np.int16)),
            pa.array(np.asarray(_AC_FIRST_PX, np.int16)[fov]),
            pa.array(np.full(n_rows, _N_AC_BINNED, np.int16)),
            pa.array(np.full(n_rows, b.ron_e, np.float32)),
            pa.ListArray.from_arrays(pa.array(offsets), values),
        ],
        schema=SCHEMAS["bam_images"],
    )
    truth = pa.Table.from_arrays(
        [
            pa.array(rows_id),
            pa.array(rows_t),
            pa.array(fov),
            pa.array(np.mod(phase, 2 * np.pi)),
            pa.array(period),
            pa.array(vis),
            pa.array(np.full(n_rows, b.peak_e)),
            pa.array(np.full(n_rows, b.background_e)),
            pa.array(env_c),
            pa.array(np.full(n_rows, b.envelope_sigma_px)),
            pa.array(shift),
            pa.array(bav),
            pa.array(harmonic),
            pa.array(slow),
            pa.array(jump),
            pa.array(common),
        ],
        schema=SCHEMAS["bam_truth"],
    )
    return tel, truth
