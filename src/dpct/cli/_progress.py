"""A live progress bar over the jobs of one or more workflows."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dpct.cli._render import console
from dpct.errors import DpctError
from dpct.storage import Database
from dpct.workflows import service

ENDED = {"SUCCESS", "FAILED", "PARTIALLYSUCCESS", "CANCELLED"}
JOB_DONE = {"SUCCESS", "SKIPPED", "FAILED", "UPSTREAM_FAILED", "CANCELLED"}


def watch(
    db: Database,
    views: Callable[[], list[service.WorkflowView]],
    *,
    expected: int = 1,
    timeout: float = 3600.0,
    quiet: bool = False,
) -> list[service.WorkflowView]:
    """Show jobs done / total until ``expected`` workflows exist and all have ended.

    ``quiet`` waits without the bar, which would break JSON on stdout.
    """
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False, disable=quiet) as progress:
        bar = progress.add_task("jobs", total=None)
        while time.monotonic() < deadline:
            current = views()
            total = sum(v.workflow.n_jobs for v in current)
            done = sum(n for v in current for k, n in v.counts.items() if k in JOB_DONE)
            names = ", ".join(f"{v.workflow.name}:{v.workflow.status}" for v in current)
            progress.update(bar, total=total, completed=done, description=f"jobs [{names}]")
            if len(current) >= expected and all(v.workflow.status in ENDED for v in current):
                return current
            time.sleep(0.3)
    raise DpctError(f"gave up waiting after {timeout:g} s; see `dpct workflow list`")
