"""The files of a backup: its layout in a destination, and copies that are checked
against the registry's sha256 and appear whole or not at all."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from dpct.checksums import CHUNK
from dpct.errors import BadInput

OBJECTS = "objects"
OUTSIDE = "_outside"
"""Where a file registered outside the store root goes, under the restored root."""


class ChecksumMismatch(Exception):
    def __init__(self, actual: str) -> None:
        super().__init__(actual)
        self.actual = actual


# ---------------------------------------------------------------- copying ---------
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_verified(
    source: BinaryIO, fs: fsspec.AbstractFileSystem, path: str, sha256: str, scratch: Path
) -> int:
    """Copy ``source`` to ``path`` on ``fs`` only if its bytes hash to ``sha256``.

    Returns the size. The file appears whole or not at all: locally through a temporary
    name, fsync and rename; on an object store an upload becomes visible only when done.
    """
    local = isinstance(fs, LocalFileSystem)
    if local:
        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f"{final.name}.part-{secrets.token_hex(4)}")
    else:
        scratch.mkdir(parents=True, exist_ok=True)
        tmp = scratch / f"upload-{secrets.token_hex(8)}"
    try:
        digest = hashlib.sha256()
        size = 0
        with open(tmp, "wb") as out:
            while block := source.read(CHUNK):
                digest.update(block)
                out.write(block)
                size += len(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise ChecksumMismatch(digest.hexdigest())
        if local:
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        else:
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(tmp), path)
        return size
    finally:
        tmp.unlink(missing_ok=True)


def write_text(fs: fsspec.AbstractFileSystem, path: str, text: str) -> None:
    """Write a small file whole (the manifest: its presence means "complete")."""
    if isinstance(fs, LocalFileSystem):
        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f"{final.name}.part-{secrets.token_hex(4)}")
        try:
            with open(tmp, "w") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        fs.pipe_file(path, text.encode())


def object_path(root: str, sha256: str) -> str:
    return f"{root}/{OBJECTS}/sha256/{sha256[:2]}/{sha256[2:]}"


def existing_objects(fs: fsspec.AbstractFileSystem, root: str) -> set[str]:
    """The digests of the objects already in a destination (one listing, not one per file)."""
    try:
        paths = fs.find(f"{root}/{OBJECTS}/sha256")
    except FileNotFoundError:
        return set()
    found = set()
    for path in paths:
        parent, name = path.rstrip("/").rsplit("/", 2)[-2:]
        if ".part-" not in name and len(parent) == 2:
            found.add(parent + name)
    return found


def relative_to_root(location: str, root: str) -> str:
    if location.startswith(root + "/"):
        return location[len(root) + 1 :]
    return f"{OUTSIDE}/" + location.split("://", 1)[-1].lstrip("/")


def safe_relative(path: str, where: str) -> str:
    parts = PurePosixPath(path).parts
    if not parts or path.startswith("/") or ".." in parts:
        raise BadInput(f"{where} names the file path {path!r}, which leaves the store root")
    return path
