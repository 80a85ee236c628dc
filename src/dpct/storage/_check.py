"""The store check: do the product store and the ``datasets`` table agree?

Three kinds of disagreement are looked for:

- **orphans**: files under the store root that no dataset row points at: the ``.tmp`` of
  a write cut short (a worker or node killed while writing), the output of an attempt
  whose node died before committing it, a file whose row was marked DELETED just before
  a crash. No job reads them; they only take space.
- **missing**: rows that should have bytes (AVAILABLE, SUPERSEDED, RETRACTED) whose file
  is gone. Jobs reading them would fail.
- **corrupt**: rows whose file's size, or SHA-256, is not the registered one. Jobs
  reading them would compute with wrong data.

The listing and the hashing are plain I/O outside any transaction (a check of a large
store must never hold SQLite's write lock); each finding is confirmed again just before
it is reported or repaired, so a registration or a pruning that ran meanwhile is not
mistaken for a problem.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dpct.config import Settings
from dpct.errors import StorageError
from dpct.storage._database import Database
from dpct.storage._datasets import _dataset_row
from dpct.storage._events import add_events
from dpct.storage._records import (
    FILED_DATASET_STATES,
    LOST_DATASET_STATES,
    DatasetRow,
    DatasetState,
)
from dpct.storage._schema import datasets
from dpct.storage._store import TMP_SUFFIX, ProductStore, StoredFile, store_at, store_for

_BATCH = 5_000
"""Locations per IN list: SQLite allows 32,766 bound parameters in one statement."""


@dataclass(frozen=True, slots=True)
class OrphanFile:
    """A file in the store that no dataset row points at."""

    location: str
    bytes: int
    age_s: float | None
    """Seconds since it was last written; None where the store does not say."""
    partial: bool
    """A temporary file: a write that was cut short."""
    removed: bool = False


@dataclass(frozen=True, slots=True)
class BadDataset:
    """A dataset row whose file is missing, unreadable or not the registered bytes."""

    dataset_id: int
    data: str
    state: str
    """The row's state when it was checked."""
    location: str
    problem: str
    marked: str | None = None
    """The state the repair set (MISSING or CORRUPT); None when it was not repaired."""


@dataclass(slots=True)
class StoreCheckReport:
    root: str
    checked_at: float
    grace_s: float
    checksums: bool
    """Whether every file's SHA-256 was computed (else only sizes were compared)."""
    repair: bool
    files: int = 0
    datasets: int = 0
    orphans: list[OrphanFile] = field(default_factory=list)
    recent: list[OrphanFile] = field(default_factory=list)
    """Unregistered files younger than the grace period: maybe a registration in progress.
    Listed, never counted as a problem nor removed."""
    missing: list[BadDataset] = field(default_factory=list)
    corrupt: list[BadDataset] = field(default_factory=list)
    unreadable: list[BadDataset] = field(default_factory=list)
    """Files that could not be read (permissions, an object store's error): never repaired."""

    @property
    def clean(self) -> bool:
        """Nothing was found: the store and the database agree."""
        return not (self.orphans or self.missing or self.corrupt or self.unreadable)

    @property
    def unresolved(self) -> int:
        """Problems found and not repaired (0 when clean, or when the repair fixed all)."""
        return (
            sum(not o.removed for o in self.orphans)
            + sum(b.marked is None for b in (*self.missing, *self.corrupt))
            + len(self.unreadable)
        )


def check_store(
    db: Database,
    settings: Settings,
    *,
    repair: bool = False,
    grace_s: float = 3600.0,
    checksums: bool = True,
    now: float | None = None,
) -> StoreCheckReport:
    """Compare the product store at ``settings.store_root`` with the datasets table.

    With ``repair``, orphans older than ``grace_s`` are deleted and rows whose file is
    missing or corrupt are marked MISSING or CORRUPT (each with a ``dataset.missing`` or
    ``dataset.corrupt`` event), which takes them out of every job's inputs.

    Why a grace period: a file is written before its row is inserted (a row must never
    point at nothing), so a file that is seconds old and has no row yet is most likely a
    job's output or a pulled file whose registration is about to commit. Only a file
    that has waited longer than any registration takes (a job's output is registered
    within a lease, ``DPCT_LEASE_S``, of being written, or rejected and deleted) is
    certainly abandoned. ``grace_s=0`` is for a store nothing writes to (after a
    restore, at the end of a test).
    """
    now = time.time() if now is None else now
    store = store_at(settings.store_root)
    report = StoreCheckReport(
        root=store.root_url, checked_at=now, grace_s=grace_s, checksums=checksums, repair=repair
    )
    # Files first, rows second: a file registered in between is then seen with its row.
    try:
        found = {f.location: f for f in store.files()}
    except OSError as err:
        raise StorageError(f"cannot list the product store {store.root_url}: {err}") from err
    with db.read() as conn:
        rows = _rows_with_files(conn)
    report.files, report.datasets = len(found), len(rows)

    referenced = {r.location for r in rows}
    for location, stored in sorted(found.items()):
        if location not in referenced:
            orphan = _orphan(stored, now)
            # An unknown age counts as young, unless no grace is asked for at all.
            old = grace_s <= 0 or (orphan.age_s is not None and orphan.age_s >= grace_s)
            (report.orphans if old else report.recent).append(orphan)

    for row in rows:
        if row.state in FILED_DATASET_STATES:
            _check_row(store, row, found.get(row.location), checksums, report)
    _drop_changed(db, report)

    if repair:
        report.orphans = _remove_orphans(db, store, report.orphans)
        marked = db.run_write(lambda conn: _mark_lost(conn, report, now))
        report.missing = [_marked(b, marked, DatasetState.MISSING) for b in report.missing]
        report.corrupt = [_marked(b, marked, DatasetState.CORRUPT) for b in report.corrupt]
        if report.orphans or marked:
            db.run_write(lambda conn: _log_repair(conn, report, now))
    return report


def _rows_with_files(conn: Connection) -> list[DatasetRow]:
    query = sa.select(datasets).where(
        datasets.c.state.in_(sorted(FILED_DATASET_STATES | LOST_DATASET_STATES))
    )
    return [_dataset_row(r) for r in conn.execute(query)]


def _orphan(stored: StoredFile, now: float) -> OrphanFile:
    age = None if stored.modified is None else max(0.0, now - stored.modified)
    return OrphanFile(stored.location, stored.bytes, age, stored.location.endswith(TMP_SUFFIX))


def _check_row(
    store: ProductStore,
    row: DatasetRow,
    stored: StoredFile | None,
    checksums: bool,
    report: StoreCheckReport,
) -> None:
    """File the row under missing, corrupt or unreadable if its file is not right."""

    def bad(problem: str) -> BadDataset:
        return BadDataset(row.id, row.spec.text, row.state, row.location, problem)

    try:
        home = store if stored is not None or _under(store, row.location) else None
        home = home or store_for(row.location)  # a row from another store (older root)
        if stored is not None:
            size = stored.bytes
        elif home.exists(row.location):  # written after the listing, or in another store
            size = home.size(row.location)
        else:
            report.missing.append(bad("no file"))
            return
        if size != row.bytes:
            report.corrupt.append(bad(f"{size} bytes, registered {row.bytes}"))
        elif checksums and (actual := home.checksum(row.location)) != row.checksum:
            report.corrupt.append(bad(f"SHA-256 {actual}, registered {row.checksum}"))
    except (OSError, ValueError) as err:
        report.unreadable.append(bad(f"cannot be read: {err}"))


def _under(store: ProductStore, location: str) -> bool:
    return location.startswith(store.root_url.rstrip("/") + "/") or location.startswith(
        store.root + "/"
    )


def _drop_changed(db: Database, report: StoreCheckReport) -> None:
    """Forget rows that left their state while they were checked (pruned, retracted)."""
    bad = [*report.missing, *report.corrupt, *report.unreadable]
    if not bad:
        return
    with db.read() as conn:
        states = _states(conn, [b.dataset_id for b in bad])

    def same(items: list[BadDataset]) -> list[BadDataset]:
        return [b for b in items if states.get(b.dataset_id) == b.state]

    report.missing = same(report.missing)
    report.corrupt = same(report.corrupt)
    report.unreadable = same(report.unreadable)


def _states(conn: Connection, ids: list[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for first in range(0, len(ids), _BATCH):
        query = sa.select(datasets.c.id, datasets.c.state).where(
            datasets.c.id.in_(ids[first : first + _BATCH])
        )
        out.update((int(i), s) for i, s in conn.execute(query))
    return out


def _registered(conn: Connection, locations: Iterable[str]) -> set[str]:
    """Which of these locations a dataset row (not DELETED) points at now."""
    wanted = sorted(set(locations))
    out: set[str] = set()
    for first in range(0, len(wanted), _BATCH):
        query = sa.select(datasets.c.location).where(
            datasets.c.location.in_(wanted[first : first + _BATCH]),
            datasets.c.state != DatasetState.DELETED,
        )
        out.update(conn.execute(query).scalars())
    return out


def _remove_orphans(
    db: Database, store: ProductStore, orphans: list[OrphanFile]
) -> list[OrphanFile]:
    """Delete the orphans that are still unregistered; the others are no orphans."""
    if not orphans:
        return []
    with db.read() as conn:
        registered = _registered(conn, (o.location for o in orphans))
    out = []
    for orphan in orphans:
        if orphan.location in registered:
            continue
        try:
            store.delete(orphan.location)
        except OSError:  # left unresolved: the check exits 1 and the next one retries
            out.append(orphan)
            continue
        out.append(
            OrphanFile(orphan.location, orphan.bytes, orphan.age_s, orphan.partial, removed=True)
        )
    return out


def _mark_lost(conn: Connection, report: StoreCheckReport, now: float) -> set[int]:
    """Mark missing and corrupt rows, each only if still in the state it was checked in."""
    marked: set[int] = set()
    events = []
    for items, state in (
        (report.missing, DatasetState.MISSING),
        (report.corrupt, DatasetState.CORRUPT),
    ):
        for b in items:
            changed = conn.execute(
                sa.update(datasets)
                .where(datasets.c.id == b.dataset_id, datasets.c.state == b.state)
                .values(state=state)
            ).rowcount
            if changed:
                marked.add(b.dataset_id)
                events.append(
                    (
                        "DSS",
                        f"dataset.{state.lower()}",
                        "dataset",
                        b.dataset_id,
                        f"{b.location}: {b.problem} (was {b.state}); found by the store check",
                    )
                )
    add_events(conn, now, events)
    return marked


def _log_repair(conn: Connection, report: StoreCheckReport, now: float) -> None:
    """One event per repair that changed something: what the check deleted stays traceable."""
    removed = [o for o in report.orphans if o.removed]
    message = (
        f"{len(removed)} orphan files removed ({sum(o.bytes for o in removed)} bytes)"
        f"{''.join(f', {o.location}' for o in removed[:20])}{', …' if len(removed) > 20 else ''}"
        f"; {sum(b.marked is not None for b in report.missing)} datasets marked MISSING, "
        f"{sum(b.marked is not None for b in report.corrupt)} CORRUPT"
    )
    add_events(conn, now, [("DSS", "store.repaired", "store", report.root[-128:], message)])


def _marked(b: BadDataset, marked: set[int], state: str) -> BadDataset:
    if b.dataset_id not in marked:
        return b
    return BadDataset(b.dataset_id, b.data, b.state, b.location, b.problem, marked=state)
