"""``dpct demo``: a simulated mission day through the whole framework on this machine."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.text import Text

from dpct.cli._context import database, settings
from dpct.cli._options import above, at_least
from dpct.cli._progress import watch
from dpct.cli._render import console, status, table, when
from dpct.datamodel import NS_PER_DAY
from dpct.errors import BadInput, DpctError
from dpct.processing import LocalCluster
from dpct.processing import service as processing_service
from dpct.storage import upgrade
from dpct.workflows import obmt_ns_from_unix, service


def demo(
    day: Annotated[
        int | None, typer.Option(help="OBMT day (default: yesterday's).", callback=at_least(0))
    ] = None,
    nodes: Annotated[
        int, typer.Option(help="Processing nodes to start.", callback=at_least(1))
    ] = 2,
    slots: Annotated[int, typer.Option(help="Slots per node.", callback=at_least(1))] = 2,
    timeout: Annotated[
        float, typer.Option(help="Give up after this many seconds.", callback=above(0))
    ] = 300.0,
) -> None:
    """Run the demo chain (ingest → daily processing → report) with real nodes."""
    s = settings()
    db = database(check_schema=False, create=True)
    upgrade(db)
    service.install_pipeline(db, "demo")
    # Each day's chain fires once (its triggers remember the day): run again, get a new day.
    done = {
        v.workflow.spec.start_ns // NS_PER_DAY
        for v in service.workflows(db, name="DemoIngestAutWorkflow", how_many=100_000)
    }
    if day is None:
        day = obmt_ns_from_unix(time.time()) // NS_PER_DAY - 1
        while day in done:
            day += 1
    elif day in done:
        raise BadInput(f"the demo already ran for OBMT day {day}; pick another --day")
    console.print(f"dpct demo: home {s.home}, database {db.url.render_as_string()}, OBMT day {day}")
    first_id = service.submit(db, "DemoIngestAutWorkflow", service.day_spec("demo_raw", day))
    with LocalCluster(nodes=nodes, slots=slots, log_dir=s.home / "logs" / "processes"):
        views = watch(
            db,
            lambda: [
                v for v in reversed(service.workflows(db, how_many=50)) if v.workflow.id >= first_id
            ],
            expected=3,
            timeout=timeout,
        )
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
                v.workflow.spec.short,
                v.workflow.trigger,
            )
            for v in views
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
        Text.assemble(
            ("demo succeeded", "green"),
            ": try `dpct workflow list`, `dpct job list ID`, `dpct events`, "
            "`dpct lineage SOLUTIONID`",
        )
    )
