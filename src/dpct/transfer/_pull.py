"""Pull: fetch a delivery in, verify every file, register it whole.

A pull is safe to repeat and to interrupt. Every file is checked before anything is
registered (size, SHA-256, data type, Parquet footer schema, row count); a file already
registered with the same checksum and type is skipped, so a re-delivery changes
nothing; a bad file goes to quarantine with its reason, never into the store; and a
download cut short resumes from the staging folder on the next pull. A registered file
enters the store (rename, or upload) before the one transaction that registers its
dataset and records it on the transfer, so a row never points at missing bytes.

Two pulls of the same bytes at once cannot meet: a pull first claims, in the database,
every file of its delivery not registered yet (all or nothing, else it waits), stages
them in a folder of its own, and writes each file's store location into its claim
before moving it there. A pull that dies is marked FAILED by the next one (or by any
caller of :func:`recover_stale_transfers`), which deletes the files it had moved but
not registered and releases its claims; its partial downloads are adopted and resumed.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dpct import __version__
from dpct.config import Settings
from dpct.datamodel import DataSpec, DataType
from dpct.errors import BadInput, DpctError, NotFound, TransferError
from dpct.mission.delivery import MANIFEST, Manifest, ManifestEntry, parse_manifest
from dpct.storage import (
    ClaimKey,
    Connection,
    Database,
    DatasetRow,
    OutputFile,
    TransferFileRow,
    TransferFileStatus,
    TransferRow,
    TransferStatus,
    beat_transfer,
    claim_files,
    finish_transfer,
    get_transfer,
    record_transfer_file,
    register_dataset,
    release_claims,
    set_claim_location,
    start_transfer,
    store_at,
)
from dpct.transfer._heartbeat import Heartbeat
from dpct.transfer._owner import HEARTBEAT_S, this_process
from dpct.transfer._peers import MissingFile, Peer, fetch, open_peer, read_small
from dpct.transfer._recovery import recover_stale_transfers
from dpct.transfer._report import Clock, Progress, Quiet, TransferReport
from dpct.transfer._staging import adopt, clean_staging, staged_name, staging_root, transfer_staging
from dpct.transfer._verify import Rejected, verify


def quarantine_dir(settings: Settings, transfer_id: int) -> Path:
    return settings.home / "transfer" / "quarantine" / str(transfer_id)


CLAIM_POLL_S = 0.25
"""How often a pull waiting for another's claims looks again."""


class _Lost(TransferError):
    """This transfer was marked FAILED while it ran (its process was taken for dead)."""


def _lost(transfer_id: int) -> _Lost:
    return _Lost(
        f"transfer {transfer_id} was marked FAILED while it ran (its process was taken "
        "for dead) and its claims were released; nothing more of it is registered: pull "
        "the delivery again"
    )


def pull(
    db: Database,
    settings: Settings,
    source: str | Path,
    *,
    workers: int = 4,
    retries: int = 5,
    backoff_s: float = 0.5,
    progress: Progress | None = None,
    clock: Clock = time.time,
) -> TransferReport:
    """Pull the delivery folder at ``source`` (a local path, http(s):// or s3:// URL).

    Records a transfer and returns its report; a delivery that cannot be read (no
    manifest, a bad one, an unreachable peer) or a file that could not be fetched
    after ``retries`` retries makes it FAILED, with the reason in ``message``. A source
    folder that does not exist is NotFound (no transfer is recorded). Files another
    running pull has claimed are waited for, then taken as duplicates or fetched.
    """
    if workers < 1:
        raise BadInput(f"workers must be at least 1, not {workers}")
    peer = open_peer(source)
    report = Pull(db, settings, peer, workers, retries, backoff_s, progress, clock).run()
    assert report is not None
    return report


class Pull:
    """One pull of one delivery; a watcher runs one per sub-folder (``skip_unsealed``)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        peer: Peer,
        workers: int,
        retries: int,
        backoff_s: float,
        progress: Progress | None,
        clock: Clock,
        skip_unsealed: bool = False,
    ) -> None:
        self.db = db
        self.settings = settings
        self.peer = peer
        self.workers = workers
        self.retries = retries
        self.backoff_s = backoff_s
        self.progress = progress or Quiet()
        self.clock = clock
        self.skip_unsealed = skip_unsealed
        self.store = store_at(settings.store_root)
        self.staging = staging_root(settings)
        # Moves into the store are serialised: each picks a name no stored file has.
        self.commit_lock = threading.Lock()
        self.rows: list[TransferFileRow] = []
        self.rows_lock = threading.Lock()
        self.pending: list[tuple[ManifestEntry, OutputFile]] = []
        self.registered: dict[ClaimKey, DatasetRow] = {}
        self.first_of: dict[ClaimKey, str] = {}
        self.stored: dict[ClaimKey, str] = {}  # bytes moved into the store: by which file
        self.wire_bytes = 0
        self.transfer_id = 0

    def run(self) -> TransferReport | None:
        """The report; None for an unsealed delivery when ``skip_unsealed`` (a watcher)."""
        started = time.monotonic()
        recover_stale_transfers(self.db, clock=self.clock)
        try:
            text = read_small(self.peer, MANIFEST, retries=self.retries, backoff_s=self.backoff_s)
            manifest = parse_manifest(text, where=f"{self.peer.url}/{MANIFEST}")
        except MissingFile as err:
            if self.skip_unsealed:
                return None
            if not self.peer.exists():
                raise NotFound(
                    f"{self.peer.url} does not exist: no delivery folder there; check the "
                    "path or URL"
                ) from err
            return self._failed_early(f"{err}: the delivery is not sealed", started)
        except DpctError as err:
            return self._failed_early(str(err), started)
        owner = this_process()
        with self.db.write() as conn:
            self.transfer_id = start_transfer(
                conn,
                direction="pull",
                peer=self.peer.url,
                files=len(manifest.files),
                nbytes=manifest.total_bytes,
                now=self.clock(),
                message=f"delivery {manifest.delivery}",
                host=owner.host,
                pid=owner.pid,
                pid_start=owner.pid_start,
            )
        self.staging = transfer_staging(self.settings, self.transfer_id)
        self.progress.begin(manifest.delivery, len(manifest.files), manifest.total_bytes)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="dts-pull")
        try:
            with Heartbeat(self.db, self.transfer_id, self.clock, HEARTBEAT_S):
                self._claim(manifest)
                # The same bytes listed twice: the second copy once the first is known
                # good (a duplicate) or bad (then fetched in its own right).
                first, again = [], []
                for entry in manifest.files:
                    key = (entry.checksum, entry.data_type)
                    (first if self.first_of[key] == entry.file else again).append(entry)
                for row in pool.map(self._one, first):
                    if row is not None:
                        self.progress.file_done(row)
                pool.shutdown()
                for entry in again:
                    if (row := self._one(entry)) is not None:
                        self.progress.file_done(row)
                for row in self._register_pending():
                    self.progress.file_done(row)
        except BaseException as err:
            # Ctrl-C, a database error, or this transfer taken for dead: files not
            # started are dropped, those being fetched finish (or stay partial in
            # staging for the next pull); verified files already moved into the store
            # are removed, as none was registered.
            pool.shutdown(wait=True, cancel_futures=True)
            self._drop_pending()
            with contextlib.suppress(Exception):  # the first error is the one to report
                self._finish(TransferStatus.FAILED, f"{type(err).__name__}: {err}")
            raise
        clean_staging(self.staging)
        failed = [r for r in self.rows if r.status == TransferFileStatus.FAILED]
        quarantined = [r for r in self.rows if r.status == TransferFileStatus.QUARANTINED]
        summary = _summary(manifest.delivery, self.rows)
        if failed:
            first = failed[0]
            status, message = TransferStatus.FAILED, f"{summary}; {first.name}: {first.reason}"
        elif quarantined:
            status, message = TransferStatus.PARTIAL, summary
        else:
            status, message = TransferStatus.DONE, summary
        transfer = self._finish(status, message)
        return TransferReport(
            transfer,
            tuple(sorted(self.rows, key=lambda r: r.id)),
            manifest.delivery,
            self.wire_bytes,
            time.monotonic() - started,
        )

    def _failed_early(self, message: str, started: float) -> TransferReport:
        owner = this_process()
        with self.db.write() as conn:
            now = self.clock()
            self.transfer_id = start_transfer(
                conn,
                direction="pull",
                peer=self.peer.url,
                files=0,
                nbytes=0,
                now=now,
                host=owner.host,
                pid=owner.pid,
                pid_start=owner.pid_start,
            )
            finish_transfer(
                conn, self.transfer_id, status=TransferStatus.FAILED, now=now, message=message
            )
            transfer = get_transfer(conn, self.transfer_id)
        assert transfer is not None
        return TransferReport(transfer, (), "", 0, time.monotonic() - started)

    def _finish(self, status: str, message: str) -> TransferRow:
        """Close the transfer; one already failed by recovery keeps that verdict."""
        with self.db.write() as conn:
            finish_transfer(
                conn, self.transfer_id, status=status, now=self.clock(), message=message
            )
            transfer = get_transfer(conn, self.transfer_id)
        assert transfer is not None
        return transfer

    # -------------------------------------------------------------- claims -----------
    def _claim(self, manifest: Manifest) -> None:
        """Claim every file of the delivery not registered yet, waiting for other pulls.

        All or nothing: a pull that waits holds no claim, so two pulls can never wait
        for each other. A holder that died is recovered while we wait.
        """
        files = [(e.checksum, e.data_type, e.file) for e in manifest.files]
        for checksum, data_type, name in files:
            self.first_of.setdefault((checksum, data_type), name)
        told: set[int] = set()
        while True:
            claimed = self.db.run_write(
                lambda conn: claim_files(conn, self.transfer_id, files, now=self.clock())
            )
            if not claimed.held:
                self.registered = claimed.registered
                return
            holders = set(claimed.held.values()) - {0}
            if holders - told:
                told |= holders
                ids = ", ".join(str(t) for t in sorted(holders))
                self.progress.waiting(
                    f"waiting for transfer {ids}, which is pulling {len(claimed.held)} of "
                    "these files; they will be taken as duplicates or fetched once it ends"
                )
            recover_stale_transfers(self.db, clock=self.clock)
            time.sleep(CLAIM_POLL_S)

    # -------------------------------------------------------------- one file ---------
    def _one(self, entry: ManifestEntry) -> TransferFileRow | None:
        key = (entry.checksum, entry.data_type)
        known = self.registered.get(key)
        if known is not None:
            # Same bytes already registered: not even downloaded.
            self.progress.advance(entry.bytes)
            return self._record(entry, TransferFileStatus.DUPLICATE, _dup_reason(known), known)
        twin = self.stored.get(key)
        if twin is not None:  # the same bytes twice in this delivery
            self.progress.advance(entry.bytes)
            reason = f"same bytes as {twin} in this delivery"
            return self._record(entry, TransferFileStatus.DUPLICATE, reason)
        staged = self.staging / staged_name(entry.checksum, entry.data_type)
        try:
            adopt(self.staging, staged.name)  # a partial left by a stopped pull
            fetched = fetch(
                self.peer,
                entry.file,
                staged,
                expected=entry.bytes,
                retries=self.retries,
                backoff_s=self.backoff_s,
                on_bytes=self.progress.advance,
            )
        except TransferError as err:
            # The partial file stays in staging: the next pull resumes it.
            return self._record(entry, TransferFileStatus.FAILED, str(err))
        except OSError as err:  # our disk: full, over quota, read-only
            return self._record(entry, TransferFileStatus.FAILED, _disk_reason(staged, err))
        with self.rows_lock:
            self.wire_bytes += fetched.received
        try:
            try:
                data_type, spec = verify(entry, staged, fetched.size, fetched.checksum)
            except Rejected as rejected:
                return self._quarantine(entry, staged, str(rejected))
            return self._register(entry, staged, data_type, spec)
        except OSError as err:  # the store's or the quarantine's disk
            where = err.filename or self.store.root_url
            return self._record(entry, TransferFileStatus.FAILED, _disk_reason(where, err))

    def _register(
        self, entry: ManifestEntry, staged: Path, data_type: DataType, spec: DataSpec
    ) -> TransferFileRow | None:
        """Move a verified file into the store; its row waits for the whole delivery.

        All files of a delivery are registered in one transaction at the end
        (:meth:`_register_pending`), so data triggers see a delivery whole: a workflow
        that reads several of its types never starts on half of it.
        """
        with self.commit_lock:
            location = self._put(staged, spec, (entry.checksum, entry.data_type))
            self.stored[(entry.checksum, entry.data_type)] = entry.file
            self.pending.append(
                (
                    entry,
                    OutputFile(
                        name=entry.file,
                        data_type=data_type.name,
                        type_version=data_type.version,
                        spec=spec,
                        rows=entry.rows,
                        bytes=entry.bytes,
                        checksum=entry.checksum,
                        location=location,
                    ),
                )
            )
        return None

    def _register_pending(self) -> list[TransferFileRow]:
        """Register every verified file of the delivery in one transaction.

        The same transaction checks that this transfer still runs and drops its claims
        on these files: registration is the one moment a pulled file becomes visible.
        """
        if not self.pending:
            return []

        def work(conn: Connection) -> list[TransferFileRow]:
            now = self.clock()
            keys = [(entry.checksum, entry.data_type) for entry, _ in self.pending]
            if not beat_transfer(conn, self.transfer_id, now):
                raise _lost(self.transfer_id)
            if release_claims(conn, self.transfer_id, keys) != len(keys):
                raise _lost(self.transfer_id)
            rows = []
            for entry, file in self.pending:
                dataset_id, _ = register_dataset(
                    conn,
                    file,
                    now=now,
                    software_version=f"dts@{__version__}",
                    transfer_id=self.transfer_id,
                )
                rows.append(
                    record_transfer_file(
                        conn,
                        self.transfer_id,
                        name=entry.file,
                        data_type=entry.data_type,
                        nbytes=entry.bytes,
                        checksum=entry.checksum,
                        status=TransferFileStatus.REGISTERED,
                        now=now,
                        dataset_id=dataset_id,
                        location=file.location,
                    )
                )
            return rows

        try:
            rows = self.db.run_write(work)
        except BaseException:
            self._drop_pending()
            raise
        self.pending.clear()
        with self.rows_lock:
            self.rows.extend(rows)
        return rows

    def _drop_pending(self) -> None:
        """Never leave bytes in the store that no row points at.

        The files go first, then their claims: should this be cut short, the claims
        still name the files, and recovery deletes them.
        """
        if not self.pending:
            return
        for _, file in self.pending:
            with contextlib.suppress(Exception):
                self.store.delete(file.location)
        keys = [(entry.checksum, entry.data_type) for entry, _ in self.pending]
        with contextlib.suppress(Exception):
            self.db.run_write(lambda conn: release_claims(conn, self.transfer_id, keys))
        self.pending.clear()

    def _put(self, staged: Path, spec: DataSpec, key: ClaimKey) -> str:
        """Into the store under a name no other file has: nothing stored is replaced.

        The location is written into the claim first, so that a pull killed during or
        after the move leaves a file that recovery can find and delete.
        """
        tag = f"t{self.transfer_id}"
        n = 1
        while self.store.exists(self.store.location_for(spec, tag)):
            n += 1
            tag = f"t{self.transfer_id}.{n}"
        location = self.store.location_for(spec, tag)
        try:
            self.db.run_write(
                lambda conn: set_claim_location(conn, self.transfer_id, key, location)
            )
        except LookupError as err:  # recovery released our claims
            raise _lost(self.transfer_id) from err
        self.store.put(staged, spec, tag)
        staged.unlink(missing_ok=True)  # left behind when the store copied or uploaded
        return location

    def _quarantine(self, entry: ManifestEntry, staged: Path, reason: str) -> TransferFileRow:
        target = quarantine_dir(self.settings, self.transfer_id) / entry.file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staged, target)
        Path(f"{target}.reason").write_text(
            f"{entry.file}\n{reason}\npeer: {self.peer.url}\ntransfer: {self.transfer_id}\n"
        )
        return self._record(entry, TransferFileStatus.QUARANTINED, reason, location=str(target))

    def _record(
        self,
        entry: ManifestEntry,
        status: str,
        reason: str,
        known: DatasetRow | None = None,
        *,
        location: str = "",
    ) -> TransferFileRow:
        def work(conn: Connection) -> TransferFileRow:
            return record_transfer_file(
                conn,
                self.transfer_id,
                name=entry.file,
                data_type=entry.data_type,
                nbytes=entry.bytes,
                checksum=entry.checksum,
                status=status,
                now=self.clock(),
                reason=reason,
                dataset_id=known.id if known else None,
                location=known.location if known else location,
            )

        row = self.db.run_write(work)
        with self.rows_lock:
            self.rows.append(row)
        return row


def _disk_reason(where: Path | str, err: OSError) -> str:
    """Why a file could not be written here: one line an operator can act on."""
    what = err.strerror or str(err)
    name = errno.errorcode.get(err.errno or 0, "")
    return (
        f"cannot write under {where}: {what}{f' ({name})' if name else ''}; free space or "
        "fix the folder, then pull again (what was fetched is kept for the resume)"
    )


def _dup_reason(known: DatasetRow) -> str:
    return f"already registered as dataset {known.id} ({known.spec.text})"


def _summary(delivery: str, rows: Sequence[TransferFileRow]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    parts = [f"{n} {status.lower()}" for status, n in sorted(counts.items())]
    return f"delivery {delivery}: " + (", ".join(parts) if parts else "no files")
