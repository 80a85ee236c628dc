"""Staging: one folder per transfer, one file per claimed file's bytes.

``$DPCT_HOME/transfer/staging/<transfer id>/<sha256 hex>.<data type>.part``: only the
transfer that holds the claim on those bytes writes there, so two pulls never share a
path. A pull that stopped (killed, or a file it gave up on) leaves its partial files; the
next pull to claim the same bytes adopts one by a rename and resumes it. Holding the
claim means whoever wrote it before has finished, so nobody writes to it any more.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from dpct.config import Settings


def staging_root(settings: Settings) -> Path:
    return settings.home / "transfer" / "staging"


def transfer_staging(settings: Settings, transfer_id: int) -> Path:
    return staging_root(settings) / str(transfer_id)


def staged_name(checksum: str, data_type: str) -> str:
    safe_type = re.sub(r"[^A-Za-z0-9_.-]", "_", data_type)
    return f"{checksum.removeprefix('sha256:')}.{safe_type}.part"


def adopt(own: Path, name: str) -> int:
    """Move the longest partial ``name`` left by an earlier transfer into ``own``.

    Returns the bytes adopted (0: nothing to resume). Shorter leftovers of the same
    bytes are dropped, and folders left empty removed.
    """
    target = own / name
    if target.exists():
        return target.stat().st_size
    found: list[tuple[int, Path]] = []
    with contextlib.suppress(FileNotFoundError):
        for folder in own.parent.iterdir():
            candidate = folder / name
            if folder != own and candidate.is_file():
                found.append((candidate.stat().st_size, candidate))
    if not found:
        return 0
    found.sort(reverse=True)
    own.mkdir(parents=True, exist_ok=True)
    os.replace(found[0][1], target)
    for _, other in found[1:]:
        other.unlink(missing_ok=True)
    for _, path in found:
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only when empty
    return found[0][0]


def clean_staging(own: Path) -> None:
    """Remove a transfer's staging folder if nothing in it waits for a resume."""
    with contextlib.suppress(OSError):
        for folder in sorted(own.rglob("*"), reverse=True):
            if folder.is_dir():
                folder.rmdir()
        own.rmdir()
