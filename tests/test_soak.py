"""The 5-minute soak (``bench/soak.py --ci``) as a test: mission days under chaos.

It runs the soak as its own process and asserts what must hold whatever the load and
whichever processes chaos happened to kill: every workflow SUCCESS, nothing lost,
duplicated, corrupted, missing or orphaned. It soaks PostgreSQL (the soak's own
cluster, never the server on 5432) where the PostgreSQL binaries are installed, else
SQLite; with DPCT_REQUIRE_POSTGRES=1 (CI) missing binaries are an error. Deselect it
with ``-m "not soak"``; the fast tier (``-m "not slow"``) leaves it out too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.acceptance, pytest.mark.slow, pytest.mark.soak]

ROOT = Path(__file__).resolve().parents[1]
MUST_BE_ZERO = ("not_final", "lost", "duplicated", "corrupted", "missing", "orphaned")
LIMIT_S = 15 * 60  # 3.5 min of chaos, then settling (bounded by the soak itself)


def _backend() -> list[str]:
    if shutil.which("initdb") or list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return []
    if os.environ.get("DPCT_REQUIRE_POSTGRES") == "1":
        pytest.fail("the soak needs initdb and pg_ctl (DPCT_REQUIRE_POSTGRES=1)")
    return ["--sqlite"]


def _run_soak() -> tuple[int, str]:
    command = [sys.executable, str(ROOT / "bench" / "soak.py"), "--ci", "--json", *_backend()]
    soak = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = soak.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        soak.send_signal(signal.SIGTERM)  # the soak cleans up its processes and cluster
        try:
            out, _ = soak.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(soak.pid, signal.SIGKILL)
            out, _ = soak.communicate()
        pytest.fail(f"the soak ran past {LIMIT_S} s:\n{out[-6000:]}")
    return soak.returncode, out


def test_soak_every_workflow_succeeds_and_nothing_is_lost_duplicated_or_orphaned() -> None:
    code, out = _run_soak()
    summary = [line for line in out.splitlines() if line.startswith('{"bench": "soak"')]
    assert summary, f"the soak printed no summary:\n{out[-6000:]}"
    found = {row["metric"]: row["value"] for row in json.loads(summary[-1])["rows"]}
    tail = out[-6000:]
    assert found["deliveries"] >= 1 and found["workflows"] >= 1, tail
    assert sum(v for k, v in found.items() if k.startswith("killed ")) >= 1, tail
    assert {k: found[k] for k in MUST_BE_ZERO} == dict.fromkeys(MUST_BE_ZERO, 0), tail
    assert found["workflows SUCCESS"] == found["workflows"], tail
    assert code == 0, tail
