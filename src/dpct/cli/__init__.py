"""The ``dpct`` command: one entry point for operators, scientists and developers."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from dpct.cli._backup import backup_app, restore
from dpct.cli._data import closure_app, retract, run_app
from dpct.cli._demo import demo
from dpct.cli._ops import coordinator_app, datasets, db_app, events, lineage, node_app, tasks
from dpct.cli._render import err_console
from dpct.cli._sim import sim_app
from dpct.cli._store import store_app
from dpct.cli._transfer import transfer_app
from dpct.cli._workflow import job_app, workflow_app
from dpct.errors import DpctError

app = typer.Typer(
    name="dpct",
    help="dpct: a data processing center for a space mission's ground segment.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db_app, name="db")
app.add_typer(workflow_app, name="workflow")
app.add_typer(job_app, name="job")
app.add_typer(node_app, name="node")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(run_app, name="run")
app.add_typer(closure_app, name="closure")
app.add_typer(sim_app, name="sim")
app.add_typer(store_app, name="store")
app.add_typer(transfer_app, name="transfer")
app.add_typer(backup_app, name="backup")
app.command("lineage")(lineage)
app.command("events")(events)
app.command("tasks")(tasks)
app.command("datasets")(datasets)
app.command("retract")(retract)
app.command("demo")(demo)
app.command("restore")(restore)


def main() -> None:
    """Run the CLI, turning dpct errors into one red line and an exit code."""
    try:
        app()
    except DpctError as err:
        # One line whatever the terminal width (scripts grep it), and the message is
        # text, not markup: a step named "calib[v2]" must print as written.
        err_console.print(
            f"[red]error:[/] {escape(str(err))}", markup=True, highlight=False, soft_wrap=True
        )
        sys.exit(err.exit_code)
