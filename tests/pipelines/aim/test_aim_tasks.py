"""AIM task functions on bad input: an empty chunk, a missing calibration, NaN samples."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest

from dpct.datamodel import DATA_TYPES, NS_PER_DAY, DataSpec
from dpct.pipelines.aim import NONFINITE
from dpct.pipelines.aim.tasks import ImageParamsConfig, image_params, ingest
from dpct.sim import SimConfig, Simulator, Span
from dpct.tasks import NoData, PermanentTaskError

DAY = 700
LOG = logging.getLogger("test")
HOUR = 3600 * 10**9


@pytest.fixture(scope="module")
def hour() -> dict[str, pa.Table]:
    sim = Simulator(
        SimConfig.model_validate(
            {"seed": 4, "scale": 0.01, "products": ("af_windows", "data_qualifiers")}
        )
    )
    chunks = list(sim.chunks(Span(DAY * NS_PER_DAY, DAY * NS_PER_DAY + HOUR)))
    return {
        n: pa.concat_tables([c.products[n] for c in chunks])
        for n in ("af_windows", "data_qualifiers")
    }


def test_an_empty_chunk_is_stored_empty_with_an_alarm() -> None:
    spec = DataSpec("af_windows", DAY * NS_PER_DAY, DAY * NS_PER_DAY + 6 * HOUR)
    alarms: list[tuple[str, str]] = []
    empty = DATA_TYPES.get("af_windows").empty()
    out = ingest(empty, DATA_TYPES.get("data_qualifiers").empty(), spec, LOG, alarms)
    assert out["windows"].num_rows == 0 and out["checks"].num_rows == 0
    assert [kind for kind, _ in alarms] == ["aim_no_windows"]


def test_without_a_calibration_the_default_lsf_or_a_clear_error(hour) -> None:
    spec = DataSpec("aim_windows", DAY * NS_PER_DAY, DAY * NS_PER_DAY + HOUR, ccd=5)
    none = DATA_TYPES.get("aim_lsf_calibration").empty()
    fitted = image_params(
        hour["af_windows"], hour["data_qualifiers"], none, ImageParamsConfig(), spec, LOG, {}
    )
    assert fitted.num_rows > 0 and set(fitted.column("ccd_index").to_pylist()) == {5}
    assert set(fitted.column("lsf_solution_id").to_pylist()) == {0}  # the default LSF
    strict = ImageParamsConfig(require_calibration=True)
    with pytest.raises(PermanentTaskError, match="no LSF calibration precedes"):
        image_params(hour["af_windows"], hour["data_qualifiers"], none, strict, spec, LOG, {})
    elsewhere = DataSpec("aim_windows", (DAY + 3) * NS_PER_DAY, (DAY + 4) * NS_PER_DAY, ccd=5)
    with pytest.raises(NoData):
        image_params(
            hour["af_windows"], hour["data_qualifiers"], none, ImageParamsConfig(), elsewhere,
            LOG, {},
        )  # fmt: skip


def test_nan_samples_are_flagged_not_fatal(hour) -> None:
    windows = hour["af_windows"]
    samples = windows.column("samples_e").to_pylist()
    ccd = windows.column("ccd_index").to_numpy()
    target = int(np.flatnonzero(ccd == 5)[0])
    samples[target] = [float("nan")] * len(samples[target])
    index = windows.column_names.index("samples_e")
    broken = windows.set_column(index, "samples_e", pa.array(samples, pa.list_(pa.float32())))
    spec = DataSpec("aim_windows", DAY * NS_PER_DAY, DAY * NS_PER_DAY + HOUR, ccd=5)
    none = DATA_TYPES.get("aim_lsf_calibration").empty()
    fitted = image_params(broken, hour["data_qualifiers"], none, ImageParamsConfig(), spec, LOG, {})
    ids, values = fitted.column("window_id").to_pylist(), fitted.column("flags").to_pylist()
    flags = dict(zip(ids, values, strict=True))
    bad_id = windows.column("window_id")[target].as_py()
    assert flags[bad_id] & NONFINITE
    assert sum(1 for f in flags.values() if f & NONFINITE) == 1
