"""Ingest workflows: what runs when the upstream center's telemetry has been registered.

Each is started by a data trigger on the delivered type (one workflow per delivered
dataset) and turns raw telemetry into what operators and pipelines consume:

- HKIngestAutWorkflow: per-channel daily housekeeping statistics with outlier counts;
- DataQualifierIngestAutWorkflow: bad intervals merged across the simulator's (or the
  upstream's) chunk boundaries, the table pipelines consult to honour qualifiers;
- InputDataUpdateIngestAutWorkflow: coverage of the science telemetry (rows, OBMT span,
  gaps), so that a missing stretch is seen before a pipeline trips over it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field

from dpct.datamodel import NS_PER_S, DataSpec, data_type
from dpct.tasks import NoData, task

WORKFLOWS = Path(__file__).with_name("workflows")

HK_CHANNELS = (
    "fpa_temp_k",
    "payload_temp_k",
    "bam_bench_temp_k",
    "bus_voltage_v",
    "ccd_clock_voltage_v",
)

data_type(
    "hk_stats",
    1,
    [
        ("channel", "string", "", "housekeeping channel (column of the hk type)"),
        ("samples", "int64", "", "number of samples"),
        ("mean", "float64", "", "mean, in the channel's unit"),
        ("std", "float64", "", "standard deviation"),
        ("min", "float64", "", "minimum"),
        ("max", "float64", "", "maximum"),
        ("outliers", "int64", "", "samples more than k robust sigmas from the median"),
        ("first_obmt_ns", "int64", "ns", "first sample"),
        ("last_obmt_ns", "int64", "ns", "last sample"),
    ],
    description="Daily statistics of each housekeeping channel",
)
data_type(
    "bad_intervals",
    1,
    [
        ("dq_id", "int64", "", "bad-interval id"),
        ("start_obmt_ns", "int64", "ns", "start of the bad interval"),
        ("stop_obmt_ns", "int64", "ns", "end (exclusive)"),
        ("instrument", "string", "", "AF or ALL (a telemetry gap)"),
        ("fov", "int8", "", "0, 1, or -1 for both"),
        ("ccd_index", "int16", "", "AF CCD 0 … 61, or -1 for all"),
        ("reason", "string", "", "why the data are bad"),
    ],
    description="Data qualifiers merged into whole intervals, one row per bad interval",
    time_column="start_obmt_ns",
)
data_type(
    "input_coverage",
    1,
    [
        ("data_type", "string", "", "telemetry type"),
        ("rows", "int64", "", "rows delivered"),
        ("first_obmt_ns", "int64", "ns", "first row"),
        ("last_obmt_ns", "int64", "ns", "last row"),
        ("gaps", "int64", "", "gaps longer than the threshold"),
        ("gap_s", "float64", "s", "total length of those gaps"),
        ("largest_gap_s", "float64", "s", "longest gap (0 when none)"),
    ],
    description="Coverage of one delivered science telemetry dataset",
)


class HkConfig(BaseModel, extra="forbid"):
    outlier_sigmas: float = Field(5.0, gt=0)


@task("ingest.hk", inputs={"hk": "hk"}, outputs={"stats": "hk_stats"}, config=HkConfig)
def hk_stats(hk: pa.Table, config: HkConfig) -> pa.Table:
    """Per-channel statistics; outliers use the MAD so a thermal event does not hide them."""
    if hk.num_rows == 0:
        raise NoData("no housekeeping samples")
    t = hk.column("obmt_ns").to_numpy()
    rows = []
    for channel in HK_CHANNELS:
        x = hk.column(channel).to_numpy()
        median = np.median(x)
        robust_sigma = 1.4826 * np.median(np.abs(x - median))
        outliers = (
            int(np.count_nonzero(np.abs(x - median) > config.outlier_sigmas * robust_sigma))
            if robust_sigma > 0
            else 0
        )
        rows.append(
            (channel, x.size, x.mean(), x.std(ddof=1) if x.size > 1 else 0.0, x.min(), x.max(),
             outliers, int(t.min()), int(t.max()))
        )  # fmt: skip
    names = ["channel", "samples", "mean", "std", "min", "max", "outliers"]
    names += ["first_obmt_ns", "last_obmt_ns"]
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


@task(
    "ingest.data_qualifiers",
    inputs={"qualifiers": "data_qualifiers"},
    outputs={"bad": "bad_intervals"},
)
def merge_qualifiers(qualifiers: pa.Table) -> pa.Table:
    """Join the pieces of each bad interval (cut at chunk boundaries) into one row."""
    if qualifiers.num_rows == 0:
        return pa.table(
            {"dq_id": pa.array([], pa.int64()), "start_obmt_ns": pa.array([], pa.int64()),
             "stop_obmt_ns": pa.array([], pa.int64()), "instrument": pa.array([], pa.string()),
             "fov": pa.array([], pa.int8()), "ccd_index": pa.array([], pa.int16()),
             "reason": pa.array([], pa.string())}
        )  # fmt: skip
    merged = qualifiers.group_by(["dq_id", "instrument", "fov", "ccd_index", "reason"]).aggregate(
        [("start_obmt_ns", "min"), ("stop_obmt_ns", "max")]
    )
    merged = merged.rename_columns(
        [c.removesuffix("_min").removesuffix("_max") for c in merged.column_names]
    )
    return merged.select(
        ["dq_id", "start_obmt_ns", "stop_obmt_ns", "instrument", "fov", "ccd_index", "reason"]
    ).sort_by([("start_obmt_ns", "ascending"), ("dq_id", "ascending")])


class CoverageConfig(BaseModel, extra="forbid"):
    gap_s: float = Field(60.0, gt=0, description="a pause longer than this is a gap")


def coverage(table: pa.Table, data_type_name: str, spec: DataSpec, gap_s: float) -> pa.Table:
    """Rows, span and gaps of one telemetry table (the job's interval ends count too)."""
    t = np.sort(table.column("obmt_ns").to_numpy()) if table.num_rows else np.array([], np.int64)
    edges = np.concatenate([[spec.start_ns], t, [spec.end_ns]])
    pauses = np.diff(edges) / NS_PER_S
    gaps = pauses[pauses > gap_s]
    return pa.table(
        {
            "data_type": [data_type_name],
            "rows": [int(t.size)],
            "first_obmt_ns": [int(t[0]) if t.size else spec.start_ns],
            "last_obmt_ns": [int(t[-1]) if t.size else spec.start_ns],
            "gaps": [int(gaps.size)],
            "gap_s": [float(gaps.sum())],
            "largest_gap_s": [float(gaps.max()) if gaps.size else 0.0],
        }
    )


def _coverage_task(name: str, input_type: str) -> None:
    @task(
        name,
        inputs={"telemetry": input_type},
        outputs={"coverage": "input_coverage"},
        config=CoverageConfig,
    )
    def run(telemetry: pa.Table, config: CoverageConfig, spec: DataSpec) -> pa.Table:
        return coverage(telemetry, input_type, spec, config.gap_s)

    run.__doc__ = f"Coverage of delivered {input_type}."


for _name, _type in (
    ("ingest.af_coverage", "af_windows"),
    ("ingest.bam_coverage", "bam_images"),
    ("ingest.gsr_coverage", "gsr_observations"),
):
    _coverage_task(_name, _type)

__all__ = ["WORKFLOWS", "coverage", "hk_stats", "merge_qualifiers"]
