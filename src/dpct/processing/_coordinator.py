"""The coordinator: reaps expired leases, watches components, and runs the manager role.

Several coordinators may run (on one host or several) for availability: one is active,
the others stand by, as the leadership lease in the database decides. Each has its own
node-monitor row (``pfs.coordinator``, ``pfs.coordinator.2`` …, ROLE ``coordinator``
or ``standby``); the active one also holds ``rms.manager`` (calendar and data
triggers), as the seed's console shows it. A standby takes over once the active one has
not renewed the lease for ``DPCT_NODE_DOWN_AFTER_S``, or at once when it stops cleanly.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from dpct.config import Settings
from dpct.errors import Conflict
from dpct.processing._assignment import Attempt, discard_attempt
from dpct.processing._outage import Outage
from dpct.storage import (
    Completion,
    Database,
    Leader,
    NodeRow,
    claim_node_name,
    commit_completions,
    expired_leases,
    get_job,
    hold_leadership,
    is_outage,
    mark_silent_nodes_down,
    node_down,
    node_heartbeat,
    node_up,
    release_leadership,
    set_node_role,
)
from dpct.workflows import fire_calendar_triggers, fire_data_triggers

log = logging.getLogger("dpct.coordinator")

COORDINATOR = "pfs.coordinator"
MANAGER = "rms.manager"
ACTIVE = "coordinator"
STANDBY = "standby"


def reap_expired_leases(db: Database, settings: Settings, now: float) -> list[int]:
    """Treat every RUNNING job whose lease ran out as a failed attempt (retried if allowed).

    The files a reaped attempt wrote are deleted once the verdict is committed: its node
    is gone or cut off (a SIGKILL between the worker's report and the node's commit, a
    database outage), so nothing else would, and each would stay an orphan until
    ``dpct store check --repair``. A node that was only paused and writes later has its
    completion refused by the fencing token, and deletes those files itself.
    """
    attempts: list[Attempt] = []

    def work(conn) -> list[int]:
        expired = expired_leases(conn, now)
        attempts.clear()
        for job_id, token, _ in expired:
            job = get_job(conn, job_id)
            if job is not None and token:
                attempts.append(
                    Attempt(
                        job_id, job.attempts, token, job.task_type, job.spec, settings.store_root
                    )
                )
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

    reaped = db.run_write(work)
    for attempt in attempts:
        if attempt.job_id in reaped:
            try:
                discard_attempt(attempt)
            except Exception:  # the store check's grace period still catches it
                log.warning("could not delete the files of expired job %s", attempt.job_id)
    return reaped


def tick(
    db: Database,
    settings: Settings,
    now: float,
    *,
    heartbeat: Sequence[str] = (COORDINATOR, MANAGER),
) -> dict[str, int]:
    """One active coordinator's turn; returns what it did (for logs and tests)."""
    reaped = reap_expired_leases(db, settings, now)

    def monitor(conn) -> list[str]:
        for name in heartbeat:
            node_heartbeat(conn, name, now)
        return mark_silent_nodes_down(conn, now, settings.node_down_after_s)

    down = db.run_write(monitor)
    db.checkpoint()
    calendar = fire_calendar_triggers(db, now)
    data = fire_data_triggers(db, now)
    return {"reaped": len(reaped), "down": len(down), "calendar": len(calendar), "data": len(data)}


class Coordinator:
    """One coordinator process: active while it holds the leadership lease, else standby.

    ``name`` (e.g. ``coordinator2``, shown as ``pfs.coordinator2``) is refused while a
    live coordinator holds it; without one, the first free of ``pfs.coordinator``,
    ``pfs.coordinator.2`` … is taken.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        name: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.stop_requests = 0
        self.wanted = COORDINATOR if name is None else name if "." in name else f"pfs.{name}"
        self.numbered = name is None
        self.name = self.wanted
        self.token = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.active: bool | None = None
        """Whether this coordinator held the lease at its last turn (None before the first)."""

    def request_stop(self, *_: object) -> None:
        self.stop_requests += 1

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.name = self.db.run_write(self._up)
        outage = Outage(self.name, log)
        try:
            while not self.stop_requests:
                started = time.monotonic()
                wait = 0.0
                try:
                    self.turn(self.clock())
                except Exception as err:  # keep coordinating; the error is logged
                    if is_outage(err):
                        wait = outage.failed(err, "coordinating again once it answers")
                    else:
                        log.exception("coordinator tick failed")
                else:
                    outage.recovered()
                elapsed = time.monotonic() - started
                time.sleep(max(wait, self.settings.coordinator_tick_s - elapsed))
        finally:
            try:
                self.db.run_write(self._down)
            except Exception as err:
                if not is_outage(err):
                    raise
                log.warning(
                    "%s: could not record the stop, the metadata database is unreachable "
                    "(%s); a standby takes over once the lease runs out",
                    self.name,
                    err,
                )

    def turn(self, now: float) -> None:
        """Renew or take the lease (or stand by), then, if active, do a coordinator tick."""
        held, before = self.db.run_write(lambda conn: self._lead(conn, now))
        if held != self.active:
            self.active = held
            if held:
                log.info("%s: now the active coordinator%s", self.name, _after(before, now))
            else:
                log.info("%s: standing by; %s", self.name, _describe(before))
        if held:
            done = tick(self.db, self.settings, self.clock(), heartbeat=())
            if any(done.values()):
                log.info("coordinator tick: %s", done)

    def _up(self, conn) -> str:
        now = self.clock()
        name, holder = claim_node_name(
            conn,
            self.wanted,
            numbered=self.numbered,
            now=now,
            silent_after_s=self.settings.node_down_after_s,
            gone=self._gone,
        )
        if holder is not None:
            raise Conflict(
                f"coordinator {name} already runs on {holder.host} pid {holder.pid} since "
                f"{_utc(holder.started_at)}; stop it, or start this one with another --name"
            )
        node_up(conn, name=name, role=STANDBY, host=self.host, pid=self.pid, slots=0, now=now)
        return name

    def _gone(self, row: NodeRow) -> bool:
        """A row left by a coordinator of this host whose process no longer exists."""
        if row.host != self.host:
            return False
        if row.pid == self.pid:
            return True
        try:
            os.kill(row.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _lead(self, conn, now: float) -> tuple[bool, Leader | None]:
        held, before = hold_leadership(
            conn,
            holder=self.name,
            token=self.token,
            host=self.host,
            pid=self.pid,
            now=now,
            lease_s=self.settings.node_down_after_s,
        )
        node_heartbeat(conn, self.name, now)
        if held and self.active is not True:
            set_node_role(conn, self.name, ACTIVE, now, f"{self.name} is the active coordinator")
            me = {"host": self.host, "pid": self.pid, "slots": 0, "now": now}
            node_up(conn, name=MANAGER, role="manager", **me)
        elif held:
            node_heartbeat(conn, MANAGER, now)
        elif self.active:
            set_node_role(conn, self.name, STANDBY, now, f"{self.name} lost the lease; standing by")
        return held, before

    def _down(self, conn) -> None:
        now = self.clock()
        if release_leadership(conn, self.token):
            node_down(conn, MANAGER, now, "stopped")
        node_down(conn, self.name, now, "stopped")


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _describe(leader: Leader | None) -> str:
    if leader is None:
        return "no active coordinator"
    return (
        f"the active coordinator is {leader.holder} on {leader.host} pid {leader.pid} since "
        f"{_utc(leader.since)}; taking over if it stops renewing its lease"
    )


def _after(before: Leader | None, now: float) -> str:
    if before is None:
        return ""
    if before.expires_at <= 0:
        return f" (after {before.holder} on {before.host} pid {before.pid}, which stopped)"
    return (
        f" (took over from {before.holder} on {before.host} pid {before.pid}, "
        f"silent for {now - before.expires_at:.1f} s past its lease)"
    )
