"""A local cluster: a coordinator and N nodes as child processes of this one.

It is what ``dpct demo`` runs and what the acceptance tests drive: real processes, so a
test can SIGKILL, SIGSTOP or SIGTERM one of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path


class LocalCluster:
    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        nodes: int = 2,
        slots: int = 2,
        log_dir: Path | None = None,
        coordinator: bool = True,
    ) -> None:
        self.env = {**os.environ, **(env or {})}
        self.n_nodes = nodes
        self.slots = slots
        self.log_dir = log_dir
        self.with_coordinator = coordinator
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        out = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = (self.log_dir / f"{name}.log").open("ab")  # type: ignore[assignment]
        process = subprocess.Popen(
            [sys.executable, "-m", "dpct", *args], env=self.env, stdout=out, stderr=out
        )
        self.processes[name] = process
        return process

    def start(self) -> LocalCluster:
        if self.with_coordinator:
            self.start_coordinator()
        for k in range(1, self.n_nodes + 1):
            self.start_node(f"pfs.pr{k}")
        return self

    def start_coordinator(
        self, key: str = "pfs.coordinator", name: str | None = None
    ) -> subprocess.Popen[bytes]:
        """A coordinator process (``key`` names its log); a second one stands by.

        Without ``name`` it takes the first free of pfs.coordinator, pfs.coordinator.2 …
        """
        args = [] if name is None else ["--name", name]
        return self._spawn(key, ["coordinator", "start", *args])

    def start_node(self, name: str, slots: int | None = None) -> subprocess.Popen[bytes]:
        return self._spawn(
            name, ["node", "start", "--name", name, "--slots", str(slots or self.slots)]
        )

    def signal(self, name: str, sig: int) -> None:
        self.processes[name].send_signal(sig)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM everything (drain), then SIGKILL what is still alive after ``timeout``."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
