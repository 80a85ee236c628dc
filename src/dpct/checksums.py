"""SHA-256 checksums in the ``sha256:<hex>`` form that manifests, the datasets table and
backups all record.

At the bottom of the package: the delivery format (``dpct.mission.delivery``), the
product store and backups must agree on it, and none of them should own it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20
"""Bytes read per step: large enough for OpenSSL's hashing speed, small for memory."""


def sha256_stream(stream: BinaryIO) -> str:
    """``sha256:<hex>`` of the rest of ``stream``."""
    digest = hashlib.sha256()
    while block := stream.read(CHUNK):
        digest.update(block)
    return "sha256:" + digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """The bare hex digest of a file (no ``sha256:`` prefix)."""
    with open(path, "rb") as f:
        return sha256_stream(f)[len("sha256:") :]
