"""The data model: data types declared in code and DataSpecs saying what data is covered."""

from dpct.datamodel._dataspec import (
    NS_PER_DAY,
    NS_PER_S,
    DataSpec,
    day_of,
    parse_duration_ns,
    product_name,
)
from dpct.datamodel._types import DATA_TYPES, Column, DataType, data_type

__all__ = [
    "DATA_TYPES",
    "NS_PER_DAY",
    "NS_PER_S",
    "Column",
    "DataSpec",
    "DataType",
    "data_type",
    "day_of",
    "parse_duration_ns",
    "product_name",
]
