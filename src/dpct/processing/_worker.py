"""Worker processes: long-lived children of a node that run one attempt at a time.

A worker only computes: it never touches the metadata database. A task that crashes
the interpreter or overruns its time limit takes down only its worker, which the node
kills and replaces.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from multiprocessing.connection import Connection

from dpct.processing._assignment import Assignment, run_assignment

_CTX = mp.get_context("spawn")
WORKER_NICENESS = 5


def _watch_parent(parent_pid: int) -> None:
    # A node killed with SIGKILL cannot stop its workers; they notice and leave.
    while True:
        if os.getppid() != parent_pid:
            os._exit(3)
        time.sleep(0.5)


def worker_main(conn: Connection, parent_pid: int) -> None:
    # A little less CPU priority than the node: handing a job to a worker then wakes it
    # without preempting the node, whose loop (heartbeats, leases) must stay responsive.
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM is meant for the node, which decides whether to drain; ignore it here.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    from dpct.tasks import load_entry_points

    load_entry_points()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        assert isinstance(message, Assignment)
        conn.send(run_assignment(message))


class Worker:
    """The node's handle on one worker process.

    A worker runs its assignments in order. It usually holds one; for short task types
    the node may queue a second behind it, so the worker never waits for the node's
    next transaction between two jobs of a few milliseconds.
    """

    def __init__(self) -> None:
        parent, child = _CTX.Pipe()
        self.conn = parent
        self.process = _CTX.Process(
            target=worker_main, args=(child, os.getpid()), daemon=True, name="dpct-worker"
        )
        self.process.start()
        child.close()
        self.queue: deque[tuple[Assignment, int]] = deque()
        self.started = 0.0

    @property
    def busy(self) -> bool:
        return bool(self.queue)

    @property
    def assignment(self) -> Assignment | None:
        """The assignment running now (the head of the queue)."""
        return self.queue[0][0] if self.queue else None

    @property
    def cores(self) -> int:
        return self.queue[0][1] if self.queue else 0

    def give(self, assignment: Assignment, cores: int) -> None:
        if not self.queue:
            self.started = time.monotonic()
        self.queue.append((assignment, cores))
        self.conn.send(assignment)

    def done(self) -> Assignment:
        """The head finished; the next queued one (if any) starts now."""
        finished, _ = self.queue.popleft()
        self.started = time.monotonic()
        return finished

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.kill()
