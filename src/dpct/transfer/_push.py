"""Push: deliver stored products to a folder, sealed by a manifest written last."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from dpct.config import Settings
from dpct.datamodel import DATA_TYPES
from dpct.errors import BadInput, Conflict, DpctError, NotFound
from dpct.mission.delivery import MANIFEST, Manifest, ManifestEntry, SpecModel
from dpct.storage import (
    Database,
    DatasetRow,
    TransferFileRow,
    TransferFileStatus,
    TransferStatus,
    datasets_to_push,
    finish_transfer,
    get_transfer,
    record_transfer_file,
    start_transfer,
    store_for,
)
from dpct.transfer._heartbeat import Heartbeat
from dpct.transfer._owner import HEARTBEAT_S, this_process
from dpct.transfer._peers import CHUNK, filesystem
from dpct.transfer._report import Clock, Progress, Quiet, TransferReport


def push(
    db: Database,
    settings: Settings,
    target: str | Path,
    *,
    data_type: str | None = None,
    since_id: int = 0,
    dataset_ids: Sequence[int] | None = None,
    name: str | None = None,
    limit: int = 10_000,
    progress: Progress | None = None,
    clock: Clock = time.time,
) -> TransferReport:
    """Deliver available datasets to the folder ``target`` (a local path or s3:// URL).

    Files are copied (and hashed on the way: a store file that no longer matches its
    registered checksum is not shipped), then the manifest is written last, so the
    receiving end never sees half a delivery. ``target`` must not hold a manifest yet.
    """
    text = str(target)
    scheme = text.split("://", 1)[0].lower() if "://" in text else "file"
    if scheme not in ("file", "s3", "s3a"):
        raise BadInput(f"cannot push to {text!r}: use a local folder or an s3:// URL")
    if data_type is not None:
        DATA_TYPES.get(data_type)
    with db.read() as conn:
        chosen = datasets_to_push(
            conn, data_type=data_type, since_id=since_id, dataset_ids=dataset_ids, limit=limit
        )
    if not chosen:
        raise NotFound(
            "nothing to push: no available dataset matches"
            + (f" type {data_type!r}" if data_type else "")
            + (f" after id {since_id}" if since_id else "")
            + (f" among ids {list(dataset_ids)}" if dataset_ids is not None else "")
        )
    if scheme == "file":
        text = str(Path(text.split("://", 1)[-1]).expanduser().resolve())
    fs, root = filesystem(text)
    root = root.rstrip("/")
    fs.invalidate_cache(root)  # an object store's listing cache may predate the manifest
    if fs.exists(f"{root}/{MANIFEST}"):
        raise Conflict(f"{text} already holds a sealed delivery ({MANIFEST}); push elsewhere")
    out = progress or Quiet()
    started = time.monotonic()
    total = sum(d.bytes for d in chosen)
    owner = this_process()
    with db.write() as conn:
        transfer_id = start_transfer(
            conn,
            direction="push",
            peer=text,
            files=len(chosen),
            nbytes=total,
            now=clock(),
            host=owner.host,
            pid=owner.pid,
            pid_start=owner.pid_start,
        )
    delivery = name or Path(root).name or f"push-{transfer_id}"
    out.begin(delivery, len(chosen), total)
    rows: list[TransferFileRow] = []
    entries: list[ManifestEntry] = []
    sent = 0
    try:
        with Heartbeat(db, transfer_id, clock, HEARTBEAT_S):
            fs.makedirs(root, exist_ok=True)
            for dataset in chosen:
                relative = (
                    f"{dataset.spec.data_type}/{dataset.location.rstrip('/').rsplit('/', 1)[-1]}"
                )
                dest = f"{root}/{relative}"
                reason = _copy_out(dataset, fs, dest, out.advance)
                if not reason:
                    sent += dataset.bytes
                    entries.append(
                        ManifestEntry(
                            file=relative,
                            bytes=dataset.bytes,
                            checksum=dataset.checksum,
                            data_type=dataset.spec.data_type,
                            type_version=dataset.type_version,
                            spec=SpecModel.of(dataset.spec),
                            rows=dataset.rows,
                        )
                    )
                status = TransferFileStatus.FAILED if reason else TransferFileStatus.SENT
                with db.write() as conn:
                    row = record_transfer_file(
                        conn,
                        transfer_id,
                        name=relative,
                        data_type=dataset.spec.data_type,
                        nbytes=dataset.bytes,
                        checksum=dataset.checksum,
                        status=status,
                        now=clock(),
                        reason=reason,
                        dataset_id=dataset.id,
                        location=f"{text}/{relative}",
                    )
                rows.append(row)
                out.file_done(row)
            failed = [r for r in rows if r.status == TransferFileStatus.FAILED]
            if failed:
                status = TransferStatus.FAILED
                message = (
                    f"delivery {delivery}: {len(failed)} of {len(rows)} files not sent, so it "
                    f"was not sealed; {failed[0].name}: {failed[0].reason}"
                )
            else:
                manifest = Manifest(delivery=delivery, created_at=clock(), files=entries)
                _seal(fs, root, manifest)
                status = TransferStatus.DONE
                message = f"delivery {delivery}: {len(rows)} files sent"
    except BaseException as err:
        with db.write() as conn:
            finish_transfer(
                conn,
                transfer_id,
                status=TransferStatus.FAILED,
                now=clock(),
                message=f"{type(err).__name__}: {err}",
            )
        raise
    with db.write() as conn:
        finish_transfer(conn, transfer_id, status=status, now=clock(), message=message)
        transfer = get_transfer(conn, transfer_id)
    assert transfer is not None
    return TransferReport(transfer, tuple(rows), delivery, sent, time.monotonic() - started)


def _copy_out(
    dataset: DatasetRow, fs: AbstractFileSystem, dest: str, advance: Callable[[int], None]
) -> str:
    """Copy a stored product to ``dest``, hashing it; returns why it failed, or ''."""
    digest = hashlib.sha256()
    size = 0
    try:
        parent = dest.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        with store_for(dataset.location).open(dataset.location) as src, fs.open(dest, "wb") as dst:
            while block := src.read(CHUNK):
                digest.update(block)
                dst.write(block)
                size += len(block)
                advance(len(block))
    except (OSError, DpctError) as err:
        return f"copy failed: {err}"
    checksum = "sha256:" + digest.hexdigest()
    if size != dataset.bytes or checksum != dataset.checksum:
        fs.rm_file(dest)
        return (
            f"the stored file {dataset.location} no longer matches dataset {dataset.id} "
            f"({size} bytes, {checksum}; registered {dataset.bytes} bytes, {dataset.checksum})"
        )
    return ""


def _seal(fs: AbstractFileSystem, root: str, manifest: Manifest) -> None:
    """Write the manifest whole: renamed into place locally; on S3 an upload is
    visible only once complete, so a plain upload is atomic already."""
    data = manifest.model_dump_json(indent=1).encode()
    final = f"{root}/{MANIFEST}"
    if isinstance(fs, LocalFileSystem):
        tmp = f"{final}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    else:
        fs.pipe_file(final, data)
