"""An external package adding a data type and a task type through the entry point."""

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from dpct.datamodel import data_type
from dpct.tasks import NoData, task

data_type(
    "example_doubled",
    1,
    [("obmt_ns", "int64", "ns", "sample time"), ("value", "float64", "", "twice the input")],
    time_column="obmt_ns",
)


class DoubleConfig(BaseModel, extra="forbid"):
    offset: float = 0.0


@task(
    "example.double",
    inputs={"counts": "testing_counts"},
    outputs={"doubled": "example_doubled"},
    config=DoubleConfig,
)
def double(counts: pa.Table, config: DoubleConfig) -> pa.Table:
    """Doubles every value and adds an offset."""
    if counts.num_rows == 0:
        raise NoData("nothing to double")
    value = pc.add(pc.multiply(counts.column("value"), 2.0), config.offset)
    return pa.table({"obmt_ns": counts.column("obmt_ns"), "value": value})
