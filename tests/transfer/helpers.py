"""Real peers for transfer tests: hk deliveries on disk and an HTTP server that misbehaves.

The HTTP server is ``http.server`` in a thread, with ``Range`` support, a directory
listing (for watching over HTTP), and two faults a real network has: a connection cut
in the middle of a file, and a server that ignores ``Range``. It counts what it sends,
so a test can tell a resumed download from one started over.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pyarrow as pa

from dpct.datamodel import NS_PER_S, DataSpec
from dpct.storage import Database, list_datasets, store_for
from dpct.transfer import Manifest, write_delivery

DAY_NS = 86_400 * NS_PER_S
T0 = 5000 * DAY_NS


def hk_table(start_ns: int, rows: int, *, seed: int = 0) -> pa.Table:
    """An ``hk`` table (the simulator's housekeeping schema) of random samples."""
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "obmt_ns": pa.array(start_ns + np.arange(rows, dtype=np.int64) * NS_PER_S),
            "fpa_temp_k": rng.normal(163.0, 0.1, rows),
            "payload_temp_k": rng.normal(293.0, 0.1, rows),
            "bam_bench_temp_k": rng.normal(291.0, 0.1, rows),
            "bus_voltage_v": rng.normal(28.0, 0.01, rows),
            "ccd_clock_voltage_v": rng.normal(10.0, 0.01, rows),
        }
    )


def hk_spec(hour: int) -> DataSpec:
    start = T0 + hour * 3600 * NS_PER_S
    return DataSpec("hk", start, start + 3600 * NS_PER_S)


def hk_delivery(
    folder: Path, name: str, hours: range | list[int], *, rows: int = 200, seed: int = 0
) -> Manifest:
    """A sealed delivery of one hk file per hour, with distinct random contents."""
    return write_delivery(
        folder,
        name,
        [(hk_spec(h), hk_table(hk_spec(h).start_ns, rows, seed=seed * 1000 + h)) for h in hours],
    )


def store_checksums(db: Database) -> dict[int, str]:
    """Every registered dataset's stored bytes, hashed afresh (``ProductStore.checksum``)."""
    with db.read() as conn:
        rows = list_datasets(conn, limit=100_000)
    return {d.id: store_for(d.location).checksum(d.location) for d in rows}


def sha256_hex(path: Path) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class DeliveryServer:
    """Serve ``root`` over HTTP on 127.0.0.1 in a thread, recording every GET."""

    def __init__(
        self,
        root: Path,
        *,
        cut: set[str] | None = None,
        honour_range: bool = True,
        hold: set[str] | None = None,
    ):
        self.root = root
        self.cut = set(cut or ())  # relative paths to cut halfway the first time
        # relative paths sent halfway, then held until release(): a pull stuck mid-file
        self.hold = set(hold or ())
        self.released = threading.Event()
        self.honour_range = honour_range
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str | None]] = []  # (relative path, Range header)
        self.sent: Counter[str] = Counter()  # body bytes sent per relative path
        server = self

        class Handler(SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                relative = unquote(urlsplit(self.path).path).lstrip("/")
                path = root / relative
                with server.lock:
                    server.requests.append((relative, self.headers.get("Range")))
                if not path.is_file():
                    super().do_GET()  # listings, redirects, 404
                    return
                server._send_file(self, relative, path)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def ranges(self, relative: str) -> list[str | None]:
        with self.lock:
            return [r for p, r in self.requests if p == relative]

    def _send_file(self, handler: SimpleHTTPRequestHandler, relative: str, path: Path) -> None:
        size = path.stat().st_size
        start = 0
        wanted = handler.headers.get("Range")
        match = _RANGE.match(wanted or "")
        if match and self.honour_range:
            start = int(match.group(1))
            if start >= size:
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{size}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(size - start))
        handler.end_headers()
        with self.lock:
            cut = relative in self.cut
            self.cut.discard(relative)
        stop = start + (size - start) // 2 if cut else size
        pause = start + (size - start) // 2 if relative in self.hold else -1
        with open(path, "rb") as f:
            f.seek(start)
            position = start
            while position < stop:
                if position >= pause >= 0:
                    handler.wfile.flush()
                    self.released.wait()
                    pause = -1
                end = pause if pause > position else stop
                block = f.read(min(1 << 20, end - position))
                handler.wfile.write(block)
                position += len(block)
                with self.lock:
                    self.sent[relative] += len(block)
        if cut:
            handler.wfile.flush()
            handler.connection.shutdown(socket.SHUT_RDWR)
            handler.close_connection = True

    def release(self) -> None:
        """Let held files go on, now and for every later request."""
        self.hold.clear()
        self.released.set()

    def close(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def flip_bytes(path: Path, at: int | None = None) -> None:
    """Corrupt a file in place, keeping its size."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0xFF
    data[i + 1] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep)
    assert os.path.getsize(path) == keep
