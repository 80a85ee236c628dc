"""Who runs a transfer, and whether that process still lives.

A transfer row names its process (host, pid, and the pid's start time, so that a pid
reused by another program after a reboot or a wrap-around is not taken for it). On the
same host that is checked directly; a transfer run on another host proves it lives by
its heartbeat, written every :data:`HEARTBEAT_S`, and counts as gone after
:data:`STALE_AFTER_S` of silence.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from dpct.storage import TransferRow

HEARTBEAT_S = 30.0
"""How often a running transfer notes in its row that it lives."""

STALE_AFTER_S = 600.0
"""Silence after which a transfer run on another host is taken for dead."""


@dataclass(frozen=True, slots=True)
class Owner:
    host: str
    pid: int
    pid_start: int | None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) from /proc, or None without /proc."""
    try:
        text = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - tiny, read at once
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces and ")"
    return fields[0], int(fields[19])


def this_process() -> Owner:
    stat = _proc_stat(os.getpid())
    return Owner(socket.gethostname(), os.getpid(), stat[1] if stat else None)


def _pid_alive(pid: int, pid_start: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc: the signal test is all there is
    state, started = stat
    if state in ("Z", "X"):
        return False  # killed, not yet reaped by its parent
    return pid_start is None or started == pid_start


def owner_alive(transfer: TransferRow, now: float, stale_after_s: float = STALE_AFTER_S) -> bool:
    """Whether the process running ``transfer`` may still be at work."""
    if transfer.host == socket.gethostname() and transfer.pid > 0:
        return _pid_alive(transfer.pid, transfer.pid_start)
    last = transfer.heartbeat_at if transfer.heartbeat_at is not None else transfer.started_at
    return now - last < stale_after_s
