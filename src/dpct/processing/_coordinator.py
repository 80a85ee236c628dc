"""The coordinator: reaps expired leases, watches components, and runs the manager role.

It holds two node-monitor rows: ``pfs.coordinator`` (leases, retries, node monitor) and
``rms.manager`` (calendar and data triggers), as the seed's console shows them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable

from dpct.config import Settings
from dpct.storage import (
    Completion,
    Database,
    commit_completions,
    expired_leases,
    mark_silent_nodes_down,
    node_down,
    node_heartbeat,
    node_up,
)
from dpct.workflows import fire_calendar_triggers, fire_data_triggers

log = logging.getLogger("dpct.coordinator")

COORDINATOR = "pfs.coordinator"
MANAGER = "rms.manager"


def reap_expired_leases(db: Database, settings: Settings, now: float) -> list[int]:
    """Treat every RUNNING job whose lease ran out as a failed attempt (retried if allowed)."""

    def work(conn) -> list[int]:
        expired = expired_leases(conn, now)
        completions = [
            Completion(
                job_id=job_id,
                token=token,
                outcome="failed",
                error_class="LeaseExpired",
                error_message=f"node {node} stopped renewing the lease",
                retry=True,
            )
            for job_id, token, node in expired
        ]
        result = commit_completions(
            conn, completions, now=now, retry_backoff_s=settings.retry_backoff_s
        )
        return result.accepted

    return db.run_write(work)


def tick(db: Database, settings: Settings, now: float) -> dict[str, int]:
    """One coordinator turn; returns what it did (for logs and tests)."""
    reaped = reap_expired_leases(db, settings, now)

    def monitor(conn) -> list[str]:
        node_heartbeat(conn, COORDINATOR, now)
        node_heartbeat(conn, MANAGER, now)
        return mark_silent_nodes_down(conn, now, settings.node_down_after_s)

    down = db.run_write(monitor)
    db.checkpoint()
    calendar = fire_calendar_triggers(db, now)
    data = fire_data_triggers(db, now)
    return {"reaped": len(reaped), "down": len(down), "calendar": len(calendar), "data": len(data)}


class Coordinator:
    def __init__(
        self, db: Database, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.stop_requests = 0

    def request_stop(self, *_: object) -> None:
        self.stop_requests += 1

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        now = self.clock()

        def up(conn) -> None:
            for name, role in ((COORDINATOR, "coordinator"), (MANAGER, "manager")):
                node_up(
                    conn,
                    name=name,
                    role=role,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    slots=0,
                    now=now,
                )

        self.db.run_write(up)
        try:
            while not self.stop_requests:
                started = time.monotonic()
                try:
                    done = tick(self.db, self.settings, self.clock())
                    if any(done.values()):
                        log.info("coordinator tick: %s", done)
                except Exception:  # keep coordinating; the error is logged
                    log.exception("coordinator tick failed")
                elapsed = time.monotonic() - started
                time.sleep(max(0.0, self.settings.coordinator_tick_s - elapsed))
        finally:

            def down(conn) -> None:
                for name in (COORDINATOR, MANAGER):
                    node_down(conn, name, self.clock(), "stopped")

            self.db.run_write(down)
