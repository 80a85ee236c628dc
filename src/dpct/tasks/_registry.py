"""Task types: a decorated function with declared inputs, outputs and config.

Science code gets typed tables and a validated config and returns typed tables; the
framework reads and writes the products, allocates solution ids and records lineage.
External packages add task types through the ``dpct.tasks`` entry point group: each
entry names a module whose import declares its task types and data types.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ValidationError

from dpct.datamodel import DATA_TYPES, DataSpec
from dpct.errors import ContractError, DpctError, UnknownTaskType
from dpct.plugins import load_entry_points
from dpct.tasks._job import JobContext, outside_a_job

INJECTABLE = frozenset({"config", "spec", "log", "scratch", "alarms", "solutions", "job", "system"})
"""Arguments the framework passes when a task function asks for them by name.

``scratch`` is a folder kept per job (not per attempt), for checkpoints that a retry
resumes from. ``alarms`` is a list the task appends ``(kind, message)`` to: each becomes
an ``alarm.<kind>`` event (subsystem EMS) in the transaction that commits the attempt,
so a failed or retried attempt raises nothing twice. ``solutions`` maps each input name
to the solution ids of the datasets read for it, in reading order (a calibration's
product can then name the solution it applied). ``job`` is the :class:`JobContext`:
the job, workflow and attempt ids, and where files meant for people go
(``job.report_path("myreport.png")``, beside the job's log).

``system`` is for system tasks only (``@task(..., system=True)``: DSS housekeeping,
outbound deliveries), which must record in the metadata database themselves: a
``dpct.storage.SystemServices`` holding the node's database, opened for the attempt,
and the node's settings. Science tasks never get it: a non-system task asking for it is
refused at declaration.
"""

SYSTEM_ONLY = frozenset({"system"})


SELECTIONS = frozenset({"overlap", "before", "newest"})
"""How an input's datasets are chosen (``"type@selection"`` in ``inputs``):

- ``overlap`` (the default): every available dataset overlapping the job's DataSpec;
- ``before``: the one dataset that ends last at or before the job's start (newest id
  among equals): yesterday's calibration for today's processing;
- ``newest``: the most recently registered dataset of the type, wherever it lies: the
  latest calibration, for a reprocessing of earlier days.
"""


def parse_input(name: str, declared: str) -> tuple[str, str]:
    """``"type"`` or ``"type@selection"`` → (type, selection)."""
    data_type, _, selection = declared.partition("@")
    selection = selection or "overlap"
    if selection not in SELECTIONS:
        raise ValueError(
            f"input {name!r}: unknown selection {selection!r} in {declared!r}; "
            f"use one of {', '.join(sorted(SELECTIONS))}"
        )
    return data_type, selection


class NoConfig(BaseModel, extra="forbid"):
    """The config of a task type that takes no parameters."""


@dataclass(frozen=True)
class TaskType:
    name: str
    version: str
    func: Callable[..., Any]
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    config: type[BaseModel] = NoConfig
    cores: int = 1
    max_attempts: int = 3
    time_limit_s: float | None = None
    max_running: int | None = None
    description: str = ""
    wants: frozenset[str] = field(default_factory=frozenset)
    selections: Mapping[str, str] = field(default_factory=dict)
    """Input name → how its datasets are chosen (see :data:`SELECTIONS`)."""
    system: bool = False
    """A system task: its attempt gets the node's database (see :data:`INJECTABLE`)."""

    def parse_config(self, params: Mapping[str, Any]) -> BaseModel:
        """Validate parameters; the error names the task type and the field."""
        try:
            return self.config.model_validate(dict(params))
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(params)'}: {e['msg']}"
                for e in err.errors()
            )
            raise ParameterError(f"task type {self.name!r}: {problems}") from err

    def run(
        self,
        tables: Mapping[str, pa.Table],
        params: Mapping[str, Any],
        spec: DataSpec,
        log: logging.Logger,
        scratch: Path,
        alarms: list[tuple[str, str]] | None = None,
        solutions: Mapping[str, list[int]] | None = None,
        *,
        job: JobContext | None = None,
        system: object | None = None,
    ) -> dict[str, pa.Table]:
        """Call the function and return its outputs conformed to their data types.

        Without ``job`` (a task run by hand) the task sees job -1 and no log. ``system``
        is what the node gives a system task; one that asks for it must get it.
        """
        if "system" in self.wants and system is None:
            raise ContractError(
                f"system task {self.name!r} was run without the node's system services"
            )
        kwargs: dict[str, Any] = dict(tables)
        available = {
            "config": self.parse_config(params),
            "spec": spec,
            "log": log,
            "scratch": scratch,
            "alarms": [] if alarms is None else alarms,
            "solutions": dict(solutions or {}),
            "job": job or outside_a_job(scratch),
            "system": system,
        }
        kwargs.update({name: available[name] for name in self.wants})
        result = self.func(**kwargs)
        if result is None:
            result = {}
        if isinstance(result, pa.Table):
            if len(self.outputs) != 1:
                raise ContractError(
                    f"task type {self.name!r} returned one table but declares "
                    f"{len(self.outputs)} outputs; return a dict by output name"
                )
            result = {next(iter(self.outputs)): result}
        unknown = set(result) - set(self.outputs)
        if unknown:
            raise ContractError(
                f"task type {self.name!r} returned undeclared output(s) {sorted(unknown)}"
            )
        return {
            name: DATA_TYPES.get(self.outputs[name]).conform(
                table, where=f"output {name!r} of task type {self.name!r}"
            )
            for name, table in result.items()
        }


class ParameterError(DpctError):
    """Task parameters do not match the task type's config."""

    exit_code = 2
    retryable = False


class TaskRegistry:
    def __init__(self) -> None:
        self._tasks: dict[str, TaskType] = {}

    def add(self, task_type: TaskType) -> None:
        known = self._tasks.get(task_type.name)
        # Re-importing the same module (e.g. by entry point and by path) is not a clash.
        if known is not None and _origin(known) != _origin(task_type):
            raise ValueError(
                f"task type {task_type.name!r} is declared twice: in {_origin(known)} "
                f"and in {_origin(task_type)}"
            )
        self._tasks[task_type.name] = task_type

    def get(self, name: str) -> TaskType:
        if name not in self._tasks:
            load_entry_points()
        try:
            return self._tasks[name]
        except KeyError:
            known = ", ".join(sorted(self._tasks)) or "none"
            raise UnknownTaskType(
                f"unknown task type {name!r} (registered: {known}); install the package "
                "that provides it, or check the `dpct.tasks` entry points"
            ) from None

    def names(self) -> list[str]:
        load_entry_points()
        return sorted(self._tasks)


def _origin(task_type: TaskType) -> str:
    return f"{task_type.func.__module__}.{task_type.func.__qualname__}"


TASK_TYPES = TaskRegistry()


def task(
    name: str,
    *,
    inputs: Mapping[str, str] | None = None,
    outputs: Mapping[str, str] | None = None,
    config: type[BaseModel] = NoConfig,
    version: str = "1",
    cores: int = 1,
    max_attempts: int = 3,
    time_limit_s: float | None = None,
    max_running: int | None = None,
    system: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a task type.

    Parameters
    ----------
    name
        Unique task type name, e.g. ``"aim.image_parameters"``.
    inputs, outputs
        Argument (output) name → data type name. Inputs arrive as Arrow tables of the
        registered schema holding every available dataset that overlaps the job's
        DataSpec (``"type@before"`` or ``"type@newest"`` choose one dataset instead,
        see :data:`SELECTIONS`); outputs are returned as a dict of tables (or one table).
    config
        A pydantic model validating the step's parameters; passed as ``config``.
    cores
        Slots a job takes on a node (an MPI solve takes several).
    max_attempts, time_limit_s, max_running
        Retry budget, wall-clock limit per attempt, and the most jobs of this type
        running at once across all nodes.
    system
        A system task of dpct itself (DSS housekeeping, outbound deliveries) that must
        record in the metadata database: it may ask for ``system``, the node's database
        and settings. Science tasks never are.
    """
    if cores < 1:
        raise ValueError(f"task type {name!r}: cores must be ≥ 1, got {cores}")
    if max_attempts < 1:
        raise ValueError(f"task type {name!r}: max_attempts must be ≥ 1, got {max_attempts}")
    clash = sorted(INJECTABLE & set(inputs or {}))
    if clash:
        # The injected value would silently take the input's place.
        raise ValueError(
            f"task type {name!r}: input name(s) {clash} are reserved for injected arguments "
            f"({', '.join(sorted(INJECTABLE))}); rename the input(s)"
        )

    parsed = {k: parse_input(k, v) for k, v in (inputs or {}).items()}

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        params = inspect.signature(func).parameters
        wants = frozenset(p for p in params if p in INJECTABLE)
        privileged = sorted(wants & SYSTEM_ONLY)
        if privileged and not system:
            raise ValueError(
                f"task type {name!r}: function {func.__qualname__} asks for {privileged}, "
                "which only system tasks get (@task(..., system=True)); a science task "
                "receives its data as inputs and returns its products as outputs"
            )
        missing = [i for i in (inputs or {}) if i not in params]
        if missing:
            raise ValueError(
                f"task type {name!r}: function {func.__qualname__} lacks argument(s) for "
                f"input(s) {missing}"
            )
        TASK_TYPES.add(
            TaskType(
                name=name,
                version=version,
                func=func,
                inputs={k: t for k, (t, _) in parsed.items()},
                selections={k: sel for k, (_, sel) in parsed.items()},
                outputs=dict(outputs or {}),
                config=config,
                cores=cores,
                max_attempts=max_attempts,
                time_limit_s=time_limit_s,
                max_running=max_running,
                description=inspect.getdoc(func) or "",
                wants=wants,
                system=system,
            )
        )
        return func

    return register
