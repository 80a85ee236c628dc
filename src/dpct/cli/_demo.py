"""``dpct demo``: a simulated mission day through the whole framework on this machine."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dpct.cli._context import database, settings
from dpct.cli._render import console, status, table, when
from dpct.datamodel import NS_PER_DAY
from dpct.errors import DpctError
from dpct.pipelines.demo import WORKFLOWS
from dpct.processing import service as processing_service
from dpct.processing._local import LocalCluster
from dpct.storage import upgrade
from dpct.workflows import obmt_ns_from_unix, service

ENDED = {"SUCCESS", "FAILED", "PARTIALLYSUCCESS", "CANCELLED"}


def demo(
    day: Annotated[int | None, typer.Option(help="OBMT day (default: yesterday's).")] = None,
    nodes: Annotated[int, typer.Option(help="Processing nodes to start.")] = 2,
    slots: Annotated[int, typer.Option(help="Slots per node.")] = 2,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 300.0,
) -> None:
    """Run the demo chain (ingest → daily processing → report) with real nodes."""
    s = settings()
    db = database(check_schema=False)
    upgrade(db)
    for path in sorted(WORKFLOWS.glob("*.toml")):
        service.register_descriptor(db, path)
    if day is None:
        day = obmt_ns_from_unix(time.time()) // NS_PER_DAY - 1
    console.print(f"dpct demo: home {s.home}, database {db.url.render_as_string()}, OBMT day {day}")
    first_id = service.submit(db, "DemoIngestAutWorkflow", service.day_spec("demo_raw", day))
    with LocalCluster(nodes=nodes, slots=slots, log_dir=s.home / "logs" / "processes"):
        _watch(db, first_id, expected=3, timeout=timeout)
        views = [v for v in service.workflows(db, how_many=50) if v.workflow.id >= first_id]
        nodes_now = processing_service.nodes(db)
    table(
        "Workflows",
        ["NAME", "ID", "STATUS", "PERSISTENCEID", "JOBS", "DATASPEC", "TRIGGER"],
        (
            (
                v.workflow.name,
                v.workflow.id,
                status(v.workflow.status),
                v.workflow.persistence_id,
                v.workflow.n_jobs,
                v.workflow.spec.text,
                v.workflow.trigger,
            )
            for v in reversed(views)
        ),
    )
    table(
        "Node monitor",
        ["NAME", "STATUS", "DATE"],
        ((n.name, status(n.status), when(n.heartbeat_at)) for n in nodes_now),
    )
    bad = [v for v in views if v.workflow.status != "SUCCESS"]
    if bad or len(views) < 3:
        raise DpctError(
            f"demo did not succeed: {[(v.workflow.name, v.workflow.status) for v in bad]}"
        )
    console.print(
        "[green]demo succeeded[/]: try `dpct workflow list`, `dpct job list ID`, "
        "`dpct events`, `dpct lineage SOLUTIONID`"
    )


def _watch(db, first_id: int, *, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("jobs", total=None)
        while time.monotonic() < deadline:
            views = [v for v in service.workflows(db, how_many=50) if v.workflow.id >= first_id]
            total = sum(v.workflow.n_jobs for v in views)
            done = sum(
                n
                for v in views
                for k, n in v.counts.items()
                if k in {"SUCCESS", "SKIPPED", "FAILED", "UPSTREAM_FAILED", "CANCELLED"}
            )
            names = ", ".join(f"{v.workflow.name}:{v.workflow.status}" for v in reversed(views))
            progress.update(bar, total=total, completed=done, description=f"jobs [{names}]")
            if len(views) >= expected and all(v.workflow.status in ENDED for v in views):
                return
            time.sleep(0.3)
    raise DpctError(f"demo timed out after {timeout:g} s; see `dpct workflow list`")
