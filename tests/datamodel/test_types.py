"""Data types: conforming tables to the declared schema, and Parquet products on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dpct.datamodel import DATA_TYPES, NS_PER_DAY, Column, DataSpec, DataType, data_type
from dpct.errors import SchemaMismatch, UnknownDataType
from dpct.storage import ProductStore, read_product

SAMPLES = data_type(
    "tests_samples",
    2,
    [
        ("obmt_ns", "int64", "ns", "sample time (OBMT)"),
        ("ccd", "int16", "", "CCD number"),
        ("flux_e", "float64", "e-", "flux"),
        ("flags", "list<uint8>", "", "per-sample flags"),
        ("note", "string", "", "free text"),
    ],
    description="A product type for the data model tests",
    time_column="obmt_ns",
)
SPEC = DataSpec("tests_samples", 5000 * NS_PER_DAY, 5001 * NS_PER_DAY, ccd=3)


def _table(**override: pa.Array) -> pa.Table:
    columns = {
        "obmt_ns": pa.array([SPEC.start_ns, SPEC.start_ns + 10], pa.int64()),
        "ccd": pa.array([3, 3], pa.int16()),
        "flux_e": pa.array([1.5, 2.5], pa.float64()),
        "flags": pa.array([[1, 2], []], pa.list_(pa.uint8())),
        "note": pa.array(["a", None], pa.string()),
    }
    columns.update(override)
    return pa.table(columns)


def test_schema_carries_units_and_type_metadata() -> None:
    schema = SAMPLES.schema
    assert schema.names == ["obmt_ns", "ccd", "flux_e", "flags", "note"]
    assert schema.field("flux_e").metadata == {b"unit": b"e-"}
    assert schema.field("obmt_ns").metadata == {b"unit": b"ns"}
    assert schema.field("flags").type == pa.list_(pa.uint8())
    assert schema.metadata == {b"dpct.type": b"tests_samples", b"dpct.version": b"2"}
    assert DATA_TYPES.get("tests_samples") is SAMPLES
    assert SAMPLES.empty().schema.equals(schema, check_metadata=True)


def test_conform_returns_the_declared_schema_in_declared_order() -> None:
    shuffled = _table().select(["note", "flux_e", "flags", "ccd", "obmt_ns"])
    out = SAMPLES.conform(shuffled)
    assert out.schema.equals(SAMPLES.schema, check_metadata=True)
    assert out.column("flux_e").to_pylist() == [1.5, 2.5]


def test_missing_column_names_type_column_and_place() -> None:
    with pytest.raises(SchemaMismatch) as err:
        SAMPLES.conform(_table().drop_columns(["flux_e"]), where="output 'x' of job 7")
    assert str(err.value) == (
        "data type 'tests_samples' v2: column 'flux_e' is missing in output 'x' of job 7"
    )


def test_extra_column_names_type_column_and_place() -> None:
    table = _table().append_column("mystery", pa.array([1, 2]))
    with pytest.raises(SchemaMismatch) as err:
        SAMPLES.conform(table, where="/p/file.parquet")
    assert str(err.value) == (
        "data type 'tests_samples' v2: unexpected column(s) ['mystery'] in /p/file.parquet"
    )


@pytest.mark.parametrize(
    ("column", "array", "have"),
    [
        ("ccd", pa.array([3, 70_000], pa.int64()), "int64"),  # overflows int16
        ("obmt_ns", pa.array([1.5, 2.0], pa.float64()), "double"),  # drops a fraction
        ("flux_e", pa.array(["bright", "dim"]), "string"),  # not a number at all
    ],
)
def test_lossy_cast_names_type_column_and_place(column: str, array: pa.Array, have: str) -> None:
    with pytest.raises(SchemaMismatch) as err:
        SAMPLES.conform(_table(**{column: array}), where="output 'x'")
    expected = SAMPLES.schema.field(column).type
    message = str(err.value)
    assert message.startswith(
        f"data type 'tests_samples' v2: column {column!r} is {have}, expected {expected}"
    )
    assert message.endswith(" in output 'x'")


def test_lossless_casts_are_applied() -> None:
    table = _table(
        obmt_ns=pa.array([1, 2], pa.int32()),
        ccd=pa.array([3, 4], pa.int8()),
        flux_e=pa.array([1.5, 2.25], pa.float32()),
        flags=pa.array([[1], [2, 3]], pa.list_(pa.uint8())),
    )
    out = SAMPLES.conform(table)
    assert out.schema.equals(SAMPLES.schema, check_metadata=True)
    assert out.column("obmt_ns").to_pylist() == [1, 2]
    assert out.column("ccd").to_pylist() == [3, 4]
    assert out.column("flux_e").to_pylist() == [1.5, 2.25]


def test_narrowing_float_cast_is_refused() -> None:
    """Arrow's value-checked cast would round 0.1 to float32 silently."""
    narrow = data_type("tests_narrow", 1, [("x", "float32", "", "")])
    with pytest.raises(SchemaMismatch, match="column 'x' is double, expected float"):
        narrow.conform(pa.table({"x": pa.array([0.1], pa.float64())}))


def test_declaration_errors() -> None:
    with pytest.raises(ValueError, match="column 'x' has unknown dtype 'complex'"):
        DataType("tests_bad", 1, (Column("x", "complex"),))
    with pytest.raises(ValueError, match="declares a column twice"):
        DataType("tests_bad", 1, (Column("x", "int8"), Column("x", "int16")))
    with pytest.raises(ValueError, match="time column 't' is not a column"):
        DataType("tests_bad", 1, (Column("x", "int8"),), time_column="t")
    with pytest.raises(ValueError, match="declared twice with different columns"):
        data_type("tests_samples", 2, [("obmt_ns", "int64")])
    with pytest.raises(UnknownDataType, match="no data type 'tests_nope' is registered"):
        DATA_TYPES.get("tests_nope")


def test_parquet_round_trip_keeps_schema_units_and_checksum(tmp_path: Path) -> None:
    store = ProductStore(tmp_path / "products")
    path = Path(store.location_for(SPEC, "j1a1-abcdef12"))
    assert path == (
        tmp_path
        / "products"
        / "tests_samples"
        / "day=5000"
        / f"tests_samples_{SPEC.start_ns}_{SPEC.end_ns}_c3_j1a1-abcdef12.parquet"
    )
    table = _table(ccd=pa.array([3, 3], pa.int32()))  # conformed on the way in
    out = store.write(table, SPEC, "j1a1-abcdef12", name="samples")

    data = path.read_bytes()
    assert out.checksum == "sha256:" + hashlib.sha256(data).hexdigest()
    assert out.bytes == len(data)
    assert (out.name, out.data_type, out.type_version, out.spec, out.rows) == (
        "samples",
        "tests_samples",
        2,
        SPEC,
        2,
    )
    assert out.location == str(path)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind

    # The file itself holds the declared schema: types, units, type name and version.
    on_disk = pq.read_schema(path)
    assert on_disk.equals(SAMPLES.schema, check_metadata=False)
    for field in SAMPLES.schema:
        assert on_disk.field(field.name).metadata == field.metadata
    assert on_disk.metadata[b"dpct.type"] == b"tests_samples"
    assert on_disk.metadata[b"dpct.version"] == b"2"

    back = read_product(str(path), "tests_samples")
    assert back.schema.equals(SAMPLES.schema, check_metadata=True)
    assert back.equals(SAMPLES.conform(table))


def test_writing_a_wrong_table_leaves_no_file(tmp_path: Path) -> None:
    store = ProductStore(tmp_path)
    path = store.location_for(SPEC, "t")
    with pytest.raises(SchemaMismatch, match=rf"column 'note' is missing in {path}"):
        store.write(_table().drop_columns(["note"]), SPEC, "t")
    assert list(tmp_path.iterdir()) == []


def test_reading_a_product_of_another_type_or_garbage_fails_clearly(tmp_path: Path) -> None:
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"obmt_ns": pa.array([1], pa.int64())}), other)
    with pytest.raises(SchemaMismatch, match=rf"column 'ccd' is missing in {other}"):
        read_product(str(other), "tests_samples")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet")
    with pytest.raises(SchemaMismatch, match=rf"cannot read product {garbage} of type"):
        read_product(str(garbage), "tests_samples")
