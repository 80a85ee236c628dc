"""Gaia-like mission simulator with truth: telemetry chunks for the AIM, BAM and GSR pipelines.

Deterministic from a seed, streamed in chunks on a fixed OBMT grid. Each chunk carries
telemetry tables (AF windows, BAM images, GSR observations, HK, data qualifiers) and,
kept apart, truth tables; every table has an explicit Arrow schema (:data:`SCHEMAS`).
See ``docs/simulator.md`` for the models, formats and figures.

Examples
--------
>>> from dpct.sim import SimConfig, simulate, mission_day
>>> for chunk in simulate(SimConfig(seed=7, scale=0.01), mission_day(700)):
...     windows = chunk.products["af_windows"]  # doctest: +SKIP
"""

from dpct.mission.constants import DAY_NS, PIXEL_AL_MAS, REV_NS, TDI_PERIOD_NS
from dpct.mission.focalplane import AF_CCDS, INSTRUMENT_TERMS, STRIP_ETA_RAD
from dpct.mission.schemas import SCHEMAS, STATIC_TABLES, TELEMETRY_TABLES, TRUTH_TABLES
from dpct.mission.time import obmt_to_time, time_to_obmt
from dpct.sim._anomalies import (
    BackgroundJump,
    BamJump,
    LsfBroadening,
    TelemetryGap,
    ThermalEvent,
)
from dpct.sim._catalogue import (
    catalogue_path,
    generate_catalogue,
    read_catalogue,
    reference_catalogue,
    write_catalogue,
)
from dpct.sim._config import (
    PRODUCTS,
    AfConfig,
    BamConfig,
    CatalogueConfig,
    GsrConfig,
    HkConfig,
    QualityConfig,
    ScanLawConfig,
    SimConfig,
)
from dpct.sim._lsf import (
    LsfParams,
    cramer_rao_centroid,
    lsf_sampled,
    lsf_sampled_derivative,
)
from dpct.sim._simulator import SimChunk, Simulator, Span, mission_day, simulate

__all__ = [
    "AF_CCDS",
    "DAY_NS",
    "INSTRUMENT_TERMS",
    "PIXEL_AL_MAS",
    "PRODUCTS",
    "REV_NS",
    "SCHEMAS",
    "STATIC_TABLES",
    "STRIP_ETA_RAD",
    "TDI_PERIOD_NS",
    "TELEMETRY_TABLES",
    "TRUTH_TABLES",
    "AfConfig",
    "BackgroundJump",
    "BamConfig",
    "BamJump",
    "CatalogueConfig",
    "GsrConfig",
    "HkConfig",
    "LsfBroadening",
    "LsfParams",
    "QualityConfig",
    "ScanLawConfig",
    "SimChunk",
    "SimConfig",
    "Simulator",
    "Span",
    "TelemetryGap",
    "ThermalEvent",
    "catalogue_path",
    "cramer_rao_centroid",
    "generate_catalogue",
    "lsf_sampled",
    "lsf_sampled_derivative",
    "mission_day",
    "obmt_to_time",
    "read_catalogue",
    "reference_catalogue",
    "simulate",
    "time_to_obmt",
    "write_catalogue",
]
