"""Small builders shared by tests: descriptors written to files, waiting for states."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
