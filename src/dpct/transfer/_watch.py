"""Watch: poll a folder of deliveries and pull each new sealed one exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from dpct.config import Settings
from dpct.errors import BadInput
from dpct.storage import Database, pulled_peers
from dpct.transfer._peers import open_peer
from dpct.transfer._pull import Pull
from dpct.transfer._report import Clock, Progress, TransferReport


def poll(
    db: Database,
    settings: Settings,
    source: str | Path,
    *,
    workers: int = 4,
    retries: int = 5,
    backoff_s: float = 0.5,
    progress: Progress | None = None,
    clock: Clock = time.time,
) -> list[TransferReport]:
    """Pull every sealed delivery sub-folder of ``source`` not already pulled, in name order.

    A delivery counts as pulled once a pull of its folder URL ended DONE or PARTIAL; a
    FAILED one is tried again, and an unsealed one (no manifest yet) is left for later.
    """
    root = open_peer(source)
    children = [root.child(name) for name in root.children()]
    with db.read() as conn:
        done = pulled_peers(conn, [c.url for c in children])
    reports = []
    for child in children:
        if child.url in done:
            continue
        pulling = Pull(
            db, settings, child, workers, retries, backoff_s, progress, clock, skip_unsealed=True
        )
        report = pulling.run()  # None: not sealed yet, or not a delivery
        if report is not None:
            reports.append(report)
    return reports


def watch(
    db: Database,
    settings: Settings,
    source: str | Path,
    *,
    every_s: float = 60.0,
    once: bool = False,
    workers: int = 4,
    retries: int = 5,
    backoff_s: float = 0.5,
    on_report: Callable[[TransferReport], None] | None = None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    clock: Clock = time.time,
) -> list[TransferReport]:
    """Poll ``source`` every ``every_s`` seconds, pulling each new delivery exactly once.

    With ``once`` it polls a single time and returns that pass's reports. Otherwise it
    runs until ``stop`` is set (or the caller is interrupted), handing each report to
    ``on_report`` and keeping none, so a watcher running for months holds no history.
    """
    if every_s <= 0:
        raise BadInput(f"the polling period must be positive, not {every_s} s")
    stop = stop or threading.Event()
    while True:
        reports = poll(
            db,
            settings,
            source,
            workers=workers,
            retries=retries,
            backoff_s=backoff_s,
            progress=progress,
            clock=clock,
        )
        if on_report is not None:
            for report in reports:
                on_report(report)
        if once:
            return reports
        if stop.wait(every_s):
            return []
