"""Workflow descriptors: a versioned TOML/YAML file naming a trigger and steps.

Validation checks everything that can be checked before a workflow exists (types,
unknown task types, dependency cycles, task parameters, cron syntax) and every error
names the file, the step and the field.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dpct.datamodel import DATA_TYPES, parse_duration_ns
from dpct.errors import DescriptorError, UnknownDataType, UnknownTaskType
from dpct.tasks import TASK_TYPES, ParameterError


class TriggerSpec(BaseModel):
    """When a workflow is started.

    - ``manual``: only by ``dpct workflow submit`` or backfill.
    - ``calendar``: on a cron schedule (UTC); each tick processes the last complete
      ``span`` of OBMT that ended at least ``lag`` before the tick.
    - ``data``: when a dataset of ``data_type`` is registered (by a transfer or a job);
      ``mode = "dataset"`` starts one workflow per dataset, ``mode = "interval"`` one
      per ``interval`` of OBMT once datasets cover all of it (for each CCD listed in
      ``ccds``, when given).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["manual", "calendar", "data"] = "manual"
    cron: str | None = None
    span: str = "1d"
    lag: str = "0s"
    data_type: str | None = None
    mode: Literal["dataset", "interval"] = "dataset"
    interval: str = "1d"
    ccds: list[int] | None = None

    @field_validator("span", "interval")
    @classmethod
    def _positive(cls, value: str) -> str:
        if parse_duration_ns(value) <= 0:
            raise ValueError(f"{value!r} must be a positive duration")
        return value

    @field_validator("lag")
    @classmethod
    def _not_negative(cls, value: str) -> str:
        if parse_duration_ns(value) < 0:
            raise ValueError(f"{value!r} must not be negative")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression")
        return value


class StepSpec(BaseModel):
    """One step: a task type run over partitions of the workflow's DataSpec.

    ``partition`` is ``"one"`` (a single job), ``"day"``, or a duration such as
    ``"6h"`` (one job per aligned chunk); ``ccds`` / ``fovs`` multiply the chunks by
    CCD / field of view. ``cores`` overrides the task type's slots per job (e.g. the
    ranks of an MPI solve).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    task: str
    params: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    partition: str = "one"
    ccds: list[int] | None = None
    fovs: list[int] | None = None
    cores: int | None = Field(None, ge=1)

    @field_validator("partition")
    @classmethod
    def _partition(cls, value: str) -> str:
        if value not in ("one", "day") and parse_duration_ns(value) <= 0:
            raise ValueError(f"{value!r} must be 'one', 'day' or a positive duration")
        return value


class RunSpec(BaseModel):
    """The run a workflow joins, for run check closure.

    Every workflow of the descriptor belongs to the run of pipeline ``sw`` over the
    aligned ``period`` of OBMT holding the start of its interval (a week run gathers
    the daily, report and weekly workflows of that week); the run is defined when its
    first workflow is created.
    """

    model_config = ConfigDict(extra="forbid")

    sw: str
    period: str = "1d"

    @field_validator("period")
    @classmethod
    def _positive(cls, value: str) -> str:
        if parse_duration_ns(value) <= 0:
            raise ValueError(f"{value!r} must be a positive duration")
        return value

    @field_validator("sw")
    @classmethod
    def _known(cls, value: str) -> str:
        from dpct.storage import RUN_SOFTWARE

        name = value.strip().upper()
        if name not in RUN_SOFTWARE:
            raise ValueError(f"unknown pipeline {value!r}; use one of {', '.join(RUN_SOFTWARE)}")
        return name


class Descriptor(BaseModel):
    """A versioned workflow descriptor."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: int = Field(ge=1)
    description: str = ""
    data_type: str
    priority: int = 0
    trigger: TriggerSpec = Field(default_factory=TriggerSpec)
    steps: list[StepSpec] = Field(min_length=1)
    max_running: dict[str, int] = Field(default_factory=dict)
    run: RunSpec | None = None

    def step_order(self) -> list[StepSpec]:
        """Steps in dependency order (validated to be acyclic)."""
        by_name = {s.name: s for s in self.steps}
        order: list[StepSpec] = []
        state: dict[str, int] = {}

        def visit(name: str) -> None:
            state[name] = 1
            for dep in by_name[name].depends_on:
                if state.get(dep) == 1:
                    raise DescriptorError(
                        f"dependency cycle through {dep!r}", step=name, field="depends_on"
                    )
                if dep not in state:
                    visit(dep)
            state[name] = 2
            order.append(by_name[name])

        for step in self.steps:
            if step.name not in state:
                visit(step.name)
        return order


def load_descriptor(path: str | Path) -> Descriptor:
    """Read and validate a descriptor file (``.toml``, ``.yaml``/``.yml`` or ``.json``)."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise DescriptorError(f"cannot read descriptor: {err.strerror}", source=source) from err
    try:
        if path.suffix == ".toml":
            raw = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            raw = yaml.safe_load(text)
        elif path.suffix == ".json":
            raw = json.loads(text)
        else:
            raise DescriptorError(
                f"unknown descriptor format {path.suffix!r}; use .toml, .yaml or .json",
                source=source,
            )
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as err:
        raise DescriptorError(f"syntax error: {err}", source=source) from err
    return parse_descriptor(raw, source=source)


def parse_descriptor(raw: Any, *, source: str = "") -> Descriptor:
    """Validate a descriptor given as a mapping (e.g. loaded from a file or the database)."""
    if not isinstance(raw, dict):
        raise DescriptorError("a descriptor must be a table/mapping at top level", source=source)
    try:
        descriptor = Descriptor.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        loc = list(first["loc"])
        step = ""
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            steps = raw.get("steps") or []
            index = loc[1]
            entry = steps[index] if index < len(steps) else {}
            step = entry.get("name", f"#{index + 1}") if isinstance(entry, dict) else f"#{index}"
            loc = loc[2:]
        field = ".".join(str(p) for p in loc)
        raise DescriptorError(first["msg"], source=source, step=step, field=field) from err
    _check_semantics(descriptor, source)
    return descriptor


def check_registrable(d: Descriptor, source: str) -> None:
    """Checks made when a descriptor is registered, on top of :func:`parse_descriptor`.

    Data types named nowhere else would make a trigger that never fires. They are checked
    here, not when a stored descriptor is read back, so that a type's module removed
    later cannot stop the coordinator from reading every other descriptor.
    """
    named = [("data_type", d.data_type)]
    if d.trigger.data_type is not None:
        named.append(("trigger.data_type", d.trigger.data_type))
    for field, name in named:
        try:
            DATA_TYPES.get(name)
        except UnknownDataType as err:
            raise DescriptorError(
                f"{err}; data types are declared by task modules: install the package that "
                "declares it, or name its module in DPCT_TASK_MODULES",
                source=source,
                field=field,
            ) from None
    if d.priority < 0:
        raise DescriptorError(
            f"priority must be ≥ 0 (higher runs first; 0 is the default), not {d.priority}",
            source=source,
            field="priority",
        )


def _check_semantics(d: Descriptor, source: str) -> None:
    names = [s.name for s in d.steps]
    for name in names:
        if names.count(name) > 1:
            raise DescriptorError("step name used twice", source=source, step=name, field="name")
    for step in d.steps:
        for dep in step.depends_on:
            if dep not in names:
                raise DescriptorError(
                    f"depends on unknown step {dep!r}",
                    source=source,
                    step=step.name,
                    field="depends_on",
                )
    try:
        d.step_order()
    except DescriptorError as err:
        raise DescriptorError(
            str(err).split(": ", 1)[-1], source=source, step=err.step, field=err.field
        ) from None
    for step in d.steps:
        try:
            task_type = TASK_TYPES.get(step.task)
        except UnknownTaskType as err:
            raise DescriptorError(str(err), source=source, step=step.name, field="task") from None
        try:
            task_type.parse_config(step.params)
        except ParameterError as err:
            raise DescriptorError(str(err), source=source, step=step.name, field="params") from None
    trigger = d.trigger
    if trigger.kind == "calendar" and not trigger.cron:
        raise DescriptorError(
            "a calendar trigger needs a cron expression", source=source, field="trigger.cron"
        )
    if trigger.kind == "data" and not trigger.data_type:
        raise DescriptorError(
            "a data trigger needs the data_type it waits for",
            source=source,
            field="trigger.data_type",
        )
