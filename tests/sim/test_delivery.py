"""Simulated days written as deliveries: what the upstream center would send."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tests.cli.runners import InProcess

from dpct.datamodel import DATA_TYPES, NS_PER_DAY
from dpct.sim import SimConfig, Simulator, Span
from dpct.sim.delivery import write_days
from dpct.transfer import read_manifest

DAY = 700


def _columns(schema: pa.Schema) -> list[tuple[str, str, bytes]]:
    """Names, types and units; a list's child field name ("item"/"element") is Parquet's."""

    def kind(t: pa.DataType) -> str:
        return f"list<{t.value_type}>" if pa.types.is_list(t) else str(t)

    return [(f.name, kind(f.type), f.metadata[b"unit"]) for f in schema]


def test_a_day_becomes_a_sealed_delivery_with_truth_apart(tmp_path: Path) -> None:
    config = SimConfig(seed=3, scale=0.005)
    (result,) = write_days(Simulator(config), DAY, 1, tmp_path, hours=0.5)
    manifest = read_manifest(result.folder)
    assert manifest.delivery == "sim-s3-d700" and result.truth_folder is not None

    direct = list(Simulator(config).chunks(Span(DAY * NS_PER_DAY, DAY * NS_PER_DAY + 1800 * 10**9)))
    # the products, and the reference catalogue that the GSR frame needs beside them
    assert {f.data_type for f in manifest.files} == {*config.products, "gsr_reference_catalogue"}
    for entry in manifest.files:
        path = result.folder / entry.file
        data = path.read_bytes()
        assert entry.bytes == len(data)
        assert entry.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
        table = pq.read_table(path)
        # Exactly the registered schema, and exactly what the simulator produced.
        assert _columns(table.schema) == _columns(DATA_TYPES.get(entry.data_type).schema)
        assert table.schema.metadata[b"dpct.type"] == entry.data_type.encode()
        expected = sum(c.products[entry.data_type].num_rows for c in direct)
        assert entry.rows == table.num_rows == expected
        assert (entry.spec.start_ns, entry.spec.end_ns) == (
            DAY * NS_PER_DAY,
            DAY * NS_PER_DAY + 1800 * 10**9,
        )
    # The catalogue holds every observed star once, at reference (not true) positions:
    # truth minus offsets of ~ gsr.reference_error_mas.
    files = {f.data_type: result.folder / f.file for f in manifest.files}
    catalogue = pq.read_table(files["gsr_reference_catalogue"])
    ids = catalogue.column("source_id").to_numpy()
    observed = np.unique(pq.read_table(files["gsr_observations"]).column("source_id"))
    assert np.isin(observed, ids).all()
    # a star seen in two chunks is listed by both, at the same reference position
    order = np.argsort(ids, kind="stable")
    again = np.flatnonzero(np.diff(ids[order]) == 0)
    for col in ("ra_deg", "dec_deg"):
        values = catalogue.column(col).to_numpy()[order]
        assert np.array_equal(values[again], values[again + 1])
    stars = pq.read_table(result.truth_folder / "stars.parquet")
    star_ids, first = np.unique(stars.column("source_id").to_numpy(), return_index=True)
    at = first[np.searchsorted(star_ids, ids)]
    d_dec_mas = (
        stars.column("dec_deg").to_numpy()[at] - catalogue.column("dec_deg").to_numpy()
    ) * 3.6e6
    assert np.allclose(d_dec_mas, stars.column("delta_dec_uas").to_numpy()[at] / 1e3, atol=1e-6)
    assert 0.7 < np.std(d_dec_mas) < 1.3  # reference_error_mas = 1
    # Truth is beside the delivery, never in it.
    assert not any("truth" in f.file for f in manifest.files)
    assert (result.truth_folder / "af_truth.parquet").exists()
    assert pq.read_metadata(result.truth_folder / "af_truth.parquet").num_rows == sum(
        c.truth["af_truth"].num_rows for c in direct
    )

    # A sealed day is not simulated again.
    before = (result.folder / "manifest.json").stat().st_mtime_ns
    (again,) = write_days(Simulator(config), DAY, 1, tmp_path, hours=0.5)
    assert again.skipped and (result.folder / "manifest.json").stat().st_mtime_ns == before


def test_cli_writes_deliveries_and_refuses_bad_settings(tmp_path: Path) -> None:
    dpct = InProcess(dict(os.environ))  # through dpct.cli.main, in this process
    done = dpct.run(
        "sim", "run", "--day", "701", "--hours", "0.25", "--out", str(tmp_path),
        "--scale", "0.002", "--products", "hk,data_qualifiers", "--workers", "1",
        "--no-truth", "--json",
    )  # fmt: skip
    (report,) = json.loads(done.stdout)
    manifest = read_manifest(report["delivery"])
    assert sorted(f.data_type for f in manifest.files) == ["data_qualifiers", "hk"]
    rows = {f.data_type: f.rows for f in manifest.files}
    assert report["rows"] == rows and rows["hk"] > 0
    assert not (tmp_path / "sim-s0-d701.truth").exists()

    bad = dpct.run(
        "sim", "run", "--day", "701", "--out", str(tmp_path), "--products", "af,hk", rc=2
    )
    assert "unknown products ['af']" in bad.stderr
