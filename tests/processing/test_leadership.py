"""The leadership lease and trigger firings, raced on the real databases (no processes)."""

from __future__ import annotations

import threading
import time

from dpct.storage import (
    Database,
    claim_firing,
    current_leader,
    get_cursor,
    hold_leadership,
    release_leadership,
    set_cursor,
)


def _hold(db: Database, token: str, now: float, lease_s: float = 10.0) -> bool:
    def work(conn) -> bool:
        held, _ = hold_leadership(
            conn, holder=f"pfs.{token}", token=token, host="h", pid=1, now=now, lease_s=lease_s
        )
        return held

    return db.run_write(work)


def test_one_holder_renews_and_another_takes_over_only_after_expiry_or_release(
    db: Database,
) -> None:
    assert _hold(db, "a", 100.0)
    assert not _hold(db, "b", 101.0)  # a's lease runs to 110
    assert _hold(db, "a", 105.0)  # renewed to 115
    assert not _hold(db, "b", 114.0)
    assert _hold(db, "b", 115.5)  # a fell silent: b takes over
    assert not _hold(db, "a", 116.0)  # and a is now refused
    with db.read() as conn:
        leader = current_leader(conn)
    assert leader is not None and (leader.holder, leader.since) == ("pfs.b", 115.5)
    assert db.run_write(lambda conn: release_leadership(conn, "b"))
    assert not db.run_write(lambda conn: release_leadership(conn, "b" * 2))
    assert _hold(db, "a", 117.0)  # released: taken at once


def test_racing_takeovers_give_one_holder(db: Database) -> None:
    results: dict[str, bool] = {}
    barrier = threading.Barrier(4)

    def contend(token: str) -> None:
        barrier.wait()
        results[token] = _hold(db, token, 200.0)

    threads = [threading.Thread(target=contend, args=(t,)) for t in "wxyz"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == [False, False, False, True]
    with db.read() as conn:
        leader = current_leader(conn)
    assert leader is not None and results[leader.token]


def test_a_firing_made_by_a_concurrent_transaction_is_not_an_error(db: Database) -> None:
    """The second of two racing claims waits for the first and finds the firing made."""
    first_claimed = threading.Event()
    outcome: dict[str, object] = {}

    def first() -> None:
        with db.write() as conn:
            outcome["first"] = claim_firing(conn, "D", "interval:1", 1.0)
            set_cursor(conn, "calendar:D", 1.0)
            first_claimed.set()
            time.sleep(0.5)  # the second claim is now waiting on this row (PostgreSQL)

    def second() -> None:
        first_claimed.wait()
        try:
            with db.write() as conn:
                outcome["second"] = claim_firing(conn, "D", "interval:1", 2.0)
                set_cursor(conn, "calendar:D", 2.0)
        except Exception as err:  # the defect: UniqueViolation on trigger_firings
            outcome["second"] = err

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(outcome["first"], int)
    assert outcome["second"] is None
    with db.read() as conn:
        assert get_cursor(conn, "calendar:D") == 2.0
        assert claim_firing(conn, "D", "interval:2", 3.0) is not None
