"""RMS/PFS throughput: no-op jobs through a coordinator and 2 nodes, on the real path.

Usage: python bench/rms_throughput.py [--quick] [--json] [--prefect-python PY]

Real path: leases with fencing tokens, worker processes, a log file per job, events,
a solution id per job, incremental counts. Reported side by side with:

- raw: one process issuing the same claim and completion statements, one job per
  transaction, same database and durability (the floor of our own SQL);
- prefect: Prefect 3's default local server on SQLite running the same number of no-op
  tasks in one flow, when Prefect is installed (`pip install -e .[bench]`).

Latency is dispatch latency (ready → started) at a steady arrival rate of half the
measured throughput: job i becomes ready at t0 + i / rate.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, noop_descriptor, parser, report

from dpct.config import Settings
from dpct.datamodel import NS_PER_S, DataSpec
from dpct.processing import LocalCluster
from dpct.processing import service as processing_service
from dpct.storage import (
    Completion,
    Database,
    commit_completions,
    lease_jobs,
    upgrade,
)
from dpct.storage._schema import jobs
from dpct.testing import postgres_available, postgres_database
from dpct.workflows import service

DESCRIPTOR = noop_descriptor("NoopWorkflow")


def _setup(home: Path, url: str) -> tuple[Settings, Database, dict[str, str]]:
    settings = Settings(home=home, database_url=url)
    db = Database(settings.url, sqlite_synchronous=settings.sqlite_synchronous)
    upgrade(db)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "noop.toml"
    path.write_text(DESCRIPTOR)
    service.register_descriptor(db, path)
    env = {
        "DPCT_HOME": str(home),
        "DPCT_DATABASE_URL": url,
        "DPCT_TASK_MODULES": "dpct.testing.tasks",
    }
    return settings, db, env


def _submit(db: Database, n: int) -> int:
    return service.submit(db, "NoopWorkflow", DataSpec("testing_counts", 0, n * NS_PER_S))


def _schedule(db: Database, wf: int, t0: float, rate: float | None) -> None:
    """Make job i ready at t0 (+ i/rate): a steady arrival process, set before nodes start."""
    step = 0.0 if rate is None else 1.0 / rate
    with db.write() as conn:
        conn.execute(
            sa.update(jobs)
            .where(jobs.c.workflow_id == wf)
            .values(not_before=t0 + (jobs.c.seq - 1) * step, ready_at=t0 + (jobs.c.seq - 1) * step)
        )


def _times(db: Database, wf: int) -> np.ndarray:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(jobs.c.ready_at, jobs.c.started_at, jobs.c.ended_at, jobs.c.status).where(
                jobs.c.workflow_id == wf
            )
        ).all()
    assert all(r.status == "SUCCESS" for r in rows), "every job must succeed"
    return np.array([(r.ready_at, r.started_at, r.ended_at) for r in rows], dtype=float)


def _wait_done(db: Database, wf: int, n: int) -> None:
    deadline = time.time() + 900
    while service.workflow(db, wf).counts.get("SUCCESS", 0) < n:
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _wait_nodes_up(db: Database, nodes: int) -> None:
    want = {f"pfs.pr{k}" for k in range(1, nodes + 1)} | {"pfs.coordinator"}
    deadline = time.time() + 120
    while not want <= {x.name for x in processing_service.nodes(db) if x.status == "UP"}:
        assert time.time() < deadline, "nodes did not come up"
        time.sleep(0.1)


def dpct_case(
    home: Path, url: str, n: int, nodes: int, slots: int, repeats: int
) -> tuple[list[float], float, float]:
    """Throughputs (jobs/s) of ``repeats`` bursts of n jobs, then p50/p99 dispatch latency
    (ms) at a steady arrival rate of half the median throughput. One cluster throughout;
    each batch of jobs is made ready only once the nodes are up and idle."""
    _, db, env = _setup(home, url)
    verbose = bool(os.environ.get("DPCT_BENCH_VERBOSE"))
    throughputs = []
    with LocalCluster(env, nodes=nodes, slots=slots, log_dir=home / "procs"):
        _wait_nodes_up(db, nodes)
        for _ in range(repeats):
            wf = _submit_later(db, n)
            t0 = time.time() + 0.5
            _schedule(db, wf, t0, None)
            _wait_done(db, wf, n)
            times = _times(db, wf)
            # From the first start, so a node's idle poll interval counts as latency
            # (measured below), not as lost throughput.
            throughputs.append(n / (times[:, 2].max() - times[:, 1].min()))
            if verbose:
                print(f"    burst: {throughputs[-1]:.0f} jobs/s", flush=True)
        rate = float(np.median(throughputs)) / 2
        m = max(200, min(n, int(rate * 10)))
        wf = _submit_later(db, m)
        _schedule(db, wf, time.time() + 0.5, rate)
        _wait_done(db, wf, m)
        times = _times(db, wf)
    latency = (times[:, 1] - times[:, 0]) * 1000.0
    db.dispose()
    return throughputs, float(np.percentile(latency, 50)), float(np.percentile(latency, 99))


def _submit_later(db: Database, n: int) -> int:
    """Submit n jobs that no node may start yet (``_schedule`` releases them), atomically."""
    row = service.get_descriptor(db, "NoopWorkflow")
    with db.write() as conn:
        wf = service.create_workflow(
            conn,
            row,
            DataSpec("testing_counts", 0, n * NS_PER_S),
            trigger="bench",
            now=time.time(),
        )
        conn.execute(
            sa.update(jobs).where(jobs.c.workflow_id == wf).values(not_before=time.time() + 3600)
        )
    return wf


def raw_case(home: Path, url: str, n: int) -> float:
    """The same claim and completion statements from one process, one job per transaction."""
    home.mkdir(parents=True, exist_ok=True)
    _, db, _ = _setup(home, url)
    wf = _submit(db, n)
    _schedule(db, wf, 0.0, None)
    start = time.perf_counter()
    for _ in range(n):
        with db.write() as conn:
            (job,) = lease_jobs(conn, node="raw", free_slots=1, now=time.time(), lease_s=30)
        with db.write() as conn:
            commit_completions(
                conn,
                [Completion(job.id, job.token, "success", task_type="testing.noop")],
                now=time.time(),
                retry_backoff_s=1.0,
            )
    elapsed = time.perf_counter() - start
    assert service.workflow(db, wf).counts == {"SUCCESS": n}
    db.dispose()
    return n / elapsed


def prefect_case(n: int, python: str | None) -> float | None:
    """Prefect's figure from bench/_prefect_noop.py, run by a Python that has Prefect."""
    import importlib.util
    import subprocess

    if python is None:
        if importlib.util.find_spec("prefect") is None:
            return None
        python = sys.executable
    out = subprocess.run(
        [python, str(Path(__file__).with_name("_prefect_noop.py")), str(n)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    ).stdout
    return float(out.strip().splitlines()[-1].split()[-1])


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--prefect-python", help="a Python with Prefect 3 (default: this one)")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--slots", type=int, default=2, help="slots per node")
    p.add_argument("--repeats", type=int, default=3, help="bursts per backend (median)")
    p.add_argument("--sqlite-only", action="store_true")
    p.add_argument("--no-prefect", action="store_true")
    args = p.parse_args()
    n = 4000 if args.quick else 20_000
    os.environ.setdefault("DPCT_TASK_MODULES", "dpct.testing.tasks")
    rows: list[Row] = []
    backends = ["sqlite"]
    if postgres_available() and not args.sqlite_only:
        backends.append("postgresql")
    for case in backends:
        with tempfile.TemporaryDirectory(prefix="dpct-bench-", dir=Path.cwd()) as tmp:
            raws = []
            if case == "sqlite":
                bursts, p50, p99 = dpct_case(
                    Path(tmp) / "dpct",
                    f"sqlite:///{tmp}/dpct.sqlite3",
                    n,
                    args.nodes,
                    args.slots,
                    args.repeats,
                )
                for k in range(args.repeats):
                    raws.append(raw_case(Path(tmp) / f"raw{k}", f"sqlite:///{tmp}/raw{k}.db", n))
            else:
                with postgres_database() as url:
                    bursts, p50, p99 = dpct_case(
                        Path(tmp) / "dpct", url, n, args.nodes, args.slots, args.repeats
                    )
                for k in range(args.repeats):
                    with postgres_database() as url:
                        raws.append(raw_case(Path(tmp) / f"raw{k}", url, n // 2))
        throughput, raw = float(np.median(bursts)), float(np.median(raws))
        rows += [
            Row("dpct", case, "throughput", throughput, "jobs/s"),
            Row("dpct", case, "dispatch latency p50", p50, "ms"),
            Row("dpct", case, "dispatch latency p99", p99, "ms"),
            Row("raw", case, "throughput", raw, "jobs/s"),
        ]
        print(
            f"{case}: dpct {throughput:.0f} jobs/s (bursts {', '.join(f'{b:.0f}' for b in bursts)}"
            f"; {throughput / raw:.0%} of raw {raw:.0f}), latency p50 {p50:.1f} ms "
            f"p99 {p99:.1f} ms",
            flush=True,
        )
    prefect = None if args.no_prefect else prefect_case(2000, args.prefect_python)
    if prefect is not None:
        rows.append(Row("prefect", "sqlite", "throughput", prefect, "jobs/s"))
        print(f"prefect: {prefect:.1f} jobs/s (2,000 no-op tasks in one flow)", flush=True)
    else:
        print("prefect: not installed (pip install -e .[bench]); skipped")
    report("rms_throughput", rows, args.json)


if __name__ == "__main__":
    main()
