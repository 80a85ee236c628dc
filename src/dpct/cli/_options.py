"""Range checks for numeric command-line values, shared by every command.

A Typer callback rather than ``min=``: Click's range error is a multi-line usage panel,
while dpct's errors are one line (``error: --slots must be at least 1, not 0``, exit 2)
that scripts can grep, like every other refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import typer

from dpct.errors import BadInput

Number = int | float
Check = Callable[[typer.CallbackParam, Number | None], Number | None]


def _name(param: typer.CallbackParam) -> str:
    """``--slots`` for an option, ``PRIORITY`` for an argument: what the user typed."""
    if param.opts and param.opts[0].startswith("-"):
        return max(param.opts, key=len)
    return (getattr(param, "metavar", None) or param.name or "value").upper()


def at_least(low: Number, high: Number | None = None) -> Check:
    """Refuse values below ``low`` (or above ``high``); ``None`` (not given) passes."""

    def check(param: typer.CallbackParam, value: Number | None) -> Number | None:
        if value is not None and (value < low or (high is not None and value > high)):
            bound = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
            raise BadInput(f"{_name(param)} must be {bound}, not {value:g}")
        return value

    return check


def above(low: Number) -> Check:
    """Refuse values not strictly greater than ``low`` (durations, timeouts)."""

    def check(param: typer.CallbackParam, value: Number | None) -> Number | None:
        if value is not None and value <= low:
            raise BadInput(f"{_name(param)} must be greater than {low:g}, not {value:g}")
        return value

    return check


def one_of(kind: str, values: Iterable[str]) -> Callable[..., str | None]:
    """Refuse a value outside ``values`` (case-insensitive), naming them all: a status
    filter that matches nothing would print an empty table instead of an error."""
    known = [str(v) for v in values]

    def check(param: typer.CallbackParam, value: str | None) -> str | None:
        if value is None or value.upper() in known:
            return None if value is None else value.upper()
        raise BadInput(f"{_name(param)}: unknown {kind} {value!r}; use one of {', '.join(known)}")

    return check


PRIORITY_HELP = "Priority, ≥ 0 (default 0; higher runs first)."
