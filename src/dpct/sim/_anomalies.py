"""Injectable anomalies and the random mission events (jumps, thermal events, bad intervals).

Anomalies are declared in the configuration (pydantic models with a ``kind`` tag) and
applied by the product modules; random events are drawn per OBMT day from their own seed
stream, so every chunk sees the same events whatever span is simulated.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dpct.mission.constants import DAY_NS, NS_PER_S
from dpct.sim._rng import Stream, generator


class _Anomaly(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BackgroundJump(_Anomaly):
    """A CCD's sky background jumps by ``delta_e`` electrons per AF sample from ``start``."""

    kind: Literal["background_jump"] = "background_jump"
    ccd_index: int = Field(ge=0, le=61)
    start_obmt_ns: int
    delta_e: float
    fov: int | None = Field(default=None, ge=0, le=1, description="None: both FoVs")


class LsfBroadening(_Anomaly):
    """The true LSF widths grow by ``rate_per_day`` (relative) per day after ``start``."""

    kind: Literal["lsf_broadening"] = "lsf_broadening"
    start_obmt_ns: int
    rate_per_day: float = Field(gt=-0.5, lt=0.5)
    ccd_index: int | None = Field(default=None, ge=0, le=61, description="None: all CCDs")


class BamJump(_Anomaly):
    """The basic angle jumps by ``amplitude_uas`` at ``obmt_ns``."""

    kind: Literal["bam_jump"] = "bam_jump"
    obmt_ns: int
    amplitude_uas: float


class ThermalEvent(_Anomaly):
    """A thermal event: HK temperatures step and relax; the basic angle jumps."""

    kind: Literal["thermal_event"] = "thermal_event"
    obmt_ns: int
    amplitude_k: float = 0.5
    tau_s: float = Field(default=7200.0, gt=0)
    bav_jump_uas: float = 50.0


class TelemetryGap(_Anomaly):
    """No telemetry at all (AF, BAM, HK) in ``[start, stop)``; listed as a data qualifier."""

    kind: Literal["gap"] = "gap"
    start_obmt_ns: int
    stop_obmt_ns: int

    @model_validator(mode="after")
    def _ordered(self) -> TelemetryGap:
        if self.stop_obmt_ns <= self.start_obmt_ns:
            raise ValueError("gap stop_obmt_ns must be after start_obmt_ns")
        return self


Anomaly = Annotated[
    BackgroundJump | LsfBroadening | BamJump | ThermalEvent | TelemetryGap,
    Field(discriminator="kind"),
]

DQ_REASONS = ("ccd_anomaly", "charge_injection_failure", "readout_glitch")


@dataclass(frozen=True)
class Events:
    """Random and injected events that touch one time interval (arrays sorted by time).

    Attributes
    ----------
    bav_jump_obmt_ns, bav_jump_uas, bav_jump_source
        Basic-angle jumps inside the interval (source: random, thermal, injected).
    bav_jump_offset_uas
        Sum of all basic-angle jumps from the start of the nominal scanning law up to the
        interval start, µas.
    thermal_obmt_ns, thermal_amplitude_k, thermal_tau_s, thermal_source
        Thermal events that can still be felt in the interval (up to 3 days before it).
    dq_*
        Bad intervals (data qualifiers) overlapping the interval, not clipped.
    gap_start_ns, gap_stop_ns
        Telemetry gaps overlapping the interval.
    """

    bav_jump_obmt_ns: np.ndarray
    bav_jump_uas: np.ndarray
    bav_jump_source: list[str]
    bav_jump_offset_uas: float
    thermal_obmt_ns: np.ndarray
    thermal_amplitude_k: np.ndarray
    thermal_tau_s: np.ndarray
    thermal_bav_jump_uas: np.ndarray
    thermal_source: list[str]
    dq_id: np.ndarray
    dq_start_ns: np.ndarray
    dq_stop_ns: np.ndarray
    dq_ccd_index: np.ndarray
    dq_fov: np.ndarray
    dq_reason: list[str]
    gap_start_ns: np.ndarray
    gap_stop_ns: np.ndarray


@dataclass(frozen=True)
class EventRates:
    """Rates of the random events (per day) and their size scales."""

    seed: int
    start_day: int
    bav_jumps_per_day: float
    bav_jump_rms_uas: float
    thermal_events_per_day: float
    thermal_amplitude_k: float
    thermal_tau_s: float
    thermal_bav_jump_rms_uas: float
    dq_intervals_per_day: float
    gaps_per_day: float


@lru_cache(maxsize=4096)
def _day_events(rates: EventRates, day: int) -> dict[str, np.ndarray]:
    """Draw one OBMT day's random events from the day's own seed stream."""
    t0 = day * DAY_NS
    rng = generator(rates.seed, Stream.EVENTS, day)
    n_bav = rng.poisson(rates.bav_jumps_per_day)
    bav_t = t0 + np.sort(rng.integers(0, DAY_NS, n_bav))
    bav_a = rng.normal(0.0, rates.bav_jump_rms_uas, n_bav)
    n_th = rng.poisson(rates.thermal_events_per_day)
    th_t = t0 + np.sort(rng.integers(0, DAY_NS, n_th))
    th_a = rates.thermal_amplitude_k * rng.uniform(0.3, 1.0, n_th) * rng.choice([-1.0, 1.0], n_th)
    th_tau = rates.thermal_tau_s * rng.uniform(0.5, 1.5, n_th)
    th_j = rng.normal(0.0, rates.thermal_bav_jump_rms_uas, n_th)
    n_dq = rng.poisson(rates.dq_intervals_per_day)
    dq_t = t0 + rng.integers(0, DAY_NS, n_dq)
    dq_len = (np.exp(rng.uniform(np.log(60.0), np.log(1800.0), n_dq)) * NS_PER_S).astype(np.int64)
    whole = rng.random(n_dq) < 0.1
    dq_ccd = np.where(whole, -1, rng.integers(0, 62, n_dq))
    dq_fov = rng.integers(-1, 2, n_dq)
    dq_reason = rng.integers(0, len(DQ_REASONS), n_dq)
    n_gap = rng.poisson(rates.gaps_per_day)
    gap_t = t0 + rng.integers(0, DAY_NS, n_gap)
    gap_len = (np.exp(rng.uniform(np.log(60.0), np.log(3600.0), n_gap)) * NS_PER_S).astype(np.int64)
    order = np.argsort(dq_t, kind="stable")
    return {
        "bav_t": bav_t,
        "bav_a": bav_a,
        "th_t": th_t,
        "th_a": th_a,
        "th_tau": th_tau,
        "th_j": th_j,
        "dq_id": day * 1000 + np.arange(n_dq, dtype=np.int64)[order],
        "dq_t": dq_t[order],
        "dq_stop": (dq_t + dq_len)[order],
        "dq_ccd": dq_ccd[order],
        "dq_fov": dq_fov[order],
        "dq_reason": dq_reason[order],
        "gap_t": gap_t,
        "gap_stop": gap_t + gap_len,
    }


@lru_cache(maxsize=256)
def _jump_offset_before_day(rates: EventRates, day: int) -> float:
    """Sum of random and thermal basic-angle jumps on days ``start_day … day − 1``, µas."""
    if day <= rates.start_day:
        return 0.0
    prev = _jump_offset_before_day(rates, day - 1) if day - 1 > rates.start_day else 0.0
    ev = _day_events(rates, day - 1)
    return prev + float(ev["bav_a"].sum() + ev["th_j"].sum())


def collect_events(
    rates: EventRates, anomalies: tuple[object, ...], start_ns: int, stop_ns: int
) -> Events:
    """Gather every event relevant to ``[start_ns, stop_ns)``.

    Parameters
    ----------
    rates
        Random-event rates and seed.
    anomalies
        Injected anomalies from the configuration.
    start_ns, stop_ns
        The interval, OBMT ns.

    Notes
    -----
    Random events start on ``rates.start_day`` (the start of the nominal scanning law);
    the basic-angle jump offset at ``start_ns`` is the sum of every earlier jump, so the
    basic angle is one continuous function of time whatever span is simulated.
    """
    first_day = start_ns // DAY_NS
    last_day = (stop_ns - 1) // DAY_NS
    # Warm the recursive cache one day at a time so that far days do not recurse deeply.
    for d in range(rates.start_day, first_day + 1, 200):
        _jump_offset_before_day(rates, d)
    offset = _jump_offset_before_day(rates, int(first_day))
    days = [d for d in range(int(first_day) - 3, int(last_day) + 1) if d >= rates.start_day]
    evs = [_day_events(rates, d) for d in days]

    def cat(key: str, dtype: type) -> np.ndarray:
        return np.concatenate([e[key] for e in evs]).astype(dtype) if evs else np.zeros(0, dtype)

    # basic-angle jumps: random + thermal + injected
    jt = [cat("bav_t", np.int64), cat("th_t", np.int64)]
    ja = [cat("bav_a", np.float64), cat("th_j", np.float64)]
    js = ["random"] * len(jt[0]) + ["thermal"] * len(jt[1])
    tht, tha, thtau, thj = cat("th_t", np.int64), cat("th_a", float), cat("th_tau", float), ja[1]
    ths = ["random"] * len(tht)
    inj_t, inj_a, inj_src = [], [], []
    inj_th: list[ThermalEvent] = []
    gaps_s, gaps_e = [cat("gap_t", np.int64)], [cat("gap_stop", np.int64)]
    for a in anomalies:
        if isinstance(a, BamJump):
            inj_t.append(a.obmt_ns)
            inj_a.append(a.amplitude_uas)
            inj_src.append("injected")
        elif isinstance(a, ThermalEvent):
            inj_th.append(a)
            inj_t.append(a.obmt_ns)
            inj_a.append(a.bav_jump_uas)
            inj_src.append("injected_thermal")
        elif isinstance(a, TelemetryGap):
            gaps_s.append(np.array([a.start_obmt_ns], np.int64))
            gaps_e.append(np.array([a.stop_obmt_ns], np.int64))
    all_t = np.concatenate([*jt, np.array(inj_t, np.int64)])
    all_a = np.concatenate([*ja, np.array(inj_a, np.float64)])
    all_s = np.array(js + inj_src, dtype=object)
    # Random jumps of earlier days are in `offset` already; add this day's earlier ones and
    # every injected jump before the interval.
    injected = np.isin(all_s, ["injected", "injected_thermal"])
    before = (all_t < start_ns) & (injected | (all_t >= first_day * DAY_NS))
    offset += float(all_a[before].sum())
    inside = (all_t >= start_ns) & (all_t < stop_ns)
    order = np.argsort(all_t[inside], kind="stable")
    if inj_th:
        tht = np.concatenate([tht, np.array([e.obmt_ns for e in inj_th], np.int64)])
        tha = np.concatenate([tha, np.array([e.amplitude_k for e in inj_th])])
        thtau = np.concatenate([thtau, np.array([e.tau_s for e in inj_th])])
        thj = np.concatenate([thj, np.array([e.bav_jump_uas for e in inj_th])])
        ths = ths + ["injected"] * len(inj_th)
    keep_th = tht < stop_ns
    th_order = np.argsort(tht[keep_th], kind="stable")
    dq_s, dq_e = cat("dq_t", np.int64), cat("dq_stop", np.int64)
    dq_keep = (dq_e > start_ns) & (dq_s < stop_ns)
    g_s, g_e = np.concatenate(gaps_s), np.concatenate(gaps_e)
    g_keep = (g_e > start_ns) & (g_s < stop_ns)
    reasons = cat("dq_reason", np.int64)[dq_keep]
    return Events(
        bav_jump_obmt_ns=all_t[inside][order],
        bav_jump_uas=all_a[inside][order],
        bav_jump_source=list(all_s[inside][order]),
        bav_jump_offset_uas=offset,
        thermal_obmt_ns=tht[keep_th][th_order],
        thermal_amplitude_k=tha[keep_th][th_order],
        thermal_tau_s=thtau[keep_th][th_order],
        thermal_bav_jump_uas=thj[keep_th][th_order],
        thermal_source=list(np.array(ths, dtype=object)[keep_th][th_order]),
        dq_id=cat("dq_id", np.int64)[dq_keep],
        dq_start_ns=dq_s[dq_keep],
        dq_stop_ns=dq_e[dq_keep],
        dq_ccd_index=cat("dq_ccd", np.int64)[dq_keep],
        dq_fov=cat("dq_fov", np.int64)[dq_keep],
        dq_reason=[DQ_REASONS[i] for i in reasons],
        gap_start_ns=g_s[g_keep],
        gap_stop_ns=g_e[g_keep],
    )


def in_intervals(t_ns: np.ndarray, start_ns: np.ndarray, stop_ns: np.ndarray) -> np.ndarray:
    """Mask of times inside any ``[start, stop)`` interval (few intervals, many times)."""
    mask = np.zeros(t_ns.shape, dtype=bool)
    for s, e in zip(start_ns, stop_ns, strict=True):
        mask |= (t_ns >= s) & (t_ns < e)
    return mask


def background_delta_e(
    anomalies: tuple[object, ...], t_ns: np.ndarray, ccd_index: np.ndarray, fov: np.ndarray
) -> np.ndarray:
    """Extra background per AF sample from injected background jumps, e⁻."""
    out = np.zeros(t_ns.shape, dtype=np.float64)
    for a in anomalies:
        if isinstance(a, BackgroundJump):
            hit = (ccd_index == a.ccd_index) & (t_ns >= a.start_obmt_ns)
            if a.fov is not None:
                hit &= fov == a.fov
            out[hit] += a.delta_e
    return out


def lsf_broadening_factor(
    anomalies: tuple[object, ...], t_ns: np.ndarray, ccd_index: np.ndarray
) -> np.ndarray:
    """Multiplicative LSF-width factor from injected broadenings (1 where none applies)."""
    out = np.ones(t_ns.shape, dtype=np.float64)
    for a in anomalies:
        if isinstance(a, LsfBroadening):
            hit = t_ns >= a.start_obmt_ns
            if a.ccd_index is not None:
                hit &= ccd_index == a.ccd_index
            days = (t_ns - a.start_obmt_ns) / DAY_NS
            out = np.where(hit, out * (1.0 + a.rate_per_day * days), out)
    return out
