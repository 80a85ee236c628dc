"""Prefect 3 baseline for bench/rms_throughput.py: N no-op tasks in one flow.

Starts Prefect's default local server (`prefect server start`, SQLite in a fresh
PREFECT_HOME), runs one flow that submits N no-op tasks, and stops the clock when the
server has recorded all N task runs as COMPLETED. Prints one line: ``jobs/s <value>``.
Run with a Python that has Prefect installed (`pip install -e .[bench]`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(n: int) -> None:
    home = tempfile.mkdtemp(prefix="prefect-bench-")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": home,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{api}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        os.environ.update(env)
        os.environ["PREFECT_API_URL"] = api
        from prefect import flow, task

        @task
        def noop(i: int) -> None:
            return None

        @flow
        def many(count: int) -> None:
            futures = [noop.submit(i) for i in range(count)]
            for f in futures:
                f.wait()

        start = time.perf_counter()
        state = many(n, return_state=True)
        flow_run_id = state.state_details.flow_run_id

        body = json.dumps(
            {
                "flow_runs": {"id": {"any_": [str(flow_run_id)]}},
                "task_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
            }
        ).encode()

        def completed() -> int:
            request = urllib.request.Request(
                f"{api}/task_runs/count", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.read())

        while completed() < n:
            time.sleep(0.2)
        elapsed = time.perf_counter() - start
        print(f"jobs/s {n / elapsed}")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main(int(sys.argv[1]))
