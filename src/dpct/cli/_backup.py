"""``dpct backup`` and ``dpct restore``: snapshots of the database and the product store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from dpct.cli._context import database, settings
from dpct.cli._render import console, emit_json, err_console, table, when
from dpct.storage import backup as backup_service

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class _CreateByDefault(TyperGroup):
    """``dpct backup DEST`` means ``dpct backup create DEST``."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["create", *args]
        return super().parse_args(ctx, args)


backup_app = typer.Typer(
    cls=_CreateByDefault,
    help="Back up the database and the product store: `dpct backup DEST`, `dpct backup list DEST`.",
    no_args_is_help=True,
)

Dest = Annotated[str, typer.Argument(help="A folder or URL (s3://bucket/backups) for backups.")]


@backup_app.command("create")
def create(dest: Dest, as_json: Json = False) -> None:
    """Snapshot the database, then copy the product files it registers (new ones only)."""
    result = backup_service.backup(database(), settings(), dest)
    if as_json:
        emit_json(result)
        return
    console.print(
        f"backup {result.url}: {result.database_kind} database at schema "
        f"{result.schema_revision}, snapshot {when(result.snapshot_at)} UTC; "
        f"{result.files} files ({result.bytes} bytes), {result.copied} copied "
        f"({result.bytes_copied} bytes), {result.reused} already in {dest}"
    )
    for m in result.missing:
        _warn(f"dataset {m.dataset_id} ({m.location}) not backed up: {m.reason}")


@backup_app.command("list")
def list_(dest: Dest, as_json: Json = False) -> None:
    """The backups in DEST, oldest first; INCOMPLETE ones (no manifest) cannot be restored."""
    rows = backup_service.list_backups(dest)
    if as_json:
        emit_json(rows)
        return
    table(
        f"Backups in {dest}",
        ["ID", "STATUS", "SNAPSHOT", "DATABASE", "SCHEMA", "FILES", "BYTES", "COPIED", "MISSING"],
        (
            (
                b.id,
                "COMPLETE" if b.complete else "INCOMPLETE",
                when(b.snapshot_at),
                b.database_kind,
                b.schema_revision,
                b.files,
                b.bytes,
                b.copied,
                b.missing,
            )
            for b in rows
        ),
    )


def restore(
    snapshot: Annotated[str, typer.Argument(help="A backup: DEST/<id> (see `dpct backup list`).")],
    home: Annotated[
        Path, typer.Option("--home", help="The new DPCT_HOME: a missing or empty folder.")
    ],
    database_url: Annotated[
        str,
        typer.Option(
            "--database-url", help="PostgreSQL backups: a new, empty database to restore into."
        ),
    ] = "",
    store_url: Annotated[
        str,
        typer.Option("--store-url", help="Product store root (default NEWHOME/products)."),
    ] = "",
    as_json: Json = False,
) -> None:
    """Restore a backup into a new DPCT_HOME, checking every file's sha256."""
    result = backup_service.restore(snapshot, home, database_url=database_url, store_url=store_url)
    if as_json:
        emit_json(result)
        return
    console.print(
        f"restored {result.backup_id} into {result.home}: {result.files} files "
        f"({result.bytes} bytes) verified under {result.store_root}, "
        f"{result.relocated} locations rewritten"
    )
    for m in result.lost:
        _warn(f"dataset {m.dataset_id} marked DELETED: {m.reason}")
    env = f"DPCT_HOME={result.home}"
    if result.database_url:
        env += f" DPCT_DATABASE_URL={result.database_url}"
    if store_url:
        env += f" DPCT_STORE_URL={store_url}"
    console.print(f"use it with: {env}")
    if result.needs_upgrade:
        console.print(f"the database is at schema {result.schema_revision}: run `dpct db upgrade`")


def _warn(text: str) -> None:
    """One line on stderr, printed as is: reasons quote paths and brackets."""
    err_console.print(f"warning: {text}", markup=False, highlight=False, soft_wrap=True)
