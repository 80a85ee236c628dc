"""Planning: expand a descriptor over a DataSpec into jobs and their dependencies.

A job of step B depends on every job of each step B depends on whose DataSpec
overlaps its own (in time, and in CCD/FoV when both are narrowed): per-day steps
chain day by day, and a one-job step waits for all of its upstream's partitions.
"""

from __future__ import annotations

import bisect
import json

from dpct.datamodel import NS_PER_DAY, DataSpec, parse_duration_ns
from dpct.storage import JobPlan
from dpct.tasks import TASK_TYPES
from dpct.workflows._descriptor import Descriptor, StepSpec


def partitions(spec: DataSpec, step: StepSpec) -> list[DataSpec]:
    """The DataSpecs of one step's jobs."""
    if step.partition == "one":
        chunks = [spec]
    elif step.partition == "day":
        chunks = spec.split(NS_PER_DAY)
    else:
        chunks = spec.split(parse_duration_ns(step.partition))
    ccds = step.ccds if step.ccds is not None else [spec.ccd]
    fovs = step.fovs if step.fovs is not None else [spec.fov]
    return [
        DataSpec(chunk.data_type, chunk.start_ns, chunk.end_ns, ccd, fov)
        for chunk in chunks
        for ccd in ccds
        for fov in fovs
    ]


def plan_jobs(descriptor: Descriptor, spec: DataSpec) -> list[JobPlan]:
    plans: list[JobPlan] = []
    by_step: dict[str, tuple[list[int], list[int], list[int]]] = {}
    for step in descriptor.step_order():
        task_type = TASK_TYPES.get(step.task)
        data_type = next(iter(task_type.inputs.values()), spec.data_type)
        params = json.dumps(step.params, sort_keys=True)
        indices: list[int] = []
        for part in partitions(spec.with_type(data_type), step):
            upstream: list[int] = []
            for dep in step.depends_on:
                starts, ends, idx = by_step[dep]
                lo = bisect.bisect_right(ends, part.start_ns)
                hi = bisect.bisect_left(starts, part.end_ns)
                upstream.extend(idx[k] for k in range(lo, hi) if plans[idx[k]].spec.overlaps(part))
            plans.append(
                JobPlan(
                    step=step.name,
                    task_type=step.task,
                    spec=part,
                    params=params,
                    cores=step.cores or task_type.cores,
                    max_attempts=task_type.max_attempts,
                    time_limit_s=task_type.time_limit_s,
                    upstream=tuple(upstream),
                )
            )
            indices.append(len(plans) - 1)
        indices.sort(key=lambda k: (plans[k].spec.start_ns, plans[k].spec.end_ns))
        by_step[step.name] = (
            [plans[k].spec.start_ns for k in indices],
            [plans[k].spec.end_ns for k in indices],
            indices,
        )
    return plans


def task_limits(descriptor: Descriptor) -> dict[str, int | None]:
    """Concurrency limits of the descriptor's task types (descriptor overrides code)."""
    limits: dict[str, int | None] = {}
    for step in descriptor.steps:
        limits[step.task] = TASK_TYPES.get(step.task).max_running
    limits.update(descriptor.max_running)
    return {t: n for t, n in limits.items() if n is not None}
