"""Deliveries: a folder of product files plus ``manifest.json`` describing each file.

The delivery format is the interface between the upstream center and the DPC, so it
lives with the mission rather than with either side: the simulator (playing the
upstream center) writes it without knowing the DPC's database, and ``dpct.transfer``
reads and writes it. The manifest is written last, through a temporary name, so a
folder without one is a delivery still being written and a watcher never picks up half
a delivery.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field, ValidationError

from dpct.checksums import sha256_file
from dpct.datamodel import DATA_TYPES, DataSpec, product_name
from dpct.errors import BadInput

MANIFEST = "manifest.json"
FORMAT = "dpct-delivery/1"


class SpecModel(BaseModel):
    data_type: str
    start_ns: int
    end_ns: int
    ccd: int | None = None
    fov: int | None = None

    def to_spec(self) -> DataSpec:
        return DataSpec(self.data_type, self.start_ns, self.end_ns, self.ccd, self.fov)

    @classmethod
    def of(cls, spec: DataSpec) -> SpecModel:
        return cls(
            data_type=spec.data_type,
            start_ns=spec.start_ns,
            end_ns=spec.end_ns,
            ccd=spec.ccd,
            fov=spec.fov,
        )


class ManifestEntry(BaseModel):
    """One file of a delivery; ``file`` is relative to the manifest, with ``/``."""

    file: str
    bytes: int = Field(ge=0)
    checksum: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    data_type: str
    type_version: int
    spec: SpecModel
    rows: int = Field(ge=0)


class Manifest(BaseModel):
    format: str = FORMAT
    delivery: str
    created_at: float
    files: list[ManifestEntry]

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)


def parse_manifest(text: str | bytes, *, where: str = "manifest") -> Manifest:
    """Read a manifest, refusing one that is not JSON or lacks a field, naming it."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise BadInput(f"{where} is not JSON: {err}") from err
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise BadInput(f"{where}: field {field!r}: {first['msg']}") from err
    if manifest.format != FORMAT:
        raise BadInput(f"{where}: format {manifest.format!r} is not {FORMAT!r}")
    names = [f.file for f in manifest.files]
    if len(set(names)) != len(names):
        raise BadInput(f"{where} lists a file twice")
    for name in names:
        if name.startswith("/") or ".." in name.split("/"):
            raise BadInput(f"{where}: file {name!r} must be a relative path inside the delivery")
    return manifest


def read_manifest(folder: str | Path) -> Manifest:
    path = Path(folder) / MANIFEST
    return parse_manifest(path.read_bytes(), where=str(path))


class DeliveryWriter:
    """Write a delivery file by file, then seal it with its manifest.

    Each table is conformed to its registered data type, so a producer cannot ship a
    file that the receiving end would quarantine for its schema.
    """

    def __init__(self, folder: str | Path, name: str) -> None:
        self.folder = Path(folder)
        self.name = name
        self.entries: list[ManifestEntry] = []
        self.folder.mkdir(parents=True, exist_ok=True)
        if (self.folder / MANIFEST).exists():
            raise BadInput(f"{self.folder} already holds a sealed delivery ({MANIFEST})")

    def relative_name(self, spec: DataSpec, tag: str) -> str:
        return f"{spec.data_type}/{product_name(spec, tag)}"

    def add_table(self, table: pa.Table, spec: DataSpec, *, tag: str = "d") -> ManifestEntry:
        data_type = DATA_TYPES.get(spec.data_type)
        relative = self.relative_name(spec, tag)
        path = self.folder / relative
        table = data_type.conform(table, where=str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="zstd")
        return self.add_file(relative, spec, rows=table.num_rows)

    def add_file(self, relative: str, spec: DataSpec, *, rows: int) -> ManifestEntry:
        """List a file already written under the delivery folder."""
        path = self.folder / relative
        entry = ManifestEntry(
            file=relative,
            bytes=path.stat().st_size,
            checksum="sha256:" + sha256_file(path),
            data_type=spec.data_type,
            type_version=DATA_TYPES.get(spec.data_type).version,
            spec=SpecModel.of(spec),
            rows=rows,
        )
        self.entries.append(entry)
        return entry

    def seal(self) -> Manifest:
        manifest = Manifest(delivery=self.name, created_at=time.time(), files=self.entries)
        tmp = self.folder / (MANIFEST + ".tmp")
        tmp.write_text(manifest.model_dump_json(indent=1))
        os.replace(tmp, self.folder / MANIFEST)
        return manifest


def write_delivery(
    folder: str | Path, name: str, tables: Iterable[tuple[DataSpec, pa.Table]]
) -> Manifest:
    writer = DeliveryWriter(folder, name)
    for spec, table in tables:
        writer.add_table(table, spec)
    return writer.seal()
