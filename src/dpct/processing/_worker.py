"""Worker processes: long-lived children of a node that run one attempt at a time.

A worker only computes: it never touches the metadata database, except for a system
task's attempt, which gets the node's database opened for it (and disposed after it).
A task that crashes
the interpreter or overruns its time limit takes down only its worker, which the node
kills and replaces.

A worker whose node dies (SIGKILL, a crash) must not finish its attempt: nobody would
commit it, so its output would stay in the store unregistered, and reporting to the
dead node would end in a ``BrokenPipeError`` traceback. The kernel tells the worker at
once (Linux ``PR_SET_PDEATHSIG``, with a polling thread as the fallback elsewhere);
the signal raises :class:`NodeGone` in the attempt, which deletes what the attempt
wrote and leaves quietly.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from types import FrameType

from dpct.processing._assignment import Assignment, NodeGone, discard_attempt, run_assignment

_CTX = mp.get_context("spawn")
WORKER_NICENESS = 5
NODE_GONE_SIGNAL = signal.SIGUSR1
"""Sent to a worker when its node dies. Not SIGTERM or SIGINT: a service manager or a
terminal sends those to the whole process group, and they are meant for the node."""
PR_SET_PDEATHSIG = 1
POLL_S = 0.5
LAST_RESORT_S = 30.0
"""How long a worker told its node is gone may take to stop (a task inside one long C
call only notices after it) before it is ended outright."""

_gone = False
_parent_pid = 0


def _on_node_gone(_signum: int, _frame: FrameType | None) -> None:
    global _gone
    # The kernel also signals when the node's *thread* that started this worker ends;
    # only a new parent (init, a subreaper) means the node itself is gone.
    if not _gone and os.getppid() != _parent_pid:
        _gone = True  # once: the clean-up that follows must not be interrupted again
        raise NodeGone


def _die_with_parent() -> None:
    """Have the kernel send NODE_GONE_SIGNAL the moment the node exits (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(NODE_GONE_SIGNAL), 0, 0, 0)


def _watch_parent(parent_pid: int) -> None:
    """The fallback where the kernel does not tell: poll for a new parent (init)."""
    while os.getppid() == parent_pid:
        time.sleep(POLL_S)
    os.kill(os.getpid(), NODE_GONE_SIGNAL)
    time.sleep(LAST_RESORT_S)
    os._exit(3)


def worker_main(conn: Connection, parent_pid: int) -> None:
    global _gone, _parent_pid
    _parent_pid = parent_pid
    # Until the handler is installed below, NODE_GONE_SIGNAL's default action ends the
    # worker at once, which is right: it has not started an attempt yet.
    _die_with_parent()
    # A little less CPU priority than the node: handing a job to a worker then wakes it
    # without preempting the node, whose loop (heartbeats, leases) must stay responsive.
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM is meant for the node, which decides whether to drain; ignore it here.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from dpct.tasks import load_entry_points

    load_entry_points()
    signal.signal(NODE_GONE_SIGNAL, _on_node_gone)
    try:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
        if os.getppid() == parent_pid:  # else the node died before the kernel was asked
            _serve(conn)
    except NodeGone:
        pass  # raised outside an attempt (waiting for work): nothing to clean up
    finally:
        # From here on the worker is leaving anyway: a late signal must not interrupt
        # the interpreter's exit with a traceback. (A plain assignment runs before any
        # pending Python signal handler can.)
        _gone = True
        signal.signal(NODE_GONE_SIGNAL, signal.SIG_IGN)


def _serve(conn: Connection) -> None:
    """Run assignments until the node says stop or is gone."""
    global _gone
    running: Assignment | None = None
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if message is None:
                return
            assert isinstance(message, Assignment)
            running = message
            completion = run_assignment(message)
            try:
                conn.send(completion)
            except NodeGone:
                # The report may have reached the node before it died, and been
                # committed: keep the files (`dpct store check` finds them otherwise).
                running = None
                raise
            running = None  # reported: from now on its files are the node's
    except (NodeGone, OSError):  # OSError: BrokenPipeError, the node closed the pipe
        _gone = True  # first: a late NODE_GONE_SIGNAL must not cut the clean-up short
        if running is not None:
            discard_attempt(running)


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

    def give(self, assignment: Assignment, cores: int) -> bool:
        """Send an assignment; False when the worker is gone (it was never queued)."""
        try:
            self.conn.send(assignment)
        except OSError:  # BrokenPipeError: the worker died (killed) since the last look
            return False
        if not self.queue:
            self.started = time.monotonic()
        self.queue.append((assignment, cores))
        return True

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
