"""Trivial task types for tests, benchmarks and pipeline developers' experiments.

Load them with ``DPCT_TASK_MODULES=dpct.testing.tasks``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from dpct.datamodel import DataSpec, data_type
from dpct.tasks import NoData, PermanentTaskError, TransientError, task

COUNTS = data_type(
    "testing_counts",
    1,
    [
        ("obmt_ns", "int64", "ns", "sample time (OBMT)"),
        ("value", "float64", "", "a value"),
    ],
    description="A tiny product for framework tests",
    time_column="obmt_ns",
)


class SleepConfig(BaseModel, extra="forbid"):
    seconds: float = 0.0


@task("testing.noop")
def noop() -> None:
    """Does nothing: measures the framework's own cost per job."""


@task("testing.sleep", config=SleepConfig)
def sleep(config: SleepConfig) -> None:
    """Sleeps, to keep a job RUNNING while a test acts on it."""
    time.sleep(config.seconds)


class MakeConfig(BaseModel, extra="forbid"):
    rows: int = 10
    seconds: float = 0.0


@task("testing.make", outputs={"counts": "testing_counts"}, config=MakeConfig)
def make(config: MakeConfig, spec: DataSpec) -> pa.Table:
    """Makes ``rows`` samples spread over the job's interval."""
    time.sleep(config.seconds)
    t = np.linspace(spec.start_ns, spec.end_ns - 1, config.rows).astype(np.int64)
    return pa.table({"obmt_ns": t, "value": np.arange(config.rows, dtype=np.float64)})


class GateConfig(BaseModel, extra="forbid"):
    started: str = ""  # a file touched when an attempt starts
    gate: str = ""  # a file the attempt waits for before making its output
    rows: int = 10  # random values, so that millions of rows take a while to write


@task("testing.gated", outputs={"counts": "testing_counts"}, config=GateConfig)
def gated(config: GateConfig, spec: DataSpec) -> pa.Table:
    """Says it started, waits for the gate, then makes ``rows`` random samples: a test
    can act while the job runs, or (with many rows) while its output is being written."""
    if config.started:
        Path(config.started).touch()
    while config.gate and not Path(config.gate).exists():
        time.sleep(0.01)
    t = np.linspace(spec.start_ns, spec.end_ns - 1, config.rows).astype(np.int64)
    return pa.table({"obmt_ns": t, "value": np.random.default_rng().random(config.rows)})


class ScaleConfig(BaseModel, extra="forbid"):
    factor: float = 2.0
    seconds: float = 0.0


@task(
    "testing.scale",
    inputs={"counts": "testing_counts"},
    outputs={"scaled": "testing_counts"},
    config=ScaleConfig,
)
def scale(counts: pa.Table, config: ScaleConfig) -> pa.Table:
    """Multiplies values; skips when there is nothing to scale."""
    time.sleep(config.seconds)
    if counts.num_rows == 0:
        raise NoData("no testing_counts rows in this interval")
    value = pc.multiply(counts.column("value"), config.factor)
    return pa.table({"obmt_ns": counts.column("obmt_ns"), "value": value})


class FailConfig(BaseModel, extra="forbid"):
    kind: str = "bug"  # bug | permanent | transient
    unless_file: str = ""  # succeed once this file exists (to test "resume after the fix")


@task("testing.fail", config=FailConfig, max_attempts=2)
def fail(config: FailConfig) -> None:
    """Raises the failure named by ``kind`` unless ``unless_file`` exists."""
    if config.unless_file and Path(config.unless_file).exists():
        return
    if config.kind == "permanent":
        raise PermanentTaskError("this input can never be processed")
    if config.kind == "transient":
        raise TransientError("the resource is busy")
    raise RuntimeError("a bug in the task")


class AlarmConfig(BaseModel, extra="forbid"):
    message: str = "a limit was passed"
    fail_first_attempt_file: str = ""  # raise (after the alarm) until this file exists


@task("testing.alarm", config=AlarmConfig, max_attempts=2)
def alarm(config: AlarmConfig, alarms: list[tuple[str, str]]) -> None:
    """Raises one alarm; fails after raising it while ``fail_first_attempt_file`` is absent
    (and creates it), so the first attempt's alarm must not survive."""
    alarms.append(("testing", config.message))
    marker = Path(config.fail_first_attempt_file) if config.fail_first_attempt_file else None
    if marker is not None and not marker.exists():
        marker.touch()
        raise TransientError("the first attempt fails after raising its alarm")


@task("testing.crash", max_attempts=1)
def crash() -> None:
    """Kills its own worker process, as a segfaulting extension would."""
    os._exit(9)


@task("testing.slow", config=SleepConfig, max_attempts=1, time_limit_s=1.0)
def slow(config: SleepConfig) -> None:
    """Runs past its 1-second time limit when asked to sleep longer."""
    time.sleep(config.seconds)


@task("testing.limited", config=SleepConfig, max_running=1)
def limited(config: SleepConfig) -> None:
    """At most one running at a time across all nodes."""
    time.sleep(config.seconds)


@task("testing.wide", config=SleepConfig, cores=2)
def wide(config: SleepConfig) -> None:
    """Takes two slots, like a small MPI solve."""
    time.sleep(config.seconds)
