"""Riding through a metadata-database outage in a long-running process (node, coordinator).

A PostgreSQL restart, a dropped connection or a session the server ended must not stop
a node (its workers keep running; their results wait to be committed) or a coordinator:
they log one line, wait with a growing back-off, and carry on once the database
answers. Only errors that waiting cannot fix (wrong settings, an outdated schema) stop
them; :func:`dpct.storage.is_outage` tells which is which.
"""

from __future__ import annotations

import logging
import time

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 5.0
REMIND_EVERY_S = 60.0
"""While an outage lasts, one reminder line this often (never a line per retry)."""


class Outage:
    """The state of one process's current outage, if any: back-off and log lines."""

    def __init__(self, who: str, log: logging.Logger) -> None:
        self.who = who
        self.log = log
        self.since: float | None = None
        self.retry_at = 0.0
        self.backoff = FIRST_BACKOFF_S
        self.reminded = 0.0

    @property
    def down(self) -> bool:
        return self.since is not None

    def wait_s(self) -> float:
        """How long until the next try (0 when not in an outage, or when due)."""
        return max(0.0, self.retry_at - time.monotonic()) if self.down else 0.0

    def failed(self, err: BaseException, doing: str) -> float:
        """Note a failed try; returns the seconds to wait before the next one.

        ``doing`` says what the process does meanwhile, for the operator.
        """
        now = time.monotonic()
        if self.since is None:
            self.since, self.reminded, self.backoff = now, now, FIRST_BACKOFF_S
            self.log.warning(
                "%s: the metadata database is unreachable: %s; %s, retrying until it answers",
                self.who,
                _first_line(err),
                doing,
            )
        else:
            self.backoff = min(MAX_BACKOFF_S, self.backoff * 2)
            if now - self.reminded >= REMIND_EVERY_S:
                self.reminded = now
                self.log.warning(
                    "%s: the metadata database is still unreachable after %.0f s: %s",
                    self.who,
                    now - self.since,
                    _first_line(err),
                )
        self.retry_at = now + self.backoff
        return self.backoff

    def recovered(self) -> None:
        if self.since is not None:
            self.log.info(
                "%s: the metadata database answers again after %.1f s",
                self.who,
                time.monotonic() - self.since,
            )
            self.since = None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
