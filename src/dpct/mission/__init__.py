"""What the DPC knows of the mission itself: the interface between telemetry and science.

Mission constants, the OBMT clock, the nominal scanning law, the focal-plane geometry
and the Arrow schemas of the telemetry tables (registered as data types by
:mod:`dpct.mission.datatypes`). The simulator writes telemetry to this interface and the
pipelines read it; neither imports the other, and this package imports neither.
"""

from dpct.mission.constants import DAY_NS, PIXEL_AL_MAS, REV_NS, TDI_PERIOD_NS
from dpct.mission.focalplane import AF_CCDS, INSTRUMENT_TERMS, STRIP_ETA_RAD
from dpct.mission.scanlaw import NominalScanLaw, heliotropic_frame, sun
from dpct.mission.schemas import (
    SCHEMA_VERSION,
    SCHEMAS,
    STATIC_TABLES,
    TELEMETRY_TABLES,
    TRUTH_TABLES,
)
from dpct.mission.time import obmt_to_time, time_to_obmt

__all__ = [
    "AF_CCDS",
    "DAY_NS",
    "INSTRUMENT_TERMS",
    "PIXEL_AL_MAS",
    "REV_NS",
    "SCHEMAS",
    "SCHEMA_VERSION",
    "STATIC_TABLES",
    "STRIP_ETA_RAD",
    "TDI_PERIOD_NS",
    "TELEMETRY_TABLES",
    "TRUTH_TABLES",
    "NominalScanLaw",
    "heliotropic_frame",
    "obmt_to_time",
    "sun",
    "time_to_obmt",
]
