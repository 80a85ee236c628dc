"""Housekeeping samples and data qualifiers.

HK parameters (every ``hk.period_s``): temperatures with slow drifts, a spin-synchronous
6-h term (the same solar heating that drives the basic-angle variation) and thermal
events — a step of the event's amplitude relaxing as exp(−Δt/τ) (payload ×1, BAM bench
×0.5, FPA ×0.1) — and voltages with small ripples; all with Gaussian sensor noise.
Data qualifiers list the bad intervals per AF CCD and FoV (clipped to the chunk, with a
stable ``dq_id``) and the telemetry gaps (instrument ``ALL``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from dpct.mission.constants import DAY_NS, NS_PER_S, NSL_START_OBMT_NS
from dpct.mission.schemas import SCHEMAS
from dpct.sim._anomalies import Events, in_intervals
from dpct.sim._config import SimConfig
from dpct.sim._rng import Stream, generator


def hk_table(
    config: SimConfig,
    omega_of: Callable[[np.ndarray], np.ndarray],
    events: Events,
    chunk_index: int,
    start_ns: int,
    stop_ns: int,
) -> pa.Table:
    """HK samples of one chunk (none inside telemetry gaps)."""
    period = round(config.hk.period_s * NS_PER_S)
    t = np.arange(-(-start_ns // period), -(-stop_ns // period), dtype=np.int64) * period
    t = t[~in_intervals(t, events.gap_start_ns, events.gap_stop_ns)]
    n = t.size
    rng = generator(config.seed, Stream.HK_NOISE, chunk_index)
    days = (t - NSL_START_OBMT_NS) / DAY_NS
    om = omega_of(t) if n else np.zeros(0)
    thermal = np.zeros(n)
    for te, amp, tau in zip(
        events.thermal_obmt_ns, events.thermal_amplitude_k, events.thermal_tau_s, strict=True
    ):
        dt = (t - te) / NS_PER_S
        thermal += np.where(dt >= 0, amp * np.exp(-np.maximum(dt, 0) / tau), 0.0)
    day_phase = 2 * np.pi * (t / DAY_NS)
    cols = [
        t,
        163.0 + 1e-3 * days + 3e-3 * np.sin(om) + 0.1 * thermal + 5e-4 * rng.standard_normal(n),
        124.0 + 5e-4 * days + 0.02 * np.sin(om + 0.3) + thermal + 1e-3 * rng.standard_normal(n),
        121.5 + 0.01 * np.sin(om + 0.5) + 0.5 * thermal + 5e-4 * rng.standard_normal(n),
        28.0 + 0.05 * np.sin(day_phase) + 0.01 * rng.standard_normal(n),
        10.5 + 1e-5 * days + 2e-3 * rng.standard_normal(n),
    ]
    return pa.Table.from_arrays([pa.array(c) for c in cols], schema=SCHEMAS["hk"])


def dq_table(events: Events, start_ns: int, stop_ns: int) -> pa.Table:
    """Data qualifiers overlapping the chunk, clipped to it."""
    n_dq = events.dq_id.size
    n_gap = events.gap_start_ns.size
    start = np.concatenate([events.dq_start_ns, events.gap_start_ns])
    stop = np.concatenate([events.dq_stop_ns, events.gap_stop_ns])
    order = np.argsort(start, kind="stable")
    cols = {
        "dq_id": np.concatenate([events.dq_id, events.gap_start_ns])[order],
        "start_obmt_ns": np.maximum(start, start_ns)[order],
        "stop_obmt_ns": np.minimum(stop, stop_ns)[order],
        "instrument": np.array(["AF"] * n_dq + ["ALL"] * n_gap, dtype=object)[order],
        "fov": np.concatenate([events.dq_fov, np.full(n_gap, -1)]).astype(np.int8)[order],
        "ccd_index": np.concatenate([events.dq_ccd_index, np.full(n_gap, -1)]).astype(np.int16)[
            order
        ],
        "reason": np.array(events.dq_reason + ["telemetry_gap"] * n_gap, dtype=object)[order],
    }
    return pa.Table.from_pydict(
        {k: pa.array(v, type=SCHEMAS["data_qualifiers"].field(k).type) for k, v in cols.items()},
        schema=SCHEMAS["data_qualifiers"],
    )
