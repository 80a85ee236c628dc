"""Rendering for the terminal: tables that read like the seed's console, or JSON."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Piped output (logs, files) gets a wide fixed width instead of Rich's 80 columns.
# Markup is off: what we print comes from the database and from tasks, and "[x]" in
# it must print as written; colour goes through Text objects instead.
console = Console(width=None if sys.stdout.isatty() else 200, markup=False)
err_console = Console(stderr=True)

STATUS_STYLE = {
    "SUCCESS": "green",
    "UP": "green",
    "RUNNING": "cyan",
    "QUEUED": "blue",
    "WAITING": "dim",
    "NEW": "blue",
    "SKIPPED": "yellow",
    "PARTIALLYSUCCESS": "yellow",
    "FAILED": "red",
    "UPSTREAM_FAILED": "red",
    "DOWN": "red",
    "CANCELLED": "magenta",
    "AVAILABLE": "green",
    "RETRACTED": "red",
    "DELETED": "dim",
    "MISSING": "red",
    "CORRUPT": "red",
    "DEFINED": "blue",
    "OK": "green",
    "ERROR": "red",
    "DONE": "green",
    "PARTIAL": "yellow",
    "REGISTERED": "green",
    "DUPLICATE": "dim",
    "QUARANTINED": "red",
}


def when(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def status(text: str) -> Text:
    return Text(text, style=STATUS_STYLE.get(text, ""))


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        t.add_column(column)
    for row in rows:
        # Cells are text, never markup: a task's error may contain "[/]".
        t.add_row(*(v if isinstance(v, Text) else Text("" if v is None else str(v)) for v in row))
    console.print(t)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            out[f.name] = _plain(getattr(value, f.name))
        if hasattr(value, "text") and "data_type" in out:
            out["text"] = value.text
        return out
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_plain(value), indent=2, default=str) + "\n")
