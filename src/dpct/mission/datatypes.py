"""The simulator's telemetry tables as registered dpct data types.

Registering them lets deliveries be checked at the door (a file whose schema is not its
type's is quarantined) and lets task types name them as inputs. Loaded through the
``dpct.tasks`` entry point, so any process that resolves a data type knows them.
"""

from __future__ import annotations

import pyarrow as pa

from dpct.datamodel import Column, DataType, data_type
from dpct.mission.schemas import SCHEMA_VERSION, SCHEMAS, TELEMETRY_TABLES

_NAMES = {
    pa.bool_(): "bool",
    pa.int8(): "int8",
    pa.int16(): "int16",
    pa.int32(): "int32",
    pa.int64(): "int64",
    pa.float32(): "float32",
    pa.float64(): "float64",
    pa.string(): "string",
}


def _dtype(arrow: pa.DataType) -> str:
    if pa.types.is_list(arrow):
        return f"list<{_NAMES[arrow.value_type]}>"
    return _NAMES[arrow]


def _register(name: str) -> DataType:
    schema = SCHEMAS[name]
    columns = [
        Column(
            f.name,
            _dtype(f.type),
            (f.metadata or {}).get(b"unit", b"").decode(),
            (f.metadata or {}).get(b"description", b"").decode(),
        )
        for f in schema
    ]
    time_column = next((c.name for c in columns if c.name.endswith("obmt_ns")), None)
    return data_type(
        name,
        SCHEMA_VERSION,
        columns,
        description=f"simulated Gaia telemetry: {name}",
        time_column=time_column,
    )


TELEMETRY_TYPES: dict[str, DataType] = {name: _register(name) for name in TELEMETRY_TABLES}
