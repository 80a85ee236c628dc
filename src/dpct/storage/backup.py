"""DSS service functions: backups of the metadata database and the product store, and
restores of one into a new ``DPCT_HOME``.

A backup destination is a folder or an fsspec URL (``s3://bucket/backups``)::

    DEST/objects/sha256/ab/cdef…          product files by content, shared by all backups
    DEST/<UTC time>-<id>/database.*       the database snapshot (SQLite file or pg_dump)
    DEST/<UTC time>-<id>/manifest.json    written last: a backup without one is incomplete

Consistency: the database snapshot comes first, and the files copied are those it
registers (read from the snapshot, not the live database). A file registered later is
not needed; a file deleted between the snapshot and its copy (retention, closure,
retraction cleaning all mark the row DELETED before removing the file) is reported in
the manifest, and a restore marks its row DELETED with the reason. Products are
incremental: an object already in ``DEST/objects`` is not copied again. Every byte is
checked against the registry's sha256 when it is copied, in both directions.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from dpct import __version__
from dpct.checksums import sha256_file
from dpct.config import Settings
from dpct.errors import BadInput, Conflict, NotFound, StorageError
from dpct.storage._backup_db import (
    POSTGRES_DUMP,
    SQLITE_DUMP,
    DatabaseSnapshot,
    SnapshotFile,
    is_empty,
    mark_lost,
    relocate,
    restore_postgres,
    snapshot_database,
    states_now,
)
from dpct.storage._backup_files import (
    OBJECTS,
    ChecksumMismatch,
    copy_verified,
    existing_objects,
    object_path,
    relative_to_root,
    safe_relative,
    write_text,
)
from dpct.storage._database import Database
from dpct.storage._records import DatasetState
from dpct.storage._revisions import current_revision, head_revision
from dpct.storage._store import open_filesystem, store_at, store_for

MANIFEST = "manifest.json"
FORMAT = 1


@dataclass(frozen=True, slots=True)
class BackupFile:
    dataset_id: int
    path: str
    """Relative to the store root: where the restore puts it under the new root."""
    location: str
    """Where it was when the backup was made."""
    bytes: int
    sha256: str
    state: str


@dataclass(frozen=True, slots=True)
class MissingFile:
    dataset_id: int
    location: str
    reason: str


@dataclass(frozen=True, slots=True)
class BackupResult:
    id: str
    url: str
    database_kind: str
    schema_revision: str | None
    snapshot_at: float
    files: int
    bytes: int
    copied: int
    """Objects written by this backup (the rest were in DEST already)."""
    reused: int
    bytes_copied: int
    missing: list[MissingFile] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BackupSummary:
    id: str
    url: str
    complete: bool
    snapshot_at: float | None = None
    database_kind: str = ""
    schema_revision: str | None = None
    files: int = 0
    bytes: int = 0
    copied: int = 0
    missing: int = 0


@dataclass(frozen=True, slots=True)
class RestoreResult:
    backup_id: str
    home: str
    database_url: str
    """The restored database's URL (password hidden); empty for SQLite in ``home``."""
    store_root: str
    files: int
    bytes: int
    relocated: int
    lost: list[MissingFile]
    """Rows marked DELETED: files missing from the backup, or corrupt in it."""
    schema_revision: str | None
    needs_upgrade: bool


# ---------------------------------------------------------------- backup ----------
class Backup:
    """One backup, in the order that makes it consistent: ``snapshot``, ``copy_products``,
    ``seal``. ``run`` does all three; the steps are separate so that tests can act
    between them (a file deleted after the snapshot)."""

    def __init__(
        self, db: Database, settings: Settings, dest: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.settings = settings
        self.dest = dest.rstrip("/")
        self.fs, root = open_filesystem(self.dest)
        self.root = (
            root.rstrip("/")
            if not isinstance(self.fs, LocalFileSystem)
            else str(Path(root).resolve())
        )
        store = store_at(settings.store_root)
        if store.local and Path(self.root).is_relative_to(store.root):
            raise BadInput(
                f"{dest} is inside the product store {store.root}; back up to another "
                "folder (better another disk) or an object store"
            )
        self.clock = clock
        self.id = ""
        self.snapshot_at = 0.0
        self.taken: DatabaseSnapshot | None = None
        self.files: list[BackupFile] = []
        self.missing: list[MissingFile] = []
        self.copied = 0
        self.bytes_copied = 0
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    def run(self) -> BackupResult:
        self.snapshot()
        self.copy_products()
        return self.seal()

    def snapshot(self) -> DatabaseSnapshot:
        scratch = self.settings.home / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        self._scratch = tempfile.TemporaryDirectory(prefix="backup-", dir=scratch)
        self.snapshot_at = self.clock()
        # Milliseconds in the name: names sort in snapshot order, even a second apart.
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.snapshot_at))
        millis = int(self.snapshot_at * 1000) % 1000
        self.id = f"{stamp}.{millis:03d}Z-{secrets.token_hex(3)}"
        self.taken = snapshot_database(self.db, Path(self._scratch.name))
        if self.taken.revision is None:
            raise StorageError(
                f"the database {self.db.url.render_as_string()} is empty: nothing to back up"
            )
        return self.taken

    def copy_products(self) -> None:
        """Copy each file the snapshot registers that DEST lacks, checking its sha256."""
        assert self.taken is not None and self._scratch is not None
        scratch = Path(self._scratch.name)
        root = store_at(self.settings.store_root).root_location
        present = existing_objects(self.fs, self.root)
        lost: list[tuple[SnapshotFile, str]] = []
        for f in self.taken.files:
            entry = BackupFile(
                f.dataset_id,
                relative_to_root(f.location, root),
                f.location,
                f.bytes,
                f.sha256,
                f.state,
            )
            if f.sha256 not in present:
                try:
                    with store_for(f.location).open(f.location) as source:
                        size = copy_verified(
                            source, self.fs, object_path(self.root, f.sha256), f.sha256, scratch
                        )
                except FileNotFoundError:
                    lost.append((f, ""))
                    continue
                except ChecksumMismatch as err:
                    lost.append(
                        (f, f"its bytes hash to {err.actual}, the registry says {f.sha256}")
                    )
                    continue
                except OSError as err:
                    lost.append((f, f"cannot read it: {type(err).__name__}: {err}"))
                    continue
                present.add(f.sha256)
                self.copied += 1
                self.bytes_copied += size
            self.files.append(entry)
        self.missing = self._explain(lost)

    def _explain(self, lost: list[tuple[SnapshotFile, str]]) -> list[MissingFile]:
        """Why each file could not be copied: gone since the snapshot, or a damaged store."""
        if not lost:
            return []
        now = states_now(self.db, [f.dataset_id for f, _ in lost])
        out = []
        for f, reason in lost:
            if not reason:
                state = now.get(f.dataset_id)
                if state == DatasetState.DELETED:
                    reason = (
                        "deleted after the snapshot (retention, closure or retraction "
                        "cleaning); the restore marks it DELETED"
                    )
                else:
                    reason = (
                        f"missing from the store although the live database says "
                        f"{state or 'nothing about it'}: the store is damaged, check it"
                    )
            out.append(MissingFile(f.dataset_id, f.location, reason))
        return out

    def seal(self) -> BackupResult:
        """Write the database dump, then the manifest: the last file marks it complete."""
        assert self.taken is not None and self._scratch is not None
        folder = f"{self.root}/{self.id}"
        dump = self.taken.dump
        dump_sha = sha256_file(dump)
        dump_bytes = dump.stat().st_size
        with open(dump, "rb") as source:
            copy_verified(
                source, self.fs, f"{folder}/{dump.name}", dump_sha, Path(self._scratch.name)
            )
        result = BackupResult(
            id=self.id,
            url=f"{self.dest}/{self.id}",
            database_kind=self.taken.kind,
            schema_revision=self.taken.revision,
            snapshot_at=self.snapshot_at,
            files=len(self.files),
            bytes=sum(f.bytes for f in self.files),
            copied=self.copied,
            reused=len(self.files) - self.copied,
            bytes_copied=self.bytes_copied,
            missing=self.missing,
        )
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "id": self.id,
            "dpct_version": __version__,
            "schema_revision": self.taken.revision,
            "snapshot_at": self.snapshot_at,
            "finished_at": self.clock(),
            "store_root": store_at(self.settings.store_root).root_location,
            "database": {
                "kind": self.taken.kind,
                "file": dump.name,
                "bytes": dump_bytes,
                "sha256": dump_sha,
                "made_by": self.taken.tool,
            },
            "copied": self.copied,
            "bytes_copied": self.bytes_copied,
            "files": [asdict(f) for f in self.files],
            "missing": [asdict(m) for m in self.missing],
        }
        write_text(self.fs, f"{folder}/{MANIFEST}", json.dumps(manifest, indent=1) + "\n")
        self._scratch.cleanup()
        return result


def backup(db: Database, settings: Settings, dest: str) -> BackupResult:
    """Back up the database and the files it registers to ``dest`` (folder or URL)."""
    return Backup(db, settings, dest).run()


def _read_manifest(fs: fsspec.AbstractFileSystem, folder: str, url: str) -> dict[str, Any]:
    try:
        text = fs.cat_file(f"{folder}/{MANIFEST}")
    except FileNotFoundError:
        raise NotFound(
            f"{url} has no {MANIFEST}: it is not a complete backup (interrupted, or not a "
            "backup folder); list complete ones with `dpct backup list DEST`"
        ) from None
    try:
        manifest = json.loads(text)
    except ValueError as err:
        raise BadInput(f"{url}/{MANIFEST} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BadInput(
            f"{url}/{MANIFEST} is not a dpct backup manifest of format {FORMAT}; "
            "was it made by a newer dpct?"
        )
    return manifest


def list_backups(dest: str) -> list[BackupSummary]:
    """The backups in ``dest``, oldest first, complete or not (a missing manifest)."""
    dest = dest.rstrip("/")
    fs, root = open_filesystem(dest)
    root = root.rstrip("/")
    try:
        entries = fs.ls(root, detail=True)
    except FileNotFoundError:
        raise NotFound(f"there is no backup destination at {dest}") from None
    out = []
    for entry in sorted(entries, key=lambda e: e["name"]):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry["type"] != "directory" or name == OBJECTS:
            continue
        url = f"{dest}/{name}"
        try:
            m = _read_manifest(fs, entry["name"].rstrip("/"), url)
        except (NotFound, BadInput):
            out.append(BackupSummary(id=name, url=url, complete=False))
            continue
        out.append(
            BackupSummary(
                id=name,
                url=url,
                complete=True,
                snapshot_at=m["snapshot_at"],
                database_kind=m["database"]["kind"],
                schema_revision=m["schema_revision"],
                files=len(m["files"]),
                bytes=sum(f["bytes"] for f in m["files"]),
                copied=m["copied"],
                missing=len(m["missing"]),
            )
        )
    return out


# ---------------------------------------------------------------- restore ---------
def _check_target(target: Settings, kind: str, source: str) -> None:
    home = target.home
    if home.exists() and (not home.is_dir() or any(home.iterdir())):
        raise Conflict(
            f"{home} is not empty; restore into a new DPCT_HOME (a missing or empty folder), "
            "never over a live one"
        )
    if kind == "sqlite" and target.database_url:
        raise BadInput(
            f"{source} is a SQLite backup: it restores into {home}/dpct.sqlite3; "
            "drop --database-url"
        )
    if kind == "postgresql" and not target.database_url.startswith(("postgresql", "postgres")):
        raise BadInput(
            f"{source} is a PostgreSQL backup: pass --database-url postgresql://… naming a "
            "new, empty database to restore it into"
        )
    if target.store_url:
        fs, path = open_filesystem(target.store_url)
        if fs.exists(path) and fs.ls(path):
            raise Conflict(
                f"the product store {target.store_url} is not empty; restore into an empty one"
            )


def restore(
    snapshot: str,
    home: Path,
    *,
    database_url: str = "",
    store_url: str = "",
    clock: Callable[[], float] = time.time,
) -> RestoreResult:
    """Restore the backup at ``snapshot`` (``DEST/<id>``) into a new DPCT_HOME.

    The database comes back as it was at the snapshot, its product locations rewritten
    to the new store root; every file is checked against its sha256 as it is copied. A
    file the backup lacks (deleted after the snapshot) or holds corrupt is marked DELETED.
    """
    snapshot = snapshot.rstrip("/")
    fs, folder = open_filesystem(snapshot)
    folder = folder.rstrip("/")
    manifest = _read_manifest(fs, folder, snapshot)
    kind = manifest["database"]["kind"]
    target = Settings(home=home, database_url=database_url, store_url=store_url)
    _check_target(target, kind, snapshot)
    created = not target.home.exists()
    db = Database(target.url, sqlite_synchronous=target.sqlite_synchronous)
    try:
        if kind == "postgresql" and not is_empty(db):
            raise Conflict(
                f"the database {db.url.render_as_string()} is not empty; restore into a "
                "new, empty database (createdb NAME), never over a live one"
            )
        target.home.mkdir(parents=True, exist_ok=True)
        return _restore_into(manifest, snapshot, fs, folder, target, db, clock)
    except BaseException:
        if created:
            # Nothing half-restored is left to be mistaken for a usable home.
            shutil.rmtree(target.home, ignore_errors=True)
        raise
    finally:
        db.dispose()


def _restore_into(
    manifest: dict[str, Any],
    snapshot: str,
    fs: fsspec.AbstractFileSystem,
    folder: str,
    target: Settings,
    db: Database,
    clock: Callable[[], float],
) -> RestoreResult:
    kind = manifest["database"]["kind"]
    scratch = target.home / "scratch"
    local = fsspec.filesystem("file")
    dump = manifest["database"]
    dump_path = target.home / "dpct.sqlite3" if kind == "sqlite" else scratch / POSTGRES_DUMP
    if dump["file"] not in (SQLITE_DUMP, POSTGRES_DUMP):
        raise BadInput(f"{snapshot}/{MANIFEST} names an unknown dump file {dump['file']!r}")
    try:
        with fs.open(f"{folder}/{dump['file']}", "rb") as source:
            copy_verified(source, local, str(dump_path), dump["sha256"], scratch)
    except FileNotFoundError:
        raise StorageError(
            f"{snapshot} lacks its database dump {dump['file']}; restore another backup"
        ) from None
    except ChecksumMismatch as err:
        raise StorageError(
            f"the database dump of {snapshot} is corrupt (sha256 {err.actual}, manifest says "
            f"{dump['sha256']}); restore another backup"
        ) from None
    if kind == "postgresql":
        restore_postgres(db, dump_path)
        dump_path.unlink()
    dest_root = folder.rsplit("/", 1)[0]
    return _restore_products(manifest, snapshot, fs, dest_root, target, db, scratch, clock)


def _restore_products(
    manifest: dict[str, Any],
    snapshot: str,
    fs: fsspec.AbstractFileSystem,
    dest_root: str,
    target: Settings,
    db: Database,
    scratch: Path,
    clock: Callable[[], float],
) -> RestoreResult:
    store = store_at(target.store_root)
    root = store.root_location
    moves: list[tuple[int, str, str]] = []
    lost = [MissingFile(**m) for m in manifest["missing"]]
    total = 0
    for f in manifest["files"]:
        relative = safe_relative(f["path"], f"{snapshot}/{MANIFEST}")
        location = f"{root}/{relative}"
        try:
            with fs.open(object_path(dest_root, f["sha256"]), "rb") as source:
                total += copy_verified(
                    source, store.fs, store._path(location), f["sha256"], scratch
                )
        except FileNotFoundError:
            lost.append(
                MissingFile(f["dataset_id"], f["location"], "its object is not in the backup")
            )
            continue
        except ChecksumMismatch as err:
            lost.append(
                MissingFile(
                    f["dataset_id"],
                    f["location"],
                    f"its object in the backup is corrupt ({err.actual})",
                )
            )
            continue
        moves.append((f["dataset_id"], f["location"], location))
    now = clock()
    by_reason: dict[str, list[int]] = {}
    for m in lost:
        by_reason.setdefault(m.reason, []).append(m.dataset_id)
    with db.write() as conn:
        relocated = relocate(conn, moves)
        for reason, ids in by_reason.items():
            mark_lost(conn, ids, now, f"file not restored from backup {manifest['id']}: {reason}")
        revision = current_revision(conn)
    return RestoreResult(
        backup_id=manifest["id"],
        home=str(target.home),
        database_url=db.url.render_as_string() if target.database_url else "",
        store_root=root,
        files=len(moves),
        bytes=total,
        relocated=relocated,
        lost=lost,
        schema_revision=revision,
        needs_upgrade=revision != head_revision(),
    )
