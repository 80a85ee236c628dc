"""Outbound delivery of a pipeline's products to the upstream center, as a task type.

``dts.deliver`` pushes the current datasets of the chosen types over the job's interval
through the transfer subsystem (checksummed copies, manifest written last, a transfer
row in the database) into ``<outbox>/<PREFIX>-<first OBMT day>-s<newest solution>``,
and returns one trace row per file. A retry after a crash finds the sealed delivery
and, when its manifest lists exactly these datasets, reports it instead of sending it
twice.
"""

from __future__ import annotations

import logging

import pyarrow as pa
from pydantic import BaseModel, Field

from dpct.datamodel import NS_PER_DAY, DataSpec, data_type
from dpct.errors import BadInput, Conflict, NotFound
from dpct.storage import Database, DatasetRow, SystemServices, find_datasets, open_filesystem
from dpct.tasks import NoData, PermanentTaskError, TransientError, task
from dpct.transfer import MANIFEST, Manifest, parse_manifest, push

data_type(
    "dts_delivery",
    1,
    [
        ("delivery", "string", "", "name of the delivery (its folder under the target)"),
        ("target", "string", "", "where it was delivered"),
        ("dataset_id", "int64", "", "the delivered dataset"),
        ("data_type", "string", "", "its type"),
        ("solution_id", "int64", "", "its solution id"),
        ("file", "string", "", "its path inside the delivery"),
        ("bytes", "int64", "B", "file size"),
        ("checksum", "string", "", "sha256 of the file"),
        ("transfer_id", "int64", "", "the push transfer (0 when found already delivered)"),
    ],
    description="What a pipeline delivery sent to the upstream center",
)


class DeliverConfig(BaseModel, extra="forbid"):
    data_types: list[str] = Field(min_length=1, description="what to deliver over the interval")
    prefix: str = Field(
        min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="name: PREFIX-<day>-s<solution>"
    )
    target: str = Field("", description="folder or s3:// URL; empty: the DPCT_OUTBOX_URL")


def _current(db: Database, spec: DataSpec, data_types: list[str]) -> list[DatasetRow]:
    with db.read() as conn:
        return [d for t in data_types for d in find_datasets(conn, spec.with_type(t))]


def _already_delivered(root: str, chosen: list[DatasetRow]) -> Manifest | None:
    """The manifest at ``root`` if it lists exactly the chosen files (by checksum)."""
    fs, path = open_filesystem(root)
    where = f"{path.rstrip('/')}/{MANIFEST}"
    try:
        manifest = parse_manifest(fs.cat_file(where), where=where)
    except (OSError, BadInput):
        return None
    if sorted(e.checksum for e in manifest.files) == sorted(d.checksum for d in chosen):
        return manifest
    return None


@task("dts.deliver", outputs={"trace": "dts_delivery"}, config=DeliverConfig, system=True)
def deliver(
    config: DeliverConfig, spec: DataSpec, log: logging.Logger, system: SystemServices
) -> pa.Table:
    """Push the interval's current products: a system task, since a push is recorded in
    the node's database."""
    db, settings = system.database, system.settings
    base = (config.target or system.outbox).rstrip("/")
    chosen = _current(db, spec, config.data_types)
    if not chosen:
        raise NoData(f"nothing to deliver: no {', '.join(config.data_types)} in {spec}")
    # the newest solution names the delivery: a reprocessed week is a new delivery
    newest = max(d.solution_id or 0 for d in chosen)
    name = f"{config.prefix}-{spec.start_ns // NS_PER_DAY:05d}-s{newest}"
    root = f"{base}/{name}"
    transfer_id = 0
    try:
        report = push(db, settings, root, dataset_ids=[d.id for d in chosen], name=name)
    except Conflict as err:
        if _already_delivered(root, chosen) is None:
            raise PermanentTaskError(
                f"{root} holds a delivery of other datasets under this name ({err}); "
                "move it aside or set another prefix, then resume"
            ) from err
        log.info("%s already holds this delivery (a retry): not sent again", root)
    except NotFound as err:  # retracted between the query and the push
        raise NoData(str(err)) from err
    else:
        if report.transfer.status != "DONE":
            # not sealed: another attempt pushes it again
            raise TransientError(f"delivery {name} to {root} failed: {report.transfer.message}")
        transfer_id = report.transfer.id
        log.info("delivered %d files (%d bytes) to %s", len(chosen), report.wire_bytes, root)
    files = [f"{d.spec.data_type}/{d.location.rstrip('/').rsplit('/', 1)[-1]}" for d in chosen]
    return pa.table(
        {
            "delivery": [name] * len(chosen),
            "target": [root] * len(chosen),
            "dataset_id": pa.array([d.id for d in chosen], pa.int64()),
            "data_type": [d.spec.data_type for d in chosen],
            "solution_id": pa.array([d.solution_id or 0 for d in chosen], pa.int64()),
            "file": files,
            "bytes": pa.array([d.bytes for d in chosen], pa.int64()),
            "checksum": [d.checksum for d in chosen],
            "transfer_id": pa.array([transfer_id] * len(chosen), pa.int64()),
        }
    )
