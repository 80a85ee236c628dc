"""A processing node: leases jobs, runs them in worker processes, reports back.

One loop per node. Each turn it collects finished attempts, then in one transaction
commits them (fenced by lease token) and leases work for the idle slots. Heartbeats
extend the leases it holds and tell it which jobs it lost (cancelled or reaped), whose
workers it kills. The first SIGTERM drains: no new leases, running jobs finish; the
second stops at once and hands the leases back.

Whenever the node kills a worker (crash, time limit, lost lease, stopping at once), it
deletes what that worker's unreported attempts wrote, finished files and ``.tmp``
alike: their reports never reached the database, so nothing else would.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.connection import wait

from dpct.config import Settings
from dpct.errors import DpctError
from dpct.processing._assignment import (
    Assignment,
    discard_attempt,
    discard_outputs,
    make_assignment,
    resolve_inputs,
)
from dpct.processing._outage import Outage
from dpct.processing._worker import Worker
from dpct.storage import (
    CommitResult,
    Completion,
    Connection,
    Database,
    LeasedJob,
    commit_completions,
    extend_leases,
    hand_back,
    is_outage,
    is_registered_location,
    lease_jobs,
    node_down,
    node_heartbeat,
    node_up,
)
from dpct.tasks import TASK_TYPES

log = logging.getLogger("dpct.node")


class Node:
    """A processing node named like the seed's ``pfs.pr1`` with ``slots`` worker slots."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        name: str,
        slots: int,
        poll_s: float = 0.05,
        batch_window_s: float = 0.002,
        short_job_s: float = 0.05,
        queue_depth: int = 8,
        max_commit_delay_s: float = 0.02,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if slots < 1:
            raise ValueError(f"a node needs at least one slot, got {slots}")
        self.db = db
        self.settings = settings
        self.name = name
        self.slots = slots
        self.poll_s = poll_s
        self.batch_window_s = batch_window_s
        self.short_job_s = short_job_s
        self.queue_depth = queue_depth
        self.max_commit_delay_s = max_commit_delay_s
        self.durations: dict[str, float] = {}
        self.stats: dict[str, float] = dict.fromkeys(
            ("transactions", "committed", "leased", "queued", "polls", "transaction_s", "wait_s"),
            0,
        )
        self.returned: list[tuple[int, str]] = []
        self.clock = clock
        self.workers: list[Worker] = []
        self.stop_requests = 0
        self.pending: list[Completion] = []
        self.outage = Outage(name, log)

    # ------------------------------------------------------------ signals

    def request_stop(self, *_: object) -> None:
        self.stop_requests += 1
        if self.stop_requests == 1:
            log.info("%s: SIGTERM, draining (send again to stop at once)", self.name)

    # ------------------------------------------------------------ main loop

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.workers = [Worker() for _ in range(self.slots)]
        self.db.run_write(
            lambda conn: node_up(
                conn,
                name=self.name,
                role="node",
                host=socket.gethostname(),
                pid=os.getpid(),
                slots=self.slots,
                now=self.clock(),
            )
        )
        next_heartbeat = 0.0
        idle_polls = 0
        try:
            while True:
                if self.stop_requests >= 2:
                    self._stop_now()
                    return
                draining = self.stop_requests == 1
                if self.outage.down:
                    # Workers keep running; collect their results while waiting to retry.
                    self._collect(timeout=min(self.outage.wait_s(), 0.5))
                    if self.outage.wait_s():
                        continue
                else:
                    self._collect(
                        timeout=self.batch_window_s if self.pending else self._wait_time(idle_polls)
                    )
                try:
                    now = self.clock()
                    if now >= next_heartbeat:
                        self._heartbeat(now)
                        next_heartbeat = now + self.settings.heartbeat_s
                    busy = [w for w in self.workers if w.busy]
                    if draining and not busy and not self.pending and not self.returned:
                        return
                    free = self.slots - sum(w.cores for w in busy)
                    want = 0 if draining else free
                    # Look for work when a worker is idle or runs its last queued short job.
                    starving = not draining and any(
                        not w.busy or (len(w.queue) == 1 and self._room(w)) for w in self.workers
                    )
                    if self._commit_due(draining) or (starving and self._work_available(now)):
                        leased = self._exchange(want, draining)
                        idle_polls = 0 if leased or self.pending else idle_polls + 1
                    elif not self.pending:
                        idle_polls += 1
                except Exception as err:
                    if not is_outage(err):
                        raise
                    self.outage.failed(err, "workers keep running and their results wait")
                    continue
                self.outage.recovered()
        finally:
            log.info("%s: stopping; %s", self.name, self.stats)
            for worker in self.workers:
                if worker.busy:  # only when the loop failed: nobody will commit its work
                    self._kill(worker)
                else:
                    worker.stop()
            try:
                self.db.run_write(lambda conn: node_down(conn, self.name, self.clock(), "stopped"))
            except Exception as err:
                if not is_outage(err):
                    raise
                log.warning(
                    "%s: could not record the stop, the metadata database is unreachable "
                    "(%s); the coordinator marks the node down once it is silent",
                    self.name,
                    err,
                )

    def _commit_due(self, draining: bool) -> bool:
        """Commit now, or let finished attempts gather into a bigger transaction?

        Now when a worker is idle or about to be (its last queued job is running), when
        a batch has gathered, when the oldest result has waited ``max_commit_delay_s``,
        or when stopping. Otherwise workers still have queued work, and one transaction
        for several results costs far less than one each.
        """
        if self.returned:
            return True
        if not self.pending:
            return False
        if draining or len(self.pending) >= self.slots * self.queue_depth // 2:
            return True
        if time.monotonic() - self.pending[0].received > self.max_commit_delay_s:
            return True
        return any(len(w.queue) <= 1 for w in self.workers)

    def _wait_time(self, idle_polls: int) -> float:
        # Poll fast while work flows, back off to a few polls a second when idle.
        return min(self.poll_s * (1 + idle_polls), 0.1)

    def _work_available(self, now: float) -> bool:
        from dpct.storage import has_ready_jobs

        self.stats["polls"] += 1
        with self.db.read() as conn:
            return has_ready_jobs(conn, now)

    # ------------------------------------------------------------ steps

    def _collect(self, timeout: float) -> None:
        """Gather finished attempts; replace crashed workers; enforce time limits."""
        busy = [w for w in self.workers if w.busy]
        if busy:
            handles = [w.conn for w in busy] + [w.process.sentinel for w in busy]
            started = time.perf_counter()
            ready = wait(handles, timeout=timeout)
            self.stats["wait_s"] += time.perf_counter() - started
            if ready and len(ready) < len(busy) and self.batch_window_s:
                # Short jobs finish close together: a moment's wait lets one transaction
                # commit several of them instead of one each.
                wait([h for h in handles if h not in ready], timeout=self.batch_window_s)
        elif timeout:
            time.sleep(timeout)
        for worker in list(self.workers):
            if not worker.busy:
                if not worker.process.is_alive():
                    self._replace(worker)
                continue
            while worker.busy and _readable(worker):
                try:
                    result = worker.conn.recv()
                except (EOFError, OSError):
                    break
                if isinstance(result, Completion):
                    result.received = time.monotonic()
                    self.pending.append(result)
                    self._timed(worker.assignment, time.monotonic() - worker.started)
                    worker.done()
            if not worker.busy:
                continue
            assignment = worker.assignment
            assert assignment is not None
            if not worker.process.is_alive():
                self.pending.append(
                    _failure(
                        assignment,
                        "WorkerCrashed",
                        f"worker process died with exit code {worker.process.exitcode}",
                    )
                )
                self._replace(worker)
                continue
            limit = TASK_TYPES.get(assignment.task_type).time_limit_s
            if limit is not None and time.monotonic() - worker.started > limit:
                self.pending.append(
                    _failure(
                        assignment,
                        "TimeLimitExceeded",
                        f"attempt ran past the task type's time limit of {limit:g} s; "
                        "its worker was killed",
                    )
                )
                self._replace(worker)

    def _timed(self, assignment: Assignment | None, seconds: float) -> None:
        """Keep a running mean of each task type's duration, to spot short ones."""
        if assignment is not None:
            last = self.durations.get(assignment.task_type, seconds)
            self.durations[assignment.task_type] = 0.8 * last + 0.2 * seconds

    def _short(self, task_type: str) -> bool:
        return self.durations.get(task_type, float("inf")) < self.short_job_s

    def _room(self, worker: Worker) -> int:
        """How many more short jobs may queue behind this worker's short, 1-core job."""
        head = worker.assignment
        if head is None or worker.cores != 1 or not self._short(head.task_type):
            return 0
        return max(0, self._depth(head.task_type) - len(worker.queue))

    def _depth(self, task_type: str) -> int:
        """Queue length for a short task type: about ``short_job_s`` of work, ≤ queue_depth."""
        mean = max(self.durations.get(task_type, self.short_job_s), 1e-6)
        return max(1, min(self.queue_depth, int(self.short_job_s / mean)))

    def _replace(self, worker: Worker) -> None:
        """Kill and replace a worker; jobs queued behind its current one go back unrun."""
        self.returned.extend((a.job_id, a.token) for a, _ in list(worker.queue)[1:])
        self._kill(worker)
        index = self.workers.index(worker)
        self.workers[index] = Worker()

    def _kill(self, worker: Worker) -> None:
        """Kill a worker and delete the files of the attempts it had not reported.

        Its queue holds the attempts whose reports the node has not received: one may
        have been writing (a ``.tmp``), one may have finished with its report still in
        the pipe. None can be committed any more, so none of their files may stay.
        """
        worker.kill()
        for assignment, _ in worker.queue:
            try:
                discard_attempt(assignment)
            except (OSError, DpctError) as err:  # `dpct store check` finds what is left
                log.warning(
                    "%s: could not delete the outputs of job %d's attempt %d: %s",
                    self.name,
                    assignment.job_id,
                    assignment.attempt,
                    err,
                )
        worker.queue.clear()

    def _held(self) -> list[tuple[int, str]]:
        return [(a.job_id, a.token) for w in self.workers for a, _ in w.queue]

    def _heartbeat(self, now: float) -> None:
        def work(conn) -> list[int]:
            node_heartbeat(conn, self.name, now)
            return extend_leases(conn, self._held(), now=now, lease_s=self.settings.lease_s)

        lost = set(self.db.run_write(work))
        for worker in list(self.workers):
            if worker.assignment and worker.assignment.job_id in lost:
                log.warning(
                    "%s: lost the lease of job %d; stopping it", self.name, worker.assignment.job_id
                )
                self._replace(worker)

    def _exchange(self, want: int, draining: bool = False) -> int:
        """One transaction: commit finished attempts, lease up to ``want`` slots of work.

        Workers running a short job (by this node's running mean of its task type) also
        get a second, short job queued behind it.
        """
        completions = self.pending
        returned = self.returned
        idle = [w for w in self.workers if not w.busy]
        queueable: list[Worker] = []

        def work(conn):
            now = self.clock()
            result = self._commit(conn, completions, now)
            if returned:
                hand_back(conn, returned, now)
            leased: list[LeasedJob] = []
            queued: list[LeasedJob] = []
            if want and idle:
                leased = lease_jobs(
                    conn,
                    node=self.name,
                    free_slots=want,
                    max_jobs=len(idle),
                    now=now,
                    lease_s=self.settings.lease_s,
                )
            if not draining:
                # Behind each short job (running, or just leased) more short jobs.
                heads = {id(w): job for w, job in zip(idle, leased, strict=False)}
                for w in self.workers:
                    head = heads.get(id(w))
                    if head is None:
                        room = self._room(w)
                    elif head.cores == 1 and self._short(head.task_type):
                        room = self._depth(head.task_type) - 1
                    else:
                        room = 0
                    queueable.extend([w] * room)
            if queueable:
                queued = lease_jobs(
                    conn,
                    node=self.name,
                    free_slots=len(queueable),
                    now=now,
                    lease_s=self.settings.lease_s,
                    accept=lambda task_type: self._short(task_type),
                )
            inputs = {job.id: resolve_inputs(conn, job) for job in leased + queued}
            return result, leased, queued, inputs

        started = time.perf_counter()
        result, leased, queued, inputs = self.db.run_write(work)
        self.stats["transaction_s"] += time.perf_counter() - started
        self.stats["transactions"] += 1
        self.stats["committed"] += len(result.accepted)
        self.stats["leased"] += len(leased)
        self.stats["queued"] += len(queued)
        self.pending = []
        self.returned = []
        self._discard_rejected(completions, result)
        for job, worker in zip(leased, idle, strict=False):
            self._give(worker, make_assignment(job, inputs[job.id], self.settings), job.cores)
        for job, worker in zip(queued, queueable, strict=False):
            self._give(worker, make_assignment(job, inputs[job.id], self.settings), job.cores)
        return len(leased) + len(queued)

    def _give(self, worker: Worker, assignment: Assignment, cores: int) -> None:
        """Hand a job to a worker; one that died since the last look gets it back unrun.

        The job never started, so it goes back to the queue without counting an attempt;
        the dead worker is replaced by the next collect (and an attempt it was running
        fails as WorkerCrashed there, as for any crash).
        """
        if not worker.give(assignment, cores):
            log.warning(
                "%s: a worker died before it got job %d; handing the job back",
                self.name,
                assignment.job_id,
            )
            self.returned.append((assignment.job_id, assignment.token))

    def _commit(self, conn: Connection, completions: list[Completion], now: float) -> CommitResult:
        """Commit finished attempts; a rejected one whose outputs are registered was
        committed already (by a transaction whose answer a dropped connection lost, then
        retried): it is not rejected, and its files stay."""
        result = commit_completions(
            conn, completions, now=now, retry_backoff_s=self.settings.retry_backoff_s
        )
        if result.rejected:
            rejected = set(result.rejected)
            done = {
                c.job_id
                for c in completions
                if c.job_id in rejected
                and c.outputs
                and all(is_registered_location(conn, o.location) for o in c.outputs)
            }
            if done:
                result = CommitResult(sorted({*result.accepted, *done}), sorted(rejected - done))
        return result

    def _discard_rejected(self, completions: list[Completion], result: CommitResult) -> None:
        rejected = set(result.rejected)
        for completion in completions:
            if completion.job_id in rejected:
                log.warning(
                    "%s: completion of job %d rejected: its lease is no longer ours",
                    self.name,
                    completion.job_id,
                )
                discard_outputs(completion)

    def _stop_now(self) -> None:
        """Kill busy workers, hand their jobs back, and commit what had already finished.

        Attempts that had already finished are committed: left alone, their leases
        would expire, the jobs would run again and their files would stay unregistered.
        """
        held = self._held() + self.returned
        for worker in self.workers:
            if worker.busy:
                self._kill(worker)
        completions = self.pending

        def work(conn: Connection) -> CommitResult:
            now = self.clock()
            result = self._commit(conn, completions, now)
            hand_back(conn, held, now)
            return result

        try:
            result = self.db.run_write(work)
        except Exception as err:
            if not is_outage(err):
                raise
            log.warning(
                "%s: stopped at once, the metadata database is unreachable (%s); its %d "
                "leases expire and those jobs are retried",
                self.name,
                err,
                len(held) + len(completions),
            )
            return
        self.pending, self.returned = [], []
        self._discard_rejected(completions, result)
        log.info(
            "%s: stopped at once; handed back %d jobs, committed %d finished ones",
            self.name,
            len(held),
            len(result.accepted),
        )


def _readable(worker: Worker) -> bool:
    try:
        return worker.conn.poll()
    except (EOFError, OSError):
        return False


def _failure(a: Assignment, error_class: str, message: str) -> Completion:
    return Completion(
        job_id=a.job_id,
        token=a.token,
        outcome="failed",
        error_class=error_class,
        error_message=message,
        retry=True,
        log_path=a.log_path,
        task_type=a.task_type,
    )
