"""Recovery of transfers whose process died: FAILED, claims released, no stray files.

A pull writes a file's store location into its claim before moving it there, and drops
the claim in the transaction that registers the file. So after a crash (SIGKILL, power
cut, a node lost) every store file the dead pull had moved but not registered is named
by a claim: recovery deletes those files, then the claims. Staging files are left where
they are: the next pull that claims the same bytes adopts them and resumes.

Safe to run anywhere, any time, by several processes at once: each step is idempotent,
and a transfer is failed only by the one update that finds it still RUNNING.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dpct.storage import (
    ClaimKey,
    Connection,
    Database,
    TransferStatus,
    abandoned_claims,
    finish_transfer,
    is_registered_location,
    release_claims,
    running_transfers,
    store_for,
)
from dpct.transfer._owner import STALE_AFTER_S, owner_alive


@dataclass(slots=True)
class Recovery:
    """What :func:`recover_stale_transfers` did."""

    failed: list[int] = field(default_factory=list)
    """Transfers marked FAILED because their process is gone."""
    removed: list[str] = field(default_factory=list)
    """Store files a dead pull had moved in but not registered, now deleted."""
    released: int = 0
    """Claims given up."""


def recover_stale_transfers(
    db: Database,
    *,
    clock: Callable[[], float] = time.time,
    stale_after_s: float = STALE_AFTER_S,
) -> Recovery:
    """Mark RUNNING transfers whose process is gone FAILED and clean up after them.

    A process on this host is looked up by pid (and start time); one on another host is
    taken for dead after ``stale_after_s`` without a heartbeat. Claims of any transfer
    no longer RUNNING (these, or one whose own clean-up was cut short) are released
    after their unregistered store files are deleted.
    """
    now = clock()
    out = Recovery()
    with db.read() as conn:
        running = running_transfers(conn)
    for row in running:
        if owner_alive(row, now, stale_after_s):
            continue
        gone = f"process {row.pid} on {row.host or 'an unknown host'}"
        message = (
            f"{row.message + '; ' if row.message else ''}{gone} is gone (killed or lost): "
            "marked FAILED; pull the delivery again"
        )

        def fail(conn: Connection, transfer_id: int = row.id, message: str = message) -> bool:
            return finish_transfer(
                conn, transfer_id, status=TransferStatus.FAILED, now=now, message=message
            )

        if db.run_write(fail):
            out.failed.append(row.id)
    with db.read() as conn:
        claims = abandoned_claims(conn)
    for claim in claims:
        if claim.location:
            with db.read() as conn:
                registered = is_registered_location(conn, claim.location)
            if not registered:
                store = store_for(claim.location)
                if store.delete(claim.location):
                    out.removed.append(claim.location)
                if store.local:
                    store.delete(claim.location + ".tmp")  # cut short inside the move
        key: ClaimKey = (claim.checksum, claim.data_type)

        def release(
            conn: Connection, transfer_id: int = claim.transfer_id, key: ClaimKey = key
        ) -> int:
            return release_claims(conn, transfer_id, [key])

        out.released += db.run_write(release)
    return out
