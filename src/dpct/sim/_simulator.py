"""The simulator: chunks of telemetry with their truth, on a fixed OBMT chunk grid.

Chunk k covers OBMT [k·chunk_ns, (k + 1)·chunk_ns). Everything random in it comes from
seed streams keyed by k (noise), by sky pixel (stars), by day (events) or by coefficient
block (attitude), so a chunk is the same whether it is simulated alone, in a span, or in
a worker process.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dpct.mission.constants import (
    BASIC_ANGLE_DEG,
    DAY_NS,
    NS_PER_S,
    NSL_START_OBMT_NS,
    PIXEL_AC_MAS,
    PIXEL_AL_MAS,
    ROW_PITCH_ARCSEC,
    SOLAR_ASPECT_DEG,
    SPIN_RATE_ARCSEC_S,
    TDI_PERIOD_NS,
    UAS,
)
from dpct.mission.focalplane import (
    INSTRUMENT_TERMS,
    N_AF_CCDS,
    STRIP_PITCH_RAD,
)
from dpct.mission.schemas import SCHEMAS
from dpct.sim._af import make_af_windows
from dpct.sim._anomalies import (
    BackgroundJump,
    BamJump,
    Events,
    LsfBroadening,
    TelemetryGap,
    ThermalEvent,
    collect_events,
)
from dpct.sim._bam import COMMON_MODE_PERIOD_S, SLOW_PERIOD_DAYS, BasicAngle, bam_products
from dpct.sim._catalogue import reference_catalogue, stars_table
from dpct.sim._config import SimConfig
from dpct.sim._gsr import gsr_rows
from dpct.sim._hk import dq_table, hk_table
from dpct.sim._lsf import LsfModel, LsfParams
from dpct.sim._rng import Stream, generator
from dpct.sim._scanlaw import (
    AttitudeGrid,
    ScanLaw,
    attitude_many,
    matrix_to_quaternion,
    spin_phase_many,
)
from dpct.sim._transits import find_transits

_GRID_PAD_NS = 180 * NS_PER_S
ATTITUDE_SAMPLE_NS = 10 * NS_PER_S


@dataclass(frozen=True)
class Span:
    """A half-open OBMT interval ``[start_obmt_ns, stop_obmt_ns)``."""

    start_obmt_ns: int
    stop_obmt_ns: int

    def __post_init__(self) -> None:
        if self.stop_obmt_ns <= self.start_obmt_ns:
            raise ValueError(
                f"span stop {self.stop_obmt_ns} must be after start {self.start_obmt_ns} (ns)"
            )


def mission_day(day: int) -> Span:
    """The OBMT day ``[day·86400 s, (day + 1)·86400 s)``.

    OBMT day 700 is around 2015-09-28; the nominal scanning law starts on OBMT day 269.
    """
    return Span(day * DAY_NS, (day + 1) * DAY_NS)


@dataclass(frozen=True)
class SimChunk:
    """One chunk: telemetry tables by product type and truth tables by name.

    Attributes
    ----------
    index
        Chunk index on the global grid.
    start_obmt_ns, stop_obmt_ns
        Interval covered (clipped to the requested span).
    products
        Telemetry: af_windows, bam_images, gsr_observations, hk, data_qualifiers (only
        those configured).
    truth
        af_truth, bam_truth, stars, attitude, gsr_attitude, bav_jumps, thermal_events.
    """

    index: int
    start_obmt_ns: int
    stop_obmt_ns: int
    products: dict[str, pa.Table] = field(default_factory=dict)
    truth: dict[str, pa.Table] = field(default_factory=dict)


class Simulator:
    """A Gaia-like mission simulator with truth.

    Parameters
    ----------
    config
        The simulation configuration.

    Examples
    --------
    >>> sim = Simulator(SimConfig(seed=1, scale=0.001))
    >>> chunk = sim.chunk(sim.chunk_indices(mission_day(700))[0])
    >>> sorted(chunk.products)
    ['af_windows', 'bam_images', 'data_qualifiers', 'gsr_observations', 'hk']
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.scanlaw = ScanLaw(config)
        self.lsf_model = LsfModel(config)
        self.basic_angle = BasicAngle(config)
        self.calibration = geometric_calibration(config.seed, config.gsr.instrument_rms_uas)

    # -- chunks ---------------------------------------------------------------------------
    def chunk_indices(self, span: Span) -> range:
        """Indices of the grid chunks overlapping ``span``."""
        c = self.config.chunk_ns
        return range(span.start_obmt_ns // c, -(-span.stop_obmt_ns // c))

    def chunk(self, index: int) -> SimChunk:
        """Simulate grid chunk ``index`` (reproducible on its own)."""
        cfg = self.config
        start = index * cfg.chunk_ns
        stop = start + cfg.chunk_ns
        events = collect_events(cfg.event_rates, cfg.anomalies, start, stop)
        grid = self.scanlaw.grid(start - _GRID_PAD_NS, stop + _GRID_PAD_NS)
        products: dict[str, pa.Table] = {}
        truth: dict[str, pa.Table] = {}
        want = set(cfg.products)
        if "af_windows" in want:
            bav = self.basic_angle.kernel_params(grid.origin_ns, events)
            stars, transits = find_transits(cfg, grid, bav, self.calibration, start, stop)
            win = make_af_windows(
                cfg, self.lsf_model, stars, transits, grid.origin_ns, events, index, start, stop
            )
            products["af_windows"] = win.telemetry
            truth["af_truth"] = win.truth
            used = np.unique(win.star)
            truth["stars"] = stars_table({k: v[used] for k, v in stars.items()}, "stars")
            if "gsr_observations" in want:
                products["gsr_observations"], truth["gsr_attitude"] = gsr_rows(
                    cfg, stars, win, grid, self.calibration, index
                )
                observed = products["gsr_observations"].column("source_id")
                in_rows = pc.is_in(truth["stars"].column("source_id"), value_set=observed)
                products["gsr_reference_catalogue"] = reference_catalogue(
                    truth["stars"].filter(in_rows)
                )

        def omega_of(t: np.ndarray) -> np.ndarray:
            out = np.empty(t.size)
            spin_phase_many(grid.t_rel(t), grid.as_tuple(), out)
            return out

        if "bam_images" in want:
            products["bam_images"], truth["bam_truth"] = bam_products(
                cfg, self.basic_angle, omega_of, events, index, start, stop
            )
        if "hk" in want:
            products["hk"] = hk_table(cfg, omega_of, events, index, start, stop)
        if "data_qualifiers" in want:
            products["data_qualifiers"] = dq_table(events, start, stop)
        truth["attitude"] = self._attitude_table(grid, start, stop, events)
        truth["bav_jumps"] = pa.Table.from_pydict(
            {
                "obmt_ns": events.bav_jump_obmt_ns,
                "amplitude_uas": events.bav_jump_uas,
                "source": events.bav_jump_source,
            },
            schema=SCHEMAS["bav_jumps"],
        )
        inside = (events.thermal_obmt_ns >= start) & (events.thermal_obmt_ns < stop)
        truth["thermal_events"] = pa.Table.from_pydict(
            {
                "obmt_ns": events.thermal_obmt_ns[inside],
                "amplitude_k": events.thermal_amplitude_k[inside],
                "tau_s": events.thermal_tau_s[inside],
                "bav_jump_uas": events.thermal_bav_jump_uas[inside],
                "source": [s for s, k in zip(events.thermal_source, inside, strict=True) if k],
            },
            schema=SCHEMAS["thermal_events"],
        )
        return SimChunk(index, start, stop, products, truth)

    def chunks(self, span: Span, *, workers: int = 1) -> Iterator[SimChunk]:
        """Simulate ``span`` chunk by chunk, in time order.

        Parameters
        ----------
        span
            OBMT interval; chunks at its ends are clipped to it.
        workers
            Worker processes (each chunk is independent, so results do not depend on
            this). At most ``workers + 1`` chunks are in flight, so memory stays bounded.
        """
        indices = self.chunk_indices(span)
        if workers <= 1:
            for k in indices:
                yield _clip(self.chunk(k), span)
            return
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(self.config,)
        ) as pool:
            pending: deque = deque()
            it = iter(indices)
            for k in it:
                pending.append(pool.submit(_worker_chunk, k))
                if len(pending) >= workers + 1:
                    break
            while pending:
                chunk = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(_worker_chunk, nxt))
                yield _clip(chunk, span)

    # -- truth evaluators ----------------------------------------------------------------
    def spin_phase_rad(self, obmt_ns: np.ndarray) -> np.ndarray:
        """Heliotropic spin phase Ω (rad, [0, 2π)) of the nominal scanning law."""
        return self.scanlaw.nominal.angles(np.asarray(obmt_ns, dtype=np.int64))["omega"]

    def attitude(self, obmt_ns: np.ndarray) -> dict[str, np.ndarray]:
        """Attitude quaternions (n, 4), scalar last, rotating ICRS into SRS coordinates.

        Returns
        -------
        dict
            ``true``, ``reference`` (nominal ∘ wobble) and ``nominal`` quaternions, and the
            matrices ``true_matrix`` etc. (n, 3, 3) with rows the SRS axes in ICRS.
        """
        m = self.scanlaw.matrices(obmt_ns)
        out = {}
        for k in ("true", "reference", "nominal"):
            out[k] = matrix_to_quaternion(m[k])
            out[f"{k}_matrix"] = m[k]
        return out

    def bav_uas(self, obmt_ns: np.ndarray) -> np.ndarray:
        """True basic-angle variation ΔΓ at ``obmt_ns`` (µas)."""
        t = np.atleast_1d(np.asarray(obmt_ns, dtype=np.int64))
        cfg = self.config
        events = collect_events(cfg.event_rates, cfg.anomalies, int(t.min()), int(t.max()) + 1)
        return self.basic_angle.parts(t, self.spin_phase_rad(t), events).total

    def lsf_params(
        self, ccd_index: np.ndarray, bp_rp_mag: np.ndarray, obmt_ns: np.ndarray
    ) -> LsfParams:
        """True LSF parameters of AF CCD(s), colour(s) and time(s)."""
        return self.lsf_model.params(ccd_index, bp_rp_mag, obmt_ns)

    def lsf_true(
        self, x_px: np.ndarray, ccd_index: int, bp_rp_mag: float, obmt_ns: int
    ) -> np.ndarray:
        """True sampled LSF P(x) (fraction of the flux in a sample x px from the centroid)."""
        return self.lsf_model.lsf(x_px, ccd_index, bp_rp_mag, obmt_ns)

    def static_truth(self) -> dict[str, pa.Table]:
        """Truth that does not change with time: scanning law, LSF per CCD, GSR instrument
        and global parameters, basic-angle model, injected anomalies."""
        cfg = self.config
        sl = self.scanlaw
        tables: dict[str, pa.Table] = {}
        tables["scanlaw"] = pa.Table.from_pylist(
            [
                {
                    "solar_aspect_deg": SOLAR_ASPECT_DEG,
                    "precession_speed": sl.nominal.speed_s,
                    "spin_rate_arcsec_s": SPIN_RATE_ARCSEC_S,
                    "basic_angle_deg": BASIC_ANGLE_DEG,
                    "nsl_start_obmt_ns": NSL_START_OBMT_NS,
                    "precession_phase_ref_rad": sl.nominal.nu_ref,
                    "spin_phase_ref_rad": sl.nominal.omega_ref,
                    "tdi_period_ns": TDI_PERIOD_NS,
                    "pixel_al_mas": PIXEL_AL_MAS,
                    "pixel_ac_mas": PIXEL_AC_MAS,
                    "attitude_knot_ns": sl.knot_ns,
                    "strip_pitch_mas": STRIP_PITCH_RAD / UAS / 1e3,
                    "row_pitch_mas": ROW_PITCH_ARCSEC * 1e3,
                }
            ],
            schema=SCHEMAS["scanlaw"],
        )
        cols = self.lsf_model.ccd_table_columns()
        cols["ron_e"] = np.where(cols["ccd_strip"] == 1, cfg.af.ron_af1_e, cfg.af.ron_e)
        tables["lsf_ccd"] = pa.Table.from_pydict(
            {k: pa.array(v, type=SCHEMAS["lsf_ccd"].field(k).type) for k, v in cols.items()},
            schema=SCHEMAS["lsf_ccd"],
        )
        n_terms = len(INSTRUMENT_TERMS)
        term, fov, ccd = np.meshgrid(
            np.arange(n_terms), np.arange(2), np.arange(N_AF_CCDS), indexing="ij"
        )
        term, fov, ccd = term.ravel(), fov.ravel(), ccd.ravel()
        tables["gsr_instrument"] = pa.Table.from_pydict(
            {
                "column": pa.array(term * 2 * N_AF_CCDS + fov * N_AF_CCDS + ccd, pa.int32()),
                "term": [INSTRUMENT_TERMS[k] for k in term],
                "fov": pa.array(fov, pa.int8()),
                "ccd_index": pa.array(ccd, pa.int16()),
                "value_uas": self.calibration[fov, ccd, term] / UAS,
            },
            schema=SCHEMAS["gsr_instrument"],
        )
        tables["gsr_global"] = pa.Table.from_pydict(
            {"name": ["gamma_minus_one"], "value": [cfg.gsr.gamma_minus_one]},
            schema=SCHEMAS["gsr_global"],
        )
        ba = self.basic_angle
        k = np.arange(ba.cos_uas.size + 1)
        tables["bav_model"] = pa.Table.from_pydict(
            {
                "k": pa.array(k, pa.int16()),
                "cos_uas": np.concatenate([[0.0], ba.cos_uas]),
                "sin_uas": np.concatenate([[0.0], ba.sin_uas]),
            },
            schema=SCHEMAS["bav_model"],
        )
        tables["bav_drift"] = pa.Table.from_pylist(
            [
                {
                    "rate_uas_per_day": ba.rate_uas_per_day,
                    "slow_amplitude_uas": ba.slow_amplitude_uas,
                    "slow_period_days": SLOW_PERIOD_DAYS,
                    "slow_phase_rad": ba.slow_phase,
                    "common_mode_uas": ba.common_mode_uas,
                    "common_mode_period_s": COMMON_MODE_PERIOD_S,
                }
            ],
            schema=SCHEMAS["bav_drift"],
        )
        rows = []
        for a in cfg.anomalies:
            row = {"start_obmt_ns": 0, "stop_obmt_ns": -1, "ccd_index": -1, "fov": -1}
            if isinstance(a, BackgroundJump):
                row |= {
                    "start_obmt_ns": a.start_obmt_ns,
                    "ccd_index": a.ccd_index,
                    "fov": -1 if a.fov is None else a.fov,
                    "value": a.delta_e,
                }
            elif isinstance(a, LsfBroadening):
                row |= {
                    "start_obmt_ns": a.start_obmt_ns,
                    "value": a.rate_per_day,
                    "ccd_index": -1 if a.ccd_index is None else a.ccd_index,
                }
            elif isinstance(a, BamJump):
                row |= {"start_obmt_ns": a.obmt_ns, "value": a.amplitude_uas}
            elif isinstance(a, ThermalEvent):
                row |= {"start_obmt_ns": a.obmt_ns, "value": a.amplitude_k}
            elif isinstance(a, TelemetryGap):
                row |= {
                    "start_obmt_ns": a.start_obmt_ns,
                    "stop_obmt_ns": a.stop_obmt_ns,
                    "value": 0.0,
                }
            rows.append({"kind": a.kind, **row})
        tables["anomalies"] = pa.Table.from_pylist(rows, schema=SCHEMAS["anomalies"])
        return tables

    # -- helpers ---------------------------------------------------------------------------
    def _attitude_table(
        self, grid: AttitudeGrid, start: int, stop: int, events: Events
    ) -> pa.Table:
        t = np.arange(-(-start // ATTITUDE_SAMPLE_NS), -(-stop // ATTITUDE_SAMPLE_NS)) * (
            ATTITUDE_SAMPLE_NS
        )
        mats = np.empty((3, t.size, 3, 3))
        attitude_many(grid.t_rel(t), grid.as_tuple(), mats, np.empty(t.size))
        ang = self.scanlaw.nominal.angles(t)
        bav = self.basic_angle.parts(t, ang["omega"], events).total
        q = [matrix_to_quaternion(mats[i]) for i in (2, 1, 0)]
        cols = {"obmt_ns": t}
        for name, qq in zip(("true", "ref", "nominal"), q, strict=True):
            for i, c in enumerate("xyzw"):
                cols[f"{name}_q{c}"] = qq[:, i]
        cols |= {
            "sun_longitude_rad": ang["lam"],
            "precession_phase_rad": ang["nu"],
            "spin_phase_rad": ang["omega"],
            "bav_uas": bav,
        }
        return pa.Table.from_pydict(cols, schema=SCHEMAS["attitude"])


def simulate(config: SimConfig, span: Span, *, workers: int = 1) -> Iterator[SimChunk]:
    """Simulate ``span`` and yield its chunks in time order.

    Parameters
    ----------
    config
        Simulation configuration (deterministic from ``config.seed``).
    span
        OBMT interval, e.g. :func:`mission_day`.
    workers
        Worker processes.

    Returns
    -------
    Iterator[SimChunk]
        One chunk per ``config.chunk_s`` of OBMT.
    """
    return Simulator(config).chunks(span, workers=workers)


# -- span clipping and worker processes ---------------------------------------------------

_TIME_COLUMN = {
    "af_windows": "obmt_ns",
    "af_truth": "obmt_ns",
    "bam_images": "obmt_ns",
    "bam_truth": "obmt_ns",
    "hk": "obmt_ns",
    "attitude": "obmt_ns",
    "bav_jumps": "obmt_ns",
    "thermal_events": "obmt_ns",
}


def _clip(chunk: SimChunk, span: Span) -> SimChunk:
    lo = max(chunk.start_obmt_ns, span.start_obmt_ns)
    hi = min(chunk.stop_obmt_ns, span.stop_obmt_ns)
    if (lo, hi) == (chunk.start_obmt_ns, chunk.stop_obmt_ns):
        return chunk

    def cut(name: str, table: pa.Table) -> pa.Table:
        col = _TIME_COLUMN.get(name)
        if col is not None:
            t = table.column(col)
            return table.filter(pc.and_(pc.greater_equal(t, lo), pc.less(t, hi)))
        if name == "data_qualifiers":
            keep = pc.and_(
                pc.greater(table.column("stop_obmt_ns"), lo),
                pc.less(table.column("start_obmt_ns"), hi),
            )
            t = table.filter(keep)
            start = pc.max_element_wise(t.column("start_obmt_ns"), pa.scalar(lo, pa.int64()))
            stop = pc.min_element_wise(t.column("stop_obmt_ns"), pa.scalar(hi, pa.int64()))
            t = t.set_column(1, t.schema.field(1), start)
            return t.set_column(2, t.schema.field(2), stop)
        return table

    products = {k: cut(k, v) for k, v in chunk.products.items()}
    truth = {k: cut(k, v) for k, v in chunk.truth.items()}
    if "af_windows" in products:
        ids = products["af_windows"].column("window_id")
        if "gsr_observations" in products:
            g = products["gsr_observations"]
            products["gsr_observations"] = g.filter(pc.is_in(g.column("obs_id"), ids))
        src = products["af_windows"].column("source_id")
        truth["stars"] = truth["stars"].filter(pc.is_in(truth["stars"].column("source_id"), src))
    return SimChunk(chunk.index, lo, hi, products, truth)


_WORKER_SIM: Simulator | None = None


def _init_worker(config: SimConfig) -> None:
    global _WORKER_SIM
    _WORKER_SIM = Simulator(config)


def _worker_chunk(index: int) -> SimChunk:
    assert _WORKER_SIM is not None
    return _WORKER_SIM.chunk(index)


def geometric_calibration(seed: int, rms_uas: tuple[float, ...]) -> np.ndarray:
    """True AL calibration terms per (FoV, CCD), shape (2, 62, 6), rad."""
    rng = generator(seed, Stream.INSTRUMENT, 3)
    return rng.standard_normal((2, N_AF_CCDS, len(INSTRUMENT_TERMS))) * np.asarray(rms_uas) * UAS
