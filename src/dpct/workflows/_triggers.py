"""Calendar and data triggers, evaluated by the manager role on every tick.

Each firing is claimed under a unique (descriptor, key) in the same transaction that
creates its workflow, so a trigger fires at most once per key even with two managers
or a crash between ticks.
"""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import croniter

from dpct.datamodel import DataSpec, parse_duration_ns
from dpct.storage import (
    DATA_CURSOR,
    Database,
    DatasetRow,
    active_descriptors,
    claim_firing,
    coverage_gaps,
    datasets_after,
    get_cursor,
    record_firing_workflow,
    set_cursor,
)
from dpct.workflows._descriptor import Descriptor
from dpct.workflows._obmt import obmt_ns_from_unix
from dpct.workflows.service import create_workflow, descriptor_of


def fire_calendar_triggers(db: Database, now: float) -> list[int]:
    """Start the workflows of every cron tick passed since the last evaluation.

    A descriptor seen for the first time starts from ``now``: history is caught up with
    ``dpct workflow backfill``, never by surprise.
    """
    started: list[int] = []
    with db.read() as conn:
        rows = [r for r in active_descriptors(conn)]
    for row in rows:
        descriptor = descriptor_of(row)
        if descriptor.trigger.kind != "calendar":
            continue

        def work(conn, row=row, d=descriptor) -> list[int]:
            name = f"calendar:{d.name}"
            last = get_cursor(conn, name)
            if last is None:
                set_cursor(conn, name, now)
                return []
            out = []
            ticks = croniter(d.trigger.cron, datetime.fromtimestamp(last, UTC))
            while True:
                tick = ticks.get_next(float)
                if tick > now:
                    break
                spec = _calendar_spec(d, tick)
                firing = claim_firing(conn, d.name, f"interval:{spec.start_ns}", now)
                if firing is not None:
                    wf = create_workflow(
                        conn, row, spec, trigger=f"calendar {d.trigger.cron}", now=now
                    )
                    record_firing_workflow(conn, firing, wf)
                    out.append(wf)
                set_cursor(conn, name, tick)
            return out

        started.extend(db.run_write(work))
    return started


def _calendar_spec(d: Descriptor, tick_unix: float) -> DataSpec:
    span = parse_duration_ns(d.trigger.span)
    end = obmt_ns_from_unix(tick_unix) - parse_duration_ns(d.trigger.lag)
    end -= end % span
    return DataSpec(d.data_type, end - span, end)


def fire_data_triggers(db: Database, now: float, *, batch: int = 1000) -> list[int]:
    """Start workflows for datasets registered since the last evaluation."""
    started: list[int] = []
    while True:

        def work(conn) -> tuple[list[int], int]:
            position = int(get_cursor(conn, DATA_CURSOR) or 0)
            new = datasets_after(conn, position, limit=batch)
            if not new:
                return [], 0
            out = []
            listeners = [(row, descriptor_of(row)) for row in active_descriptors(conn)]
            listeners = [(row, d) for row, d in listeners if d.trigger.kind == "data"]
            for dataset in new:
                for row, d in listeners:
                    if d.trigger.data_type != dataset.spec.data_type:
                        continue
                    out.extend(_fire_for_dataset(conn, row, d, dataset, now))
            set_cursor(conn, DATA_CURSOR, new[-1].id)
            return out, len(new)

        out, seen = db.run_write(work)
        started.extend(out)
        if seen < batch:
            return started


def _fire_for_dataset(conn, row, d: Descriptor, dataset: DatasetRow, now: float) -> list[int]:
    if d.trigger.mode == "dataset":
        firing = claim_firing(conn, d.name, f"dataset:{dataset.id}", now)
        if firing is None:
            return []
        spec = DataSpec(
            d.data_type,
            dataset.spec.start_ns,
            dataset.spec.end_ns,
            dataset.spec.ccd,
            dataset.spec.fov,
        )
        wf = create_workflow(
            conn,
            row,
            spec,
            trigger=f"data {dataset.spec.data_type} #{dataset.id}",
            now=now,
            transfer_id=dataset.transfer_id,
        )
        record_firing_workflow(conn, firing, wf)
        return [wf]
    # Interval mode: every interval this dataset touches that is now fully covered.
    length = parse_duration_ns(d.trigger.interval)
    out = []
    first = dataset.spec.start_ns - dataset.spec.start_ns % length
    for start in range(first, dataset.spec.end_ns, length):
        interval = DataSpec(dataset.spec.data_type, start, start + length)
        narrowed = (
            [DataSpec(interval.data_type, start, start + length, ccd) for ccd in d.trigger.ccds]
            if d.trigger.ccds
            else [interval]
        )
        if any(coverage_gaps(conn, part) for part in narrowed):
            continue
        firing = claim_firing(conn, d.name, f"interval:{start}", now)
        if firing is None:
            continue
        wf = create_workflow(
            conn,
            row,
            interval.with_type(d.data_type),
            trigger=f"data {dataset.spec.data_type} interval complete",
            now=now,
            transfer_id=dataset.transfer_id,
        )
        record_firing_workflow(conn, firing, wf)
        out.append(wf)
    return out
