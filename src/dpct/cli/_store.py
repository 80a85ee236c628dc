"""``dpct store``: the product store's retention rules, pruning and consistency check."""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Annotated

import typer

from dpct.cli._context import database, settings
from dpct.cli._render import console, emit_json, status, table
from dpct.datamodel import NS_PER_S, parse_duration_ns
from dpct.errors import BadInput
from dpct.storage import service as storage_service
from dpct.transfer import recover_stale_transfers

store_app = typer.Typer(help="The product store: retention per data type, pruning, checking.")

PROBLEMS_LEFT = 1
"""``dpct store check``'s exit code when it found problems that are still there."""

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


def _seconds(text: str, option: str) -> float:
    """A duration option: ``1h``, ``30m``, ``90s``; a bare number is seconds."""
    stripped = text.strip()
    try:
        if re.fullmatch(r"-?\d+(\.\d+)?", stripped):
            seconds = float(stripped)
        else:
            seconds = parse_duration_ns(stripped) / NS_PER_S
    except BadInput:
        seconds = -1.0
    if seconds < 0:
        raise BadInput(f"{option} must be a duration ≥ 0 such as 1h, 10m or 0, not {text!r}")
    return seconds


@store_app.command("check")
def check(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Delete orphans older than --grace; mark rows with a missing or corrupt "
            "file MISSING or CORRUPT.",
        ),
    ] = False,
    grace: Annotated[
        str,
        typer.Option(
            help="Unregistered files younger than this may be registrations in progress: "
            "listed, never counted nor removed (e.g. 1h, 10m, 0)."
        ),
    ] = "1h",
    fast: Annotated[
        bool, typer.Option("--fast", help="Compare sizes only, not SHA-256 checksums.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Check that the product store and the datasets agree: orphan files, missing files,
    corrupt files. Exits 1 when problems were found and are not repaired."""
    grace_s = _seconds(grace, "--grace")
    # A pull killed mid-delivery holds claims on store files it never registered; its
    # own recovery removes exactly those, whatever their age, before orphans are judged.
    recovered = recover_stale_transfers(database())
    if recovered.failed and not as_json:
        console.print(
            f"transfers {', '.join(map(str, recovered.failed))}: process gone, marked FAILED; "
            f"{len(recovered.removed)} unregistered files of theirs removed"
        )
    report = storage_service.check_store(
        database(), settings(), repair=repair, grace_s=grace_s, checksums=not fast
    )
    if as_json:
        emit_json({**asdict(report), "clean": report.clean, "unresolved": report.unresolved})
    else:
        _show(report)
    if report.unresolved:
        raise typer.Exit(PROBLEMS_LEFT)


def _show(report: storage_service.StoreCheckReport) -> None:
    how = "SHA-256 and size" if report.checksums else "size only"
    console.print(f"store {report.root}: {report.files} files, {report.datasets} datasets ({how})")
    if report.orphans or report.recent:
        table(
            f"{len(report.orphans)} orphan files (no dataset row), "
            f"{len(report.recent)} younger than the grace period",
            ["location", "bytes", "age (s)", "kind", "action"],
            [
                (
                    o.location,
                    o.bytes,
                    "?" if o.age_s is None else f"{o.age_s:.0f}",
                    "partial write" if o.partial else "file",
                    "removed" if o.removed else ("kept (recent)" if o in report.recent else ""),
                )
                for o in (*report.orphans, *report.recent)
            ],
        )
    bad = [
        *(("missing", b) for b in report.missing),
        *(("corrupt", b) for b in report.corrupt),
        *(("unreadable", b) for b in report.unreadable),
    ]
    if bad:
        table(
            f"{len(bad)} datasets whose file is not right",
            ["id", "data", "state", "problem", "detail", "location", "marked"],
            [
                (b.dataset_id, b.data, status(b.state), kind, b.problem, b.location, b.marked)
                for kind, b in bad
            ],
        )
    if report.clean:
        console.print("clean: every file is registered and every dataset's file is intact")
    elif report.unresolved:
        hint = "" if report.repair else "; `dpct store check --repair` fixes what it can"
        console.print(f"{report.unresolved} problems left{hint}")
    else:
        console.print("repaired: every problem found was fixed")
