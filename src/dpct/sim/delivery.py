"""Simulated days written as upstream deliveries: what ``dpct sim run`` produces.

Each OBMT day becomes one delivery folder (one Parquet file per telemetry type, streamed
chunk by chunk as row groups so a full day never sits in memory) sealed with its
manifest, exactly what the upstream center would send. Truth goes to a sibling folder
that is never part of a delivery, so a pipeline cannot read it by accident.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dpct.datamodel import DATA_TYPES, NS_PER_DAY, DataSpec, day_of
from dpct.mission.datatypes import TELEMETRY_TYPES
from dpct.mission.delivery import MANIFEST, DeliveryWriter, Manifest, read_manifest
from dpct.mission.schemas import SCHEMAS
from dpct.sim._simulator import SimChunk, Simulator, Span

Progress = Callable[[SimChunk], None]


@dataclass
class DayResult:
    day: int
    folder: Path
    manifest: Manifest
    truth_folder: Path | None
    rows: dict[str, int] = field(default_factory=dict)
    skipped: bool = False


class _TableStream:
    """One Parquet file fed chunk by chunk; row groups keep memory flat."""

    def __init__(self, path: Path, schema: pa.Schema, *, conform: Callable | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.schema = schema
        self.conform = conform
        self.rows = 0
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")

    def add(self, table: pa.Table) -> None:
        if self.conform is not None:
            table = self.conform(table, where=str(self.path))
        if table.num_rows:
            self.writer.write_table(table)
            self.rows += table.num_rows

    def close(self) -> None:
        self.writer.close()


def delivery_name(seed: int, day: int) -> str:
    return f"sim-s{seed}-d{day}"


def write_days(
    simulator: Simulator,
    first_day: int,
    days: int,
    out: str | Path,
    *,
    hours: float | None = None,
    workers: int = 1,
    truth: bool = True,
    progress: Progress | None = None,
) -> list[DayResult]:
    """Simulate ``days`` OBMT days (or the first ``hours`` of one) into delivery folders.

    A day whose delivery is already sealed is skipped, so an interrupted run can simply
    be started again.
    """
    out = Path(out)
    results = []
    for day in range(first_day, first_day + days):
        start = day * NS_PER_DAY
        stop = start + (round(hours * 3600e9) if hours else NS_PER_DAY)
        results.append(
            _write_day(
                simulator, Span(start, stop), out, workers=workers, truth=truth, progress=progress
            )
        )
    return results


def _write_day(
    simulator: Simulator,
    span: Span,
    out: Path,
    *,
    workers: int,
    truth: bool,
    progress: Progress | None,
) -> DayResult:
    day = day_of(span.start_obmt_ns)
    name = delivery_name(simulator.config.seed, day)
    folder = out / name
    truth_folder = out / f"{name}.truth" if truth else None
    if (folder / MANIFEST).exists():
        manifest = read_manifest(folder)
        rows = {f.data_type: f.rows for f in manifest.files}
        return DayResult(day, folder, manifest, truth_folder, rows, skipped=True)
    writer = DeliveryWriter(folder, name)
    tag = f"s{simulator.config.seed}"
    streams: dict[str, _TableStream] = {}
    truth_streams: dict[str, _TableStream] = {}
    products = [p for p in simulator.config.products if p in TELEMETRY_TYPES]
    if "gsr_observations" in products:
        products.append("gsr_reference_catalogue")  # the frame's reference comes along
    for product in products:
        spec = DataSpec(product, span.start_obmt_ns, span.stop_obmt_ns)
        relative = writer.relative_name(spec, tag)
        data_type = DATA_TYPES.get(product)
        streams[product] = _TableStream(
            folder / relative, data_type.schema, conform=data_type.conform
        )
    try:
        for chunk in simulator.chunks(span, workers=workers):
            for product, stream in streams.items():
                stream.add(chunk.products[product])
            if truth_folder is not None:
                for table_name, table in chunk.truth.items():
                    if table_name not in truth_streams:
                        truth_streams[table_name] = _TableStream(
                            truth_folder / f"{table_name}.parquet",
                            SCHEMAS[table_name],
                            conform=None,
                        )
                    truth_streams[table_name].add(table)
            if progress is not None:
                progress(chunk)
    finally:
        for stream in [*streams.values(), *truth_streams.values()]:
            stream.close()
    if truth_folder is not None:
        for table_name, table in simulator.static_truth().items():
            pq.write_table(table, truth_folder / f"{table_name}.parquet", compression="zstd")
    for product, stream in streams.items():
        spec = DataSpec(product, span.start_obmt_ns, span.stop_obmt_ns)
        writer.add_file(stream.path.relative_to(folder).as_posix(), spec, rows=stream.rows)
    manifest = writer.seal()
    return DayResult(
        day=day,
        folder=folder,
        manifest=manifest,
        truth_folder=truth_folder,
        rows={p: s.rows for p, s in streams.items()},
    )
