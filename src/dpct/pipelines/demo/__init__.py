"""A tiny three-workflow pipeline that shows the framework end to end on a laptop.

DemoIngestWorkflow makes a day of fake CCD samples (per 6 h × CCD); once the day is
complete a data trigger starts DemoDailyProcessingWorkflow (calibrate each chunk, then
summarise the day), whose summary triggers DemoReportWorkflow. It stands in for the
AIM/BAM chains until those pipelines land.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from dpct.datamodel import DataSpec, data_type
from dpct.tasks import NoData, task

WORKFLOWS = Path(__file__).with_name("workflows")

data_type(
    "demo_raw",
    1,
    [
        ("obmt_ns", "int64", "ns", "sample time (OBMT)"),
        ("ccd", "int16", "", "CCD number"),
        ("flux_e", "float64", "e-", "measured flux"),
    ],
    description="Fake raw CCD samples",
    time_column="obmt_ns",
)
data_type(
    "demo_calibrated",
    1,
    [
        ("obmt_ns", "int64", "ns", "sample time (OBMT)"),
        ("ccd", "int16", "", "CCD number"),
        ("flux_e", "float64", "e-", "background-subtracted, gain-corrected flux"),
    ],
    time_column="obmt_ns",
)
data_type(
    "demo_summary",
    1,
    [
        ("ccd", "int16", "", "CCD number"),
        ("samples", "int64", "", "number of samples"),
        ("mean_flux_e", "float64", "e-", "mean calibrated flux"),
        ("std_flux_e", "float64", "e-", "standard deviation of calibrated flux"),
    ],
)
data_type(
    "demo_report",
    1,
    [
        ("ccd", "int16", "", "CCD number"),
        ("flag", "bool", "", "mean flux outside limits"),
        ("message", "string", "", "what the monitor says"),
    ],
)


class IngestConfig(BaseModel, extra="forbid"):
    samples: int = Field(1000, ge=1)
    seed: int = 1


@task("demo.ingest", outputs={"raw": "demo_raw"}, config=IngestConfig)
def ingest(config: IngestConfig, spec: DataSpec) -> pa.Table:
    """Makes fake samples: a background of 100 e- plus a CCD-dependent signal."""
    rng = np.random.default_rng([config.seed, spec.start_ns, spec.ccd or 0])
    t = np.sort(rng.integers(spec.start_ns, spec.end_ns, config.samples))
    ccd = np.full(config.samples, spec.ccd or 0, dtype=np.int16)
    flux = 100.0 + 10.0 * (spec.ccd or 0) + rng.normal(0.0, 3.0, config.samples)
    return pa.table({"obmt_ns": t, "ccd": ccd, "flux_e": flux})


class CalibrateConfig(BaseModel, extra="forbid"):
    background_e: float = 100.0
    gain: float = 1.0


@task(
    "demo.calibrate",
    inputs={"raw": "demo_raw"},
    outputs={"calibrated": "demo_calibrated"},
    config=CalibrateConfig,
)
def calibrate(raw: pa.Table, config: CalibrateConfig) -> pa.Table:
    """Subtracts the background and applies the gain."""
    if raw.num_rows == 0:
        raise NoData("no raw samples in this chunk")
    flux = pc.multiply(pc.subtract(raw.column("flux_e"), config.background_e), config.gain)
    return raw.set_column(2, "flux_e", flux)


@task(
    "demo.summarise", inputs={"calibrated": "demo_calibrated"}, outputs={"summary": "demo_summary"}
)
def summarise(calibrated: pa.Table) -> pa.Table:
    """Per-CCD statistics of a day."""
    if calibrated.num_rows == 0:
        raise NoData("no calibrated samples for this day")
    grouped = calibrated.group_by("ccd").aggregate(
        [("flux_e", "count"), ("flux_e", "mean"), ("flux_e", "stddev")]
    )
    return pa.table(
        {
            "ccd": grouped.column("ccd"),
            "samples": grouped.column("flux_e_count"),
            "mean_flux_e": grouped.column("flux_e_mean"),
            "std_flux_e": grouped.column("flux_e_stddev"),
        }
    ).sort_by("ccd")


class ReportConfig(BaseModel, extra="forbid"):
    max_mean_flux_e: float = 25.0


@task(
    "demo.report",
    inputs={"summary": "demo_summary"},
    outputs={"report": "demo_report"},
    config=ReportConfig,
)
def report(summary: pa.Table, config: ReportConfig) -> pa.Table:
    """Flags CCDs whose mean flux exceeds the limit."""
    mean = summary.column("mean_flux_e").to_numpy()
    flag = mean > config.max_mean_flux_e
    message = [
        f"mean {m:.1f} e- {'above' if f else 'within'} limit {config.max_mean_flux_e:g}"
        for m, f in zip(mean, flag, strict=True)
    ]
    return pa.table({"ccd": summary.column("ccd"), "flag": flag, "message": message})
