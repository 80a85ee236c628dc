"""Console queries on a workflow with 10⁶ jobs (10⁷ with --huge): dpct vs OFFSET paging.

Usage: python bench/console_queries.py [--quick] [--json] [--huge] [--sqlite-only]

What an operator's screen asks for, timed through the service functions: a page 10,000
pages deep, the first page of a rare status (FAILED), and the per-status counts. The
baseline is what a straightforward implementation does: LIMIT/OFFSET paging and
COUNT(*) ... GROUP BY status. p99 over 100 random pages (and 100 repeats of the others).
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, noop_descriptor, parser, report

from dpct.config import Settings
from dpct.datamodel import NS_PER_S, DataSpec
from dpct.storage import Database, upgrade
from dpct.storage._schema import jobs
from dpct.tasks import load_entry_points
from dpct.testing import postgres_available, postgres_database
from dpct.workflows import service

PAGE = 100
RARE = 100
DESCRIPTOR = noop_descriptor("Big")


def _p99(fn: Callable[[int], object], args: list[int]) -> float:
    times = []
    for a in args:
        t = time.perf_counter()
        fn(a)
        times.append((time.perf_counter() - t) * 1000.0)
    return float(np.percentile(times, 99))


def run(url: str, home: Path, n: int, case: str) -> list[Row]:
    home.mkdir(parents=True, exist_ok=True)
    db = Database(url)
    upgrade(db)
    (home / "big.toml").write_text(DESCRIPTOR)
    service.register_descriptor(db, home / "big.toml")
    t = time.perf_counter()
    wf = service.submit(db, "Big", DataSpec("testing_counts", 0, n * NS_PER_S))
    print(f"{case}: {n} jobs planned and stored in {time.perf_counter() - t:.1f} s", flush=True)
    rng = random.Random(1)
    with db.write() as conn:
        first = conn.execute(sa.select(sa.func.min(jobs.c.id)).where(jobs.c.workflow_id == wf))
        base = first.scalar_one()
        rare = sorted(rng.sample(range(base, base + n), RARE))
        conn.execute(sa.update(jobs).where(jobs.c.id.in_(rare)).values(status="FAILED"))
    if db.is_postgresql:
        with db.write() as conn:
            conn.exec_driver_sql("ANALYZE")

    pages = [rng.randrange(n // PAGE) for _ in range(100)]
    deep = [10_000, *pages[:99]] if n // PAGE > 10_000 else pages

    def dpct_page(k: int) -> None:
        rows = service.jobs(db, wf, page=k, page_size=PAGE)
        assert len(rows) == PAGE and rows[0].seq == k * PAGE + 1

    def offset_page(k: int) -> None:
        with db.read() as conn:
            rows = conn.execute(
                sa.select(jobs)
                .where(jobs.c.workflow_id == wf)
                .order_by(jobs.c.seq)
                .limit(PAGE)
                .offset(k * PAGE)
            ).all()
        assert len(rows) == PAGE and rows[0].seq == k * PAGE + 1

    def dpct_rare(_: int) -> None:
        rows = service.jobs(db, wf, status="FAILED", page_size=PAGE)
        assert [r.id for r in rows] == rare

    def offset_rare(_: int) -> None:
        with db.read() as conn:
            rows = conn.execute(
                sa.select(jobs)
                .where(jobs.c.workflow_id == wf, jobs.c.status == "FAILED")
                .order_by(jobs.c.id)
                .limit(PAGE)
                .offset(0)
            ).all()
        assert [r.id for r in rows] == rare

    def dpct_counts(_: int) -> None:
        counts = service.workflow(db, wf).counts
        assert counts == {"QUEUED": n - RARE, "FAILED": RARE}

    def offset_counts(_: int) -> None:
        with db.read() as conn:
            counts = dict(
                conn.execute(
                    sa.select(jobs.c.status, sa.func.count())
                    .where(jobs.c.workflow_id == wf)
                    .group_by(jobs.c.status)
                ).all()
            )
        assert counts == {"QUEUED": n - RARE, "FAILED": RARE}

    reps = list(range(100))
    rows = [
        Row("dpct", f"{case} page deep p99", "latency", _p99(dpct_page, deep), "ms"),
        Row("offset", f"{case} page deep p99", "latency", _p99(offset_page, deep), "ms"),
        Row("dpct", f"{case} rare status p99", "latency", _p99(dpct_rare, reps), "ms"),
        Row("offset", f"{case} rare status p99", "latency", _p99(offset_rare, reps), "ms"),
        Row("dpct", f"{case} status counts p99", "latency", _p99(dpct_counts, reps), "ms"),
        Row("offset", f"{case} status counts p99", "latency", _p99(offset_counts, reps), "ms"),
    ]
    db.dispose()
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--huge", action="store_true", help="10⁷ jobs")
    p.add_argument("--sqlite-only", action="store_true")
    args = p.parse_args()
    n = 100_000 if args.quick else 10_000_000 if args.huge else 1_000_000
    Settings()  # fail early on a bad environment
    import os

    os.environ.setdefault("DPCT_TASK_MODULES", "dpct.testing.tasks")
    load_entry_points()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="dpct-bench-", dir=Path.cwd()) as tmp:
        rows += run(f"sqlite:///{tmp}/big.sqlite3", Path(tmp) / "s", n, "sqlite")
        if postgres_available() and not args.sqlite_only:
            with postgres_database() as url:
                rows += run(url, Path(tmp) / "p", n, "postgresql")
    report("console_queries", rows, args.json)


if __name__ == "__main__":
    main()
