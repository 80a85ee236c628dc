"""A private, throw-away PostgreSQL cluster, for tests and the soak that restart it.

``initdb`` into a temporary folder and a free port on 127.0.0.1; run as the
``postgres`` user when the caller is root (initdb and postgres refuse to run as root).
The system's server (5432) is never touched, so restarting this one disturbs nothing
else.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries (initdb, pg_ctl) are not installed here."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _initdb() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve()
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1] if versions else None


def postgres_binaries_found() -> bool:
    return _initdb() is not None


class PostgresCluster:
    """One private cluster; ``server_settings`` are passed to the server as ``-c`` options."""

    def __init__(
        self, *, prefix: str = "dpct-pg-", server_settings: Mapping[str, str] | None = None
    ) -> None:
        initdb = _initdb()
        if initdb is None:
            raise PostgresUnavailable("PostgreSQL binaries (initdb, pg_ctl) not found")
        self.bin = initdb.parent
        # Under /tmp, not a work folder: the postgres user must reach it, and a socket
        # path must stay short.
        self.folder = Path(tempfile.mkdtemp(prefix=prefix))
        self.data = self.folder / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        self.server_settings = dict(server_settings or {})
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/dpct"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise RuntimeError(f"{args[0]} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def _options(self) -> str:
        extra = "".join(f" -c {key}={value}" for key, value in self.server_settings.items())
        return f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1{extra}"

    def init(self) -> None:
        """Create the cluster, start it, and create the (empty) database ``dpct``."""
        if self.as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "dpct")

    def start(self) -> None:
        log_file = str(self.folder / "postgres.log")
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", self._options(), "-l", log_file, "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, mode: str, down_s: float) -> None:
        """Stop (``fast``, or ``immediate``: a crash and recovery), stay down, start."""
        self.stop(mode)
        time.sleep(down_s)
        self.start()

    def stop_command(self) -> str:
        """The shell line that stops the cluster, for a watchdog that outlives the caller."""
        stop = f"{self.bin / 'pg_ctl'} -D {self.data} -m immediate -w stop"
        return f"runuser -u postgres -- {stop}" if self.as_postgres else stop

    def remove(self) -> None:
        """Stop the server at once and delete the cluster."""
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
