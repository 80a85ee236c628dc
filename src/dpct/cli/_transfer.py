"""``dpct transfer``: pull deliveries in, push products out, watch a drop folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

import dpct.transfer as dts
from dpct.cli._context import database, settings
from dpct.cli._render import console, emit_json, err_console, table, when
from dpct.datamodel import NS_PER_S, parse_duration_ns
from dpct.errors import BadInput, PartialTransfer, TransferError
from dpct.storage import TransferFileRow, TransferStatus

transfer_app = typer.Typer(help="Transfers (DTS): pull deliveries in, push products out.")

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Workers = Annotated[int, typer.Option("--workers", "-w", help="Files fetched at once.")]
Retries = Annotated[int, typer.Option(help="Retries of a cut or failed download.")]

_STYLE = {
    "DONE": "green",
    "REGISTERED": "green",
    "SENT": "green",
    "RUNNING": "cyan",
    "DUPLICATE": "dim",
    "PARTIAL": "yellow",
    "QUARANTINED": "yellow",
    "FAILED": "red",
}


def _status(text: str) -> Text:
    return Text(text, style=_STYLE.get(text, ""))


class _Bar:
    """A Rich bar over bytes for :class:`dpct.transfer.Progress` (thread-safe)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def begin(self, delivery: str, files: int, nbytes: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"{delivery} ({files} files)", total=nbytes)

    def advance(self, nbytes: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, nbytes)

    def waiting(self, message: str) -> None:
        # Printed even off a terminal: a pull that seems to hang says why, on stderr.
        err_console.print(message, markup=False, highlight=False, soft_wrap=True)

    def file_done(self, row: TransferFileRow) -> None:
        if row.status not in ("REGISTERED", "DUPLICATE", "SENT"):
            line = Text.assemble((row.status, _STYLE.get(row.status, "")), f" {row.name}: ")
            self.progress.console.print(line.append(row.reason))


@contextmanager
def _bar() -> Iterator[_Bar]:
    """A bar on stderr, drawn only on a terminal: stdout stays for the report or JSON."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, disable=not err_console.is_terminal) as p:
        yield _Bar(p)


def _report(report: dts.TransferReport, as_json: bool) -> None:
    if as_json:
        emit_json(report)
        return
    t = report.transfer
    rate = report.wire_bytes / report.seconds / 1e6 if report.seconds > 0 else 0.0
    console.print(
        Text.assemble(
            f"transfer {t.id} ({t.direction} {t.peer}): ",
            _status(t.status),
            f" — {t.message}; {report.wire_bytes} bytes in {report.seconds:.1f} s"
            f" ({rate:.0f} MB/s)",
        )
    )
    bad = [f for f in report.files if f.status not in ("REGISTERED", "DUPLICATE", "SENT")]
    if bad:
        table(
            "Files not taken",
            ["FILE", "TYPE", "STATUS", "REASON", "WHERE"],
            ((f.name, f.data_type, _status(f.status), f.reason, f.location) for f in bad),
        )


def _fail_if_failed(report: dts.TransferReport) -> None:
    """Exit 1 on FAILED, 6 on PARTIAL (see the exit codes in `dpct transfer pull --help`)."""
    if report.status == TransferStatus.FAILED:
        raise TransferError(f"transfer {report.id} FAILED: {report.transfer.message}")
    if report.status == TransferStatus.PARTIAL:
        raise PartialTransfer(
            f"transfer {report.id} PARTIAL: {report.transfer.message}; the quarantined files "
            f"are listed by `dpct transfer show {report.id}`"
        )


@transfer_app.command("pull")
def pull(
    source: Annotated[str, typer.Argument(help="Delivery folder: a path, http(s):// or s3://.")],
    workers: Workers = 4,
    retries: Retries = 5,
    as_json: Json = False,
) -> None:
    """Pull one delivery: verify, register, quarantine what is wrong, skip what is known.

    Waits for another running pull that holds some of the same files. Exit codes: 0
    DONE; 6 PARTIAL (some files quarantined); 1 FAILED (peer unreachable, a file not
    fetched, a full disk: the message says which); 3 the source does not exist; 2 bad
    input; 5 the database.
    """
    with _bar() as bar:
        report = dts.pull(
            database(), settings(), source, workers=workers, retries=retries, progress=bar
        )
    _report(report, as_json)
    _fail_if_failed(report)


@transfer_app.command("push")
def push(
    target: Annotated[str, typer.Argument(help="Delivery folder to create: a path or s3://.")],
    data_type: Annotated[str | None, typer.Option("--type", help="Only this data type.")] = None,
    since: Annotated[int, typer.Option(help="Only datasets with a larger id.")] = 0,
    dataset: Annotated[
        list[int] | None, typer.Option("--id", help="Only these dataset ids (repeatable).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Delivery name (default: folder name).")] = None,
    as_json: Json = False,
) -> None:
    """Deliver registered products to a folder, manifest last."""
    with _bar() as bar:
        report = dts.push(
            database(),
            settings(),
            target,
            data_type=data_type,
            since_id=since,
            dataset_ids=dataset or None,
            name=name,
            progress=bar,
        )
    _report(report, as_json)
    _fail_if_failed(report)


@transfer_app.command("watch")
def watch(
    source: Annotated[
        str, typer.Argument(help="Folder of deliveries: a path, http(s):// or s3://.")
    ],
    every: Annotated[str, typer.Option(help="Polling period, e.g. 30s, 5m.")] = "60s",
    once: Annotated[bool, typer.Option(help="Poll once and exit.")] = False,
    workers: Workers = 4,
    retries: Retries = 5,
    as_json: Json = False,
) -> None:
    """Pull each new delivery sub-folder once, polling until Ctrl-C."""
    # A bare number is seconds here (parse_duration_ns reads it as nanoseconds).
    every_s = float(every) if every.strip().isdigit() else parse_duration_ns(every) / NS_PER_S
    if every_s <= 0:
        raise BadInput(f"--every must be a positive duration, not {every!r}")
    seen: list[dts.TransferReport] = []

    def show(report: dts.TransferReport) -> None:
        if as_json:
            seen.append(report)
        else:
            _report(report, False)

    if not once and not as_json:
        console.print(f"watching {source} every {every}; Ctrl-C to stop")
    try:
        with _bar() as bar:
            dts.watch(
                database(),
                settings(),
                source,
                every_s=every_s,
                once=once,
                workers=workers,
                retries=retries,
                on_report=show,
                progress=bar,
            )
    except KeyboardInterrupt:
        if not as_json:
            console.print("stopped")
    if as_json:
        emit_json(seen)


@transfer_app.command("list")
def list_(
    direction: Annotated[str | None, typer.Option(help="pull or push.")] = None,
    status: Annotated[str | None, typer.Option(help="DONE, PARTIAL, FAILED, RUNNING.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 50,
    as_json: Json = False,
) -> None:
    """Transfers, newest first."""
    rows = dts.transfers(database(), direction=direction, status=status, limit=limit)
    if as_json:
        emit_json(rows)
        return
    table(
        "Transfers",
        [
            "ID",
            "DIR",
            "STATUS",
            "PEER",
            "FILES",
            "BYTES",
            "REGISTERED",
            "DUPLICATES",
            "QUARANTINED",
            "STARTED",
            "ENDED",
            "MESSAGE",
        ],
        (
            (
                t.id,
                t.direction,
                _status(t.status),
                t.peer,
                t.files,
                t.bytes,
                t.registered,
                t.duplicates,
                t.quarantined,
                when(t.started_at),
                when(t.ended_at),
                t.message,
            )
            for t in rows
        ),
    )


@transfer_app.command("show")
def show(transfer_id: int, as_json: Json = False) -> None:
    """A transfer's files (with why any was not taken) and the workflows it started."""
    view = dts.transfer(database(), transfer_id)
    if as_json:
        emit_json(view)
        return
    t = view.transfer
    console.print(
        Text.assemble(
            f"transfer {t.id}: {t.direction} {t.peer} ",
            _status(t.status),
            f" {when(t.started_at)} → {when(t.ended_at)}\n{t.message}",
        )
    )
    table(
        "Files",
        ["FILE", "TYPE", "BYTES", "STATUS", "DATASET", "REASON", "LOCATION"],
        (
            (f.name, f.data_type, f.bytes, _status(f.status), f.dataset_id, f.reason, f.location)
            for f in view.files
        ),
    )
    if view.workflows:
        table(
            "Workflows started by this transfer",
            ["ID", "NAME", "STATUS", "DATASPEC", "TRIGGER"],
            ((w.id, w.name, w.status, w.spec.short, w.trigger) for w in view.workflows),
        )
