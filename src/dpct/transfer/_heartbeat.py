"""A running transfer's heartbeat: how a transfer shows other hosts that it lives."""

from __future__ import annotations

import threading

from dpct.errors import DpctError
from dpct.storage import Database, beat_transfer
from dpct.transfer._report import Clock


class Heartbeat:
    """Beats a running transfer's row every ``every_s`` so other hosts see it live.

    Stops once the row is no longer RUNNING (recovery took it for dead): the pull then
    finds its claims gone when it next stores or registers a file, and stops there.
    """

    def __init__(self, db: Database, transfer_id: int, clock: Clock, every_s: float) -> None:
        self.db, self.transfer_id, self.clock, self.every_s = db, transfer_id, clock, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dts-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                alive = self.db.run_write(
                    lambda conn: beat_transfer(conn, self.transfer_id, self.clock())
                )
            except DpctError:
                continue  # the database is away for a moment; the pull will notice too
            if not alive:
                return
