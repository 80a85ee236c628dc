"""Run jobs inside this process, one at a time: the real lease/commit path without workers.

For tests that need determinism (a fake clock, exact start order) and for pipeline
developers debugging a task under a debugger. Production uses ``Node``.
"""

from __future__ import annotations

from collections.abc import Callable

from dpct.config import Settings
from dpct.processing._assignment import make_assignment, resolve_inputs, run_assignment
from dpct.processing._coordinator import tick
from dpct.storage import Database, commit_completions, lease_jobs


def run_inline(
    db: Database,
    settings: Settings,
    clock: Callable[[], float],
    *,
    node: str = "pfs.inline",
    slots: int = 1,
    max_jobs: int = 10_000,
    coordinate: bool = True,
) -> list[int]:
    """Lease and run jobs until none is ready; returns job ids in the order they started.

    With ``coordinate`` each round also runs a coordinator tick (triggers, reaping), so
    chained workflows proceed as they would with a coordinator process.
    """
    started: list[int] = []
    while len(started) < max_jobs:
        if coordinate:
            tick(db, settings, clock())

        def lease(conn):
            jobs = lease_jobs(
                conn,
                node=node,
                free_slots=slots,
                max_jobs=1,
                now=clock(),
                lease_s=settings.lease_s,
            )
            return [(job, resolve_inputs(conn, job)) for job in jobs]

        leased = db.run_write(lease)
        if not leased:
            if coordinate and any(tick(db, settings, clock()).values()):
                continue
            return started
        for job, inputs in leased:
            started.append(job.id)
            completion = run_assignment(make_assignment(job, inputs, settings))
            db.run_write(
                lambda conn, c=completion: commit_completions(
                    conn, [c], now=clock(), retry_backoff_s=settings.retry_backoff_s
                )
            )
    return started
