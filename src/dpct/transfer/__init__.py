"""DTS: verified, resumable, idempotent transfer of deliveries in and products out."""

from dpct.mission.delivery import (
    FORMAT,
    MANIFEST,
    DeliveryWriter,
    Manifest,
    ManifestEntry,
    SpecModel,
    parse_manifest,
    read_manifest,
    write_delivery,
)
from dpct.transfer._history import TransferView, transfer, transfers
from dpct.transfer._pull import pull
from dpct.transfer._push import push
from dpct.transfer._recovery import Recovery, recover_stale_transfers
from dpct.transfer._report import Progress, TransferReport
from dpct.transfer._watch import poll, watch

__all__ = [
    "FORMAT",
    "MANIFEST",
    "DeliveryWriter",
    "Manifest",
    "ManifestEntry",
    "Progress",
    "Recovery",
    "SpecModel",
    "TransferReport",
    "TransferView",
    "parse_manifest",
    "poll",
    "pull",
    "push",
    "read_manifest",
    "recover_stale_transfers",
    "transfer",
    "transfers",
    "watch",
    "write_delivery",
]
