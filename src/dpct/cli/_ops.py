"""``dpct db``, ``node``, ``coordinator``, ``lineage``, ``events``, ``tasks``."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from dpct.cli._context import database, settings
from dpct.cli._options import at_least
from dpct.cli._render import console, emit_json, status, table, when
from dpct.events import service as event_service
from dpct.processing import Coordinator, Node
from dpct.processing import service as processing_service
from dpct.storage import current_revision, downgrade, head_revision, upgrade
from dpct.storage import service as storage_service
from dpct.tasks import TASK_TYPES, load_entry_points
from dpct.workflows import service

db_app = typer.Typer(help="The metadata database: create, migrate, inspect.")
node_app = typer.Typer(help="Processing nodes: start one, list the node monitor.")
coordinator_app = typer.Typer(help="The coordinator (lease reaper, node monitor, triggers).")

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Limit = Annotated[int, typer.Option("--limit", "-n", help="How many rows.", callback=at_least(1))]


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Create or migrate the database to this dpct's schema."""
    s = settings()
    db = database(check_schema=False, create=True)
    before = _revision(db)
    after = upgrade(db, revision)
    where = db.url.render_as_string()
    console.print(f"database {where}: {before or 'empty'} → {after}")
    if db.is_sqlite:
        console.print(f"SQLite synchronous={s.sqlite_synchronous} (see docs/operations.md)")


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to ``revision`` ('base' empties it)."""
    db = database(check_schema=False)
    console.print(f"database now at {downgrade(db, revision)}")


@db_app.command("status")
def db_status(as_json: Json = False) -> None:
    """Where the database is and whether its schema is current."""
    db = database(check_schema=False)
    current, head = _revision(db), head_revision()
    info = {
        "url": db.url.render_as_string(),
        "backend": db.backend,
        "revision": current,
        "head": head,
        "current": current == head,
    }
    if as_json:
        emit_json(info)
        return
    for key, value in info.items():
        console.print(f"{key:>9}: {value}")


def _revision(db) -> str | None:
    with db.read() as conn:
        return current_revision(conn)


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


@node_app.command("start")
def node_start(
    name: Annotated[str, typer.Option(help="Node name, e.g. pr1 (shown as pfs.pr1).")],
    slots: Annotated[
        int, typer.Option(help="Worker slots (cores) this node offers.", callback=at_least(1))
    ] = 2,
) -> None:
    """Run a processing node until SIGTERM (first: drain; second: stop at once)."""
    _logging()
    full = name if "." in name else f"pfs.{name}"
    load_entry_points()  # a bad DPCT_TASK_MODULES stops the node here, not in each worker
    Node(database(), settings(), name=full, slots=slots).run()


@node_app.command("list")
def node_list(as_json: Json = False) -> None:
    """The node monitor: NAME, STATUS, DATE of last heartbeat."""
    rows = processing_service.nodes(database())
    if as_json:
        emit_json(rows)
        return
    table(
        "Node monitor",
        ["NAME", "STATUS", "DATE", "ROLE", "SLOTS", "HOST", "PID"],
        (
            (n.name, status(n.status), when(n.heartbeat_at), n.role, n.slots, n.host, n.pid)
            for n in rows
        ),
    )


@coordinator_app.command("start")
def coordinator_start(
    name: Annotated[
        str | None,
        typer.Option(
            help="Node-monitor name, e.g. coordinator2 (shown as pfs.coordinator2); "
            "default: the first free of pfs.coordinator, pfs.coordinator.2 …"
        ),
    ] = None,
) -> None:
    """Run a coordinator until SIGTERM: active, or standing by while another one is."""
    _logging()
    load_entry_points()  # a bad DPCT_TASK_MODULES stops it here, not at the first trigger
    Coordinator(database(), settings(), name=name).run()


def lineage(solution_id: int, as_json: Json = False) -> None:
    """A solution id's metadata, with its ancestors and descendants."""
    result = service.solution_lineage(database(), solution_id)
    if as_json:
        emit_json(result)
        return
    s = result.solution
    table(
        "Solution Id Metadata",
        [
            "ID",
            "INPUTSOLUTIONID",
            "OUTPUTSOLUTIONID",
            "INPUTDMTYPE",
            "OUTPUTDMTYPE",
            "GENERATIONTIME",
            "AUTOMATICALLYGENERATED",
            "SOFTWARE",
            "CONFIG",
        ],
        [
            (
                s.id,
                ",".join(map(str, s.input_solution_ids)),
                s.id,
                ",".join(sorted(set(s.input_types))),
                s.output_type,
                when(s.generation_time),
                s.automatically_generated,
                s.software_version,
                s.configuration_id,
            )
        ],
    )
    console.print(f"ancestors: {result.ancestors or 'none'}")
    console.print(f"descendants: {result.descendants or 'none'}")


def events(
    limit: Limit = 50,
    kind: Annotated[str | None, typer.Option(help="e.g. job.failed or 'job.*'.")] = None,
    object_type: Annotated[str | None, typer.Option("--object", help="workflow, job, ...")] = None,
    object_id: Annotated[str | None, typer.Option("--id")] = None,
    as_json: Json = False,
) -> None:
    """The event log, newest first."""
    rows = event_service.events(
        database(), limit=limit, kind=kind, object_type=object_type, object_id=object_id
    )
    if as_json:
        emit_json(rows)
        return
    table(
        "Events",
        ["ID", "TIME", "SUBSYSTEM", "KIND", "OBJECT", "MESSAGE"],
        (
            (e.id, when(e.time), e.subsystem, e.kind, f"{e.object_type} {e.object_id}", e.message)
            for e in rows
        ),
    )


def datasets(
    data_type: Annotated[str | None, typer.Option("--type", help="Only this data type.")] = None,
    limit: Limit = 50,
    as_json: Json = False,
) -> None:
    """Registered product datasets, newest first."""
    rows = storage_service.datasets(database(), data_type=data_type, limit=limit)
    if as_json:
        emit_json(rows)
        return
    table(
        "Datasets",
        [
            "ID",
            "TYPE",
            "DATASPEC",
            "ROWS",
            "BYTES",
            "SOLUTIONID",
            "STATE",
            "JOBID",
            "CREATED",
            "LOCATION",
        ],
        (
            (
                d.id,
                d.spec.data_type,
                d.spec.short,
                d.rows,
                d.bytes,
                d.solution_id,
                status(d.state),
                d.job_id,
                when(d.created_at),
                d.location,
            )
            for d in rows
        ),
    )


def tasks(as_json: Json = False) -> None:
    """Registered task types."""
    types = [TASK_TYPES.get(name) for name in TASK_TYPES.names()]
    if as_json:
        emit_json(
            [
                {
                    "name": t.name,
                    "version": t.version,
                    "inputs": dict(t.inputs),
                    "outputs": dict(t.outputs),
                    "cores": t.cores,
                    "max_attempts": t.max_attempts,
                    "time_limit_s": t.time_limit_s,
                    "max_running": t.max_running,
                }
                for t in types
            ]
        )
        return
    table(
        "Task types",
        ["NAME", "VERSION", "INPUTS", "OUTPUTS", "CORES", "ATTEMPTS", "TIME LIMIT", "MAX RUNNING"],
        (
            (
                t.name,
                t.version,
                ", ".join(
                    f"{k}:{v}"
                    + ("" if t.selections.get(k, "overlap") == "overlap" else f"@{t.selections[k]}")
                    for k, v in t.inputs.items()
                ),
                ", ".join(f"{k}:{v}" for k, v in t.outputs.items()),
                t.cores,
                t.max_attempts,
                t.time_limit_s,
                t.max_running,
            )
            for t in types
        ),
    )
