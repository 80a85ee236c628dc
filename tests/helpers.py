"""Small builders shared by tests: descriptors written to files, waiting for states."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dpct.config import Settings
from dpct.storage import Database
from dpct.workflows import service


def write_descriptor(path: Path, **fields: Any) -> Path:
    path.write_text(json.dumps(fields))
    return path


def register(db: Database, tmp_path: Path, name: str, steps: list[dict[str, Any]], **extra: Any):
    fields = {"name": name, "version": 1, "data_type": "testing_counts", "steps": steps, **extra}
    return service.register_descriptor(db, write_descriptor(tmp_path / f"{name}.json", **fields))


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # [state, ppid, ...]


def alive(pid: int) -> bool:
    fields = proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def worker_of(node_pid: int) -> int:
    """The pid of a 1-slot node's worker process (not multiprocessing's resource tracker)."""

    def find() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            stat = proc_stat(int(entry.name)) if entry.name.isdigit() else None
            if stat is not None and stat[1] == str(node_pid):
                try:
                    if b"spawn_main" in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    (pid,) = wait_for(find, what=f"the worker of node pid {node_pid}")
    return pid


def child_env(settings: Settings) -> dict[str, str]:
    """Environment for dpct child processes pointing at this test's home and database."""
    return {
        "DPCT_HOME": str(settings.home),
        "DPCT_DATABASE_URL": settings.database_url,
        "DPCT_TASK_MODULES": "dpct.testing.tasks",
        "DPCT_LEASE_S": str(settings.lease_s),
        "DPCT_HEARTBEAT_S": str(settings.heartbeat_s),
        "DPCT_NODE_DOWN_AFTER_S": str(settings.node_down_after_s),
        "DPCT_COORDINATOR_TICK_S": str(settings.coordinator_tick_s),
        "DPCT_RETRY_BACKOFF_S": str(settings.retry_backoff_s),
    }


def environment_elsewhere(monkeypatch: Any, tmp_path: Path) -> Path:
    """Point this process's DPCT_* environment away from the test's node: an unreachable
    database, another home and outbox. A task that read its settings from the
    environment (rather than from its node) would fail or write there; returns that
    other home, to look into."""
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("DPCT_HOME", str(elsewhere))
    monkeypatch.setenv("DPCT_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/elsewhere")
    monkeypatch.setenv("DPCT_OUTBOX_URL", str(elsewhere / "outbox"))
    return elsewhere
