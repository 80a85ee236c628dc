"""Data types declared in code: name, version and typed columns with unit and description.

A product is a table whose Arrow schema equals its data type's, column for column, so
products stay explicit typed data ("no blobs") and a mismatch is caught at the door.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from dpct.errors import SchemaMismatch, UnknownDataType
from dpct.plugins import load_entry_points

ARROW_TYPES: Mapping[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
}


@dataclass(frozen=True, slots=True)
class Column:
    """One typed column; ``dtype`` is a key of ``ARROW_TYPES`` or ``list<float32>`` etc."""

    name: str
    dtype: str
    unit: str = ""
    description: str = ""

    @property
    def arrow_type(self) -> pa.DataType:
        if self.dtype.startswith("list<") and self.dtype.endswith(">"):
            inner = self.dtype[5:-1]
            if inner in ARROW_TYPES:
                return pa.list_(ARROW_TYPES[inner])
        if self.dtype in ARROW_TYPES:
            return ARROW_TYPES[self.dtype]
        raise ValueError(
            f"column {self.name!r} has unknown dtype {self.dtype!r}; "
            f"use one of {', '.join(ARROW_TYPES)} or list<...> of them"
        )


@dataclass(frozen=True, slots=True)
class DataType:
    """A registered product type. ``time_column`` names the OBMT column, if any.

    ``intermediate`` types are only needed until their run is closed: run check closure
    deletes them. ``supersede`` types keep one current version per interval: a job's
    newer output over exactly the same interval (a reprocessing) replaces the older one
    as an input, which stays stored as SUPERSEDED for lineage. Both describe how the
    data live, not what they hold, so they stay out of the Arrow schema (a product file
    reads the same either way). ``ccd_column`` names the CCD column: a job narrowed to
    one CCD then reads only that CCD's rows of the type's datasets.
    """

    name: str
    version: int
    columns: tuple[Column, ...]
    description: str = ""
    time_column: str | None = None
    intermediate: bool = False
    supersede: bool = False
    ccd_column: str | None = None
    schema: pa.Schema = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"data type {self.name!r} declares a column twice: {names}")
        if self.time_column is not None and self.time_column not in names:
            raise ValueError(
                f"data type {self.name!r}: time column {self.time_column!r} is not a column"
            )
        if self.ccd_column is not None and self.ccd_column not in names:
            raise ValueError(
                f"data type {self.name!r}: CCD column {self.ccd_column!r} is not a column"
            )
        metadata = {b"dpct.type": self.name.encode(), b"dpct.version": str(self.version).encode()}
        schema = pa.schema(
            [
                pa.field(c.name, c.arrow_type, metadata={b"unit": c.unit.encode()})
                for c in self.columns
            ],
            metadata=metadata,
        )
        object.__setattr__(self, "schema", schema)

    def conform(self, table: pa.Table, *, where: str = "") -> pa.Table:
        """Return ``table`` with this type's exact schema, or raise naming the column.

        Missing or extra columns and types that would lose information are errors;
        lossless casts (e.g. int32 → int64) are applied.
        """
        place = f" in {where}" if where else ""
        have = set(table.column_names)
        for column in self.columns:
            if column.name not in have:
                raise SchemaMismatch(
                    f"data type {self.name!r} v{self.version}: column {column.name!r} "
                    f"is missing{place}"
                )
        extra = have - {c.name for c in self.columns}
        if extra:
            raise SchemaMismatch(
                f"data type {self.name!r} v{self.version}: unexpected column(s) "
                f"{sorted(extra)}{place}"
            )
        arrays = []
        for column in self.columns:
            array = table.column(column.name)
            if array.type != column.arrow_type:
                if not _widens(array.type, column.arrow_type):
                    raise SchemaMismatch(
                        f"data type {self.name!r} v{self.version}: column {column.name!r} "
                        f"is {array.type}, expected {column.arrow_type} (converting it could "
                        f"lose information){place}"
                    )
                try:
                    array = array.cast(column.arrow_type, safe=True)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                    raise SchemaMismatch(
                        f"data type {self.name!r} v{self.version}: column {column.name!r} "
                        f"is {array.type}, expected {column.arrow_type}{place}"
                    ) from err
            arrays.append(array)
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def empty(self) -> pa.Table:
        return self.schema.empty_table()


def _widens(source: pa.DataType, target: pa.DataType) -> bool:
    """True when a cast can only succeed exactly (or fail loudly), never round.

    Integer to integer casts are allowed because Arrow's safe cast checks every value
    for overflow; float narrowing, string parsing and int → bool would silently change
    values, so they are refused.
    """
    t = pa.types
    if t.is_null(source):
        return True
    if t.is_integer(source) and t.is_integer(target):
        return True
    if t.is_integer(source) and t.is_floating(target):
        mantissa = {16: 11, 32: 24, 64: 53}[target.bit_width]
        return source.bit_width < mantissa
    if t.is_floating(source) and t.is_floating(target):
        return target.bit_width >= source.bit_width
    if t.is_list(source) and t.is_list(target):
        return _widens(source.value_type, target.value_type)
    return (t.is_string(source) or t.is_large_string(source)) and (
        t.is_string(target) or t.is_large_string(target)
    )


class DataTypeRegistry:
    """Data types by name; one version per name in a running process."""

    def __init__(self) -> None:
        self._types: dict[str, DataType] = {}

    def add(self, data_type: DataType) -> DataType:
        known = self._types.get(data_type.name)
        if known is not None and known != data_type:
            raise ValueError(
                f"data type {data_type.name!r} is declared twice with different columns"
            )
        self._types[data_type.name] = data_type
        return data_type

    def get(self, name: str) -> DataType:
        if name not in self._types:
            load_entry_points()
        try:
            return self._types[name]
        except KeyError:
            raise UnknownDataType(
                f"no data type {name!r} is registered; known: {', '.join(sorted(self._types))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def all(self) -> Iterable[DataType]:
        return self._types.values()


DATA_TYPES = DataTypeRegistry()


def data_type(
    name: str,
    version: int,
    columns: Iterable[Column | tuple[str, ...]],
    *,
    description: str = "",
    time_column: str | None = None,
    intermediate: bool = False,
    supersede: bool = False,
    ccd_column: str | None = None,
) -> DataType:
    """Declare and register a data type; columns may be ``(name, dtype, unit, doc)``."""
    cols = tuple(c if isinstance(c, Column) else Column(*c) for c in columns)
    return DATA_TYPES.add(
        DataType(
            name,
            version,
            cols,
            description,
            time_column,
            intermediate,
            supersede,
            ccd_column,
        )
    )
