"""DTS: verified, resumable, idempotent transfer of deliveries in and products out."""

from dpct.transfer._manifest import (
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

__all__ = [
    "FORMAT",
    "MANIFEST",
    "DeliveryWriter",
    "Manifest",
    "ManifestEntry",
    "SpecModel",
    "parse_manifest",
    "read_manifest",
    "write_delivery",
]
