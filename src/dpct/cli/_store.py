"""``dpct store``: the product store's retention rules and pruning."""

from __future__ import annotations

from typing import Annotated

import typer

from dpct.cli._context import database
from dpct.cli._render import console, emit_json, table
from dpct.errors import BadInput
from dpct.storage import service as storage_service

store_app = typer.Typer(help="The product store: retention per data type, pruning.")

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@store_app.command("retention")
def retention(as_json: Json = False) -> None:
    """List the retention rules (data types without one are kept forever)."""
    rules = storage_service.retention(database())
    if as_json:
        emit_json(rules)
        return
    table("retention", ["data type", "kept (days)"], sorted(rules.items()))


@store_app.command("retain")
def retain(
    data_type: str,
    days: Annotated[str, typer.Argument(help="Days after registration, or 'forever'.")],
) -> None:
    """Set how long a data type's files are kept."""
    if days == "forever":
        keep: float | None = None
    else:
        try:
            keep = float(days)
        except ValueError:
            raise BadInput(f"days must be a number or 'forever', not {days!r}") from None
    storage_service.set_retention_rule(database(), data_type, keep)
    console.print(f"{data_type}: kept {'forever' if keep is None else f'{keep:g} days'}")


@store_app.command("prune")
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what is due.")] = False,
    as_json: Json = False,
) -> None:
    """Delete the files of datasets past their type's retention."""
    due = storage_service.prune(database(), dry_run=dry_run)
    if as_json:
        emit_json(due)
        return
    verb = "due" if dry_run else "deleted"
    table(
        f"{len(due)} datasets {verb}",
        ["id", "data", "bytes", "location"],
        [(d.id, d.spec.text, d.bytes, d.location) for d in due],
    )
