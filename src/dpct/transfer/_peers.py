"""Peers: where deliveries come from (local folder, HTTP(S), S3) and resumable fetching.

A download writes each chunk to the staging file and hands the same bytes to a SHA-256
running in its own thread, so a file is read from the network once, written once and
never read back; a large file's hash overlaps with its download instead of adding to
it. An interrupted download keeps what it wrote (and the hash of it) and asks the peer
for the rest only: ``Range: bytes=N-`` over HTTP, a seek on S3 and local files.

S3 and local folders go through fsspec. For S3 the usual botocore settings apply
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, profiles),
and any ``FSSPEC_S3_<OPTION>`` variable (e.g. ``FSSPEC_S3_ENDPOINT_URL`` for MinIO, Ceph
or a test server) is read when the peer is opened, not only when fsspec is imported.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import quote, unquote, urljoin, urlsplit

import fsspec
import fsspec.config
import requests
import urllib3
from fsspec.implementations.local import LocalFileSystem

from dpct.errors import BadInput, NotFound, TransferError
from dpct.storage import open_filesystem as filesystem

T = TypeVar("T")

CHUNK = 1 << 20
"""Bytes per network read: big enough that Python's per-chunk cost vanishes."""

_HASH_THREAD_FROM = 16 * CHUNK
"""Files at least this big are hashed in a second thread; smaller ones inline."""

_WRITEBACK_EVERY = 64 * CHUNK
"""Start the disk writeback of a large staging file every so many bytes (see _Sink)."""

_TIMEOUT = (10.0, 60.0)
"""HTTP connect and read timeouts (s): a silent peer is retried, never waited on forever."""


class MissingFile(TransferError):
    """A file listed in a delivery is not at the peer."""


class _Retryable(Exception):
    """A transient failure (connection cut, short read, 5xx): try again from where we are."""


# ---------------------------------------------------------------- hashing & writing ---


class _InlineHash:
    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def close(self) -> None:
        pass


class _ThreadHash:
    """SHA-256 in a thread: hashlib releases the GIL, so it runs beside the download."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=32)
        self._thread = threading.Thread(target=self._run, name="dts-sha256", daemon=True)
        self._thread.start()
        self._closed = False

    def _run(self) -> None:
        update, get = self._h.update, self._queue.get
        while (data := get()) is not None:
            update(data)

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        return self._h.hexdigest()


class _Sink:
    """A staging file being written, with the running hash of everything in it.

    Resuming a staging file left by an earlier run hashes its bytes once; within one
    run the hash survives retries in memory, so nothing is read twice. Large files get
    their writeback started as they grow (``POSIX_FADV_DONTNEED`` starts it without
    waiting), so the fsync that makes a product durable in the store finds little left.
    """

    def __init__(self, path: Path, expected: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.expected = expected
        self.file = open(path, "ab")  # noqa: SIM115 - closed by close()
        self.size = self.file.tell()
        self.received = 0
        if self.size > expected:
            self.file.truncate(0)
            self.size = 0
        self._new_hash()
        if self.size:
            with open(path, "rb") as old:
                while block := old.read(CHUNK):
                    self.hash.update(block)
        self._advised = self.size

    def _new_hash(self) -> None:
        self.hash: _InlineHash | _ThreadHash = (
            _ThreadHash() if self.expected >= _HASH_THREAD_FROM else _InlineHash()
        )

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)
        self.received += len(data)
        if self.size - self._advised >= _WRITEBACK_EVERY and hasattr(os, "posix_fadvise"):
            self.file.flush()
            os.posix_fadvise(
                self.file.fileno(),
                self._advised,
                self.size - self._advised,
                os.POSIX_FADV_DONTNEED,
            )
            self._advised = self.size

    def restart(self) -> None:
        """Throw away what was written: the peer sends the file from its first byte."""
        self.hash.close()
        self.file.seek(0)
        self.file.truncate(0)
        self.size = 0
        self._advised = 0
        self._new_hash()

    def finish(self) -> str:
        self.file.flush()
        actual = os.fstat(self.file.fileno()).st_size
        self.file.close()
        checksum = "sha256:" + self.hash.hexdigest()
        if actual != self.size:
            # Only one process holds the claim on these bytes; should one taken for
            # dead still write, its bytes are not trusted.
            self.path.unlink(missing_ok=True)
            raise TransferError(
                f"{self.path} was written by another process too ({actual} bytes, "
                f"{self.size} written here); discarded, pull again"
            )
        return checksum

    def abandon(self) -> None:
        """Stop, keeping the partial file for a later resume."""
        self.file.close()
        self.hash.close()


# ---------------------------------------------------------------- peers ---------------


@dataclass(slots=True)
class _Stream:
    """A peer's answer to "send from byte N": where its bytes start, how many it has."""

    offset: int
    total: int | None
    chunks: Iterator[bytes]
    close: Callable[[], None]


class Peer(Protocol):
    url: str

    def read(self, relative: str) -> bytes:
        """A small file (a manifest) whole; MissingFile if absent, _Retryable if transient."""
        ...

    def open_from(self, relative: str, offset: int) -> _Stream: ...

    def children(self) -> list[str]:
        """Names of the sub-folders (candidate deliveries), sorted."""
        ...

    def exists(self) -> bool:
        """False only when the peer says for sure that the folder is not there."""
        ...

    def child(self, name: str) -> Peer: ...


def _join(url: str, relative: str) -> str:
    return f"{url}/{relative}" if relative else url


class FsPeer:
    """A folder on any fsspec filesystem (a local path, ``s3://bucket/prefix``)."""

    def __init__(self, url: str, fs: fsspec.AbstractFileSystem, path: str) -> None:
        self.url = url.rstrip("/")
        self.fs = fs
        self.path = path.rstrip("/")
        self.local = isinstance(fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"FsPeer({self.url!r})"

    def _path(self, relative: str) -> str:
        return _join(self.path, relative)

    def read(self, relative: str) -> bytes:
        path = self._path(relative)
        try:
            if not self.local:
                self.fs.invalidate_cache(path)
            return bytes(self.fs.cat_file(path))
        except FileNotFoundError as err:
            raise MissingFile(f"{_join(self.url, relative)} does not exist") from err
        except OSError as err:
            raise _Retryable(f"cannot read {_join(self.url, relative)}: {err}") from err

    def open_from(self, relative: str, offset: int) -> _Stream:
        path = self._path(relative)
        try:
            if not self.local:
                self.fs.invalidate_cache(path)
            total = int(self.fs.size(path))
            f = self.fs.open(path, "rb", block_size=8 * CHUNK, cache_type="readahead")
        except FileNotFoundError as err:
            raise MissingFile(f"{_join(self.url, relative)} does not exist") from err
        except OSError as err:
            raise _Retryable(f"cannot open {_join(self.url, relative)}: {err}") from err
        if offset > total:
            offset = 0
        if offset:
            f.seek(offset)

        def chunks() -> Iterator[bytes]:
            read = f.read
            try:
                while block := read(CHUNK):
                    yield block
            except FileNotFoundError as err:
                raise MissingFile(f"{_join(self.url, relative)} vanished") from err
            except OSError as err:
                raise _Retryable(str(err)) from err

        return _Stream(offset, total, chunks(), f.close)

    def exists(self) -> bool:
        try:
            if not self.local:
                self.fs.invalidate_cache(self.path)
            return bool(self.fs.isdir(self.path))
        except OSError:
            return True  # cannot tell: let the pull say what went wrong

    def children(self) -> list[str]:
        try:
            if not self.local:
                self.fs.invalidate_cache(self.path)
            entries = self.fs.ls(self.path, detail=True)
        except FileNotFoundError as err:
            raise NotFound(f"{self.url} does not exist; check the path or URL") from err
        names = [
            e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory"
        ]
        return sorted(n for n in names if n and not n.startswith("."))

    def child(self, name: str) -> FsPeer:
        return FsPeer(_join(self.url, name), self.fs, _join(self.path, name))


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class HttpPeer:
    """A delivery folder behind an HTTP(S) server that honours ``Range`` requests.

    One ``requests`` session per thread (sessions are not thread-safe), each keeping its
    connections alive across the files it fetches.
    """

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"HttpPeer({self.url!r})"

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers["Accept-Encoding"] = "identity"  # the bytes as listed, unzipped
        return session

    def _get(self, url: str, headers: dict[str, str] | None = None) -> requests.Response:
        try:
            response = self.session.get(url, headers=headers, stream=True, timeout=_TIMEOUT)
        except requests.RequestException as err:
            raise _Retryable(f"GET {url}: {err}") from err
        if response.status_code == 404:
            response.close()
            raise MissingFile(f"{url} does not exist (HTTP 404)")
        if response.status_code in _RETRY_STATUS:
            response.close()
            raise _Retryable(f"GET {url}: HTTP {response.status_code}")
        if response.status_code >= 400 and response.status_code != 416:
            response.close()
            raise TransferError(f"GET {url}: HTTP {response.status_code} {response.reason}")
        return response

    def read(self, relative: str) -> bytes:
        url = _join(self.url, quote(relative))
        try:
            with self._get(url) as response:
                return response.content
        except requests.RequestException as err:
            raise _Retryable(f"GET {url}: {err}") from err

    def open_from(self, relative: str, offset: int) -> _Stream:
        url = _join(self.url, quote(relative))
        response = self._get(url, {"Range": f"bytes={offset}-"} if offset else None)
        encoding = response.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity":
            response.close()
            raise TransferError(f"GET {url}: the peer sent it {encoding}-encoded")
        if response.status_code == 416:
            # We hold at least all it has: its size is in "Content-Range: bytes */N".
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            response.close()
            total = int(match.group(2)) if match and match.group(2) != "*" else None
            if total is not None and total < offset:
                return _Stream(0, total, iter(()), lambda: None)  # restart from 0
            return _Stream(offset, total, iter(()), lambda: None)
        start, total = 0, None
        if response.status_code == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match is None or match.group(1) is None:
                response.close()
                raise _Retryable(f"GET {url}: a 206 answer without a usable Content-Range")
            start = int(match.group(1))
            total = None if match.group(2) == "*" else int(match.group(2))
        elif "Content-Length" in response.headers:
            total = int(response.headers["Content-Length"])
        raw = response.raw

        def chunks() -> Iterator[bytes]:
            read = raw.read
            try:
                while block := read(CHUNK, decode_content=False):
                    yield block
            except (
                urllib3.exceptions.HTTPError,
                requests.RequestException,
                http.client.HTTPException,
                OSError,
            ) as err:
                raise _Retryable(f"GET {url}: {err}") from err

        return _Stream(start, total, chunks(), response.close)

    def exists(self) -> bool:
        try:
            self._get(self.url + "/").close()
        except MissingFile:
            return False
        except (_Retryable, TransferError):
            return True  # a 403 (listings off) or a hiccup: cannot tell
        return True

    def children(self) -> list[str]:
        """Sub-folders from the server's directory listing (links ending in ``/``)."""
        url = self.url + "/"
        try:
            with self._get(url) as response:
                parser = _Links()
                parser.feed(response.text)
        except (_Retryable, requests.RequestException) as err:
            raise TransferError(f"cannot list {url}: {err}") from err
        base = urlsplit(url)
        names = set()
        for href in parser.hrefs:
            target = urlsplit(urljoin(url, href))
            if target.netloc != base.netloc or not target.path.startswith(base.path):
                continue
            rest = target.path[len(base.path) :]
            if rest.endswith("/") and rest.count("/") == 1 and not rest.startswith("."):
                names.add(unquote(rest[:-1]))
        return sorted(names)

    def child(self, name: str) -> HttpPeer:
        return HttpPeer(_join(self.url, quote(name)))


def open_peer(source: str | Path) -> Peer:
    """The peer for a delivery folder: a local path, ``http(s)://…`` or ``s3://…``."""
    text = str(source)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("http", "https"):
        return HttpPeer(text)
    if scheme in ("", "file"):
        path = Path(text.split("://", 1)[-1]).expanduser().resolve()
        fs, _ = filesystem(str(path))
        return FsPeer(str(path), fs, str(path))
    if scheme in ("s3", "s3a"):
        fs, path = filesystem(text)
        return FsPeer(text, fs, path)
    raise BadInput(f"cannot pull from {text!r}: use a local folder, an http(s):// or s3:// URL")


# ---------------------------------------------------------------- fetching -----------


def _retrying(what: str, attempts: int, backoff_s: float, call: Callable[[], T]) -> T:
    """``call()``, retried on _Retryable with exponential backoff, then a TransferError."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except _Retryable as err:
            if attempt >= attempts:
                raise TransferError(f"{what}: gave up after {attempt} attempts: {err}") from err
            time.sleep(backoff_s * 2 ** (attempt - 1))


def read_small(peer: Peer, relative: str, *, retries: int, backoff_s: float) -> bytes:
    """A manifest, retried like a download; MissingFile when the peer has none."""
    return _retrying(_join(peer.url, relative), retries + 1, backoff_s, lambda: peer.read(relative))


@dataclass(frozen=True, slots=True)
class Fetched:
    """A staging file as fetched: its size and hash, and what the peer said it holds."""

    size: int
    checksum: str
    received: int
    peer_size: int | None
    attempts: int


def fetch(
    peer: Peer,
    relative: str,
    dest: Path,
    *,
    expected: int,
    retries: int,
    backoff_s: float,
    on_bytes: Callable[[int], None] = lambda n: None,
) -> Fetched:
    """Bring ``relative`` into ``dest``, resuming what ``dest`` already holds.

    Stops at ``expected`` bytes, or when the peer's copy ends sooner (a file truncated
    at the source is fetched as it is, for quarantine). Transient failures are retried
    ``retries`` times with exponential backoff; MissingFile and TransferError are not.
    """
    sink = _Sink(dest, expected)
    on_bytes(sink.size)
    peer_size: int | None = None
    attempts = 0

    def attempt() -> int | None:
        nonlocal attempts
        attempts += 1
        return _receive(peer.open_from(relative, sink.size), sink, on_bytes)

    try:
        # A staging file complete from an earlier run needs nothing from the peer.
        if sink.size < expected:
            peer_size = _retrying(_join(peer.url, relative), retries + 1, backoff_s, attempt)
    except BaseException:
        sink.abandon()
        raise
    checksum = sink.finish()
    return Fetched(sink.size, checksum, sink.received, peer_size, attempts)


def _receive(stream: _Stream, sink: _Sink, on_bytes: Callable[[int], None]) -> int | None:
    """Append one answer of the peer to ``sink``; returns the peer's size, if it said."""
    try:
        if stream.offset != sink.size:
            asked = sink.size
            on_bytes(-sink.size)
            sink.restart()
            if stream.offset != 0:
                raise _Retryable(f"asked for byte {asked}, the peer sent from {stream.offset}")
        limit = sink.expected if stream.total is None else min(sink.expected, stream.total)
        for block in stream.chunks:
            sink.write(block)
            on_bytes(len(block))
            if sink.size > sink.expected:
                break  # longer than listed: enough to know it is wrong
        if sink.size < limit:
            raise _Retryable(f"short read: {sink.size} of {limit} bytes")
    finally:
        stream.close()
    return stream.total
