"""Benchmark of the mission simulator (dpct.sim): AF windows per second and a day's wall time.

Usage::

    python bench/simulate.py            # OBMT day 700 at scale 1: 1.5·10⁷ AF windows and
                                        # 8·10⁴ BAM images in 15-min chunks, 2 workers
    python bench/simulate.py --quick    # the same day at scale 0.02 (under a minute)
    python bench/simulate.py --json     # last line: one JSON object

Chunks are consumed and dropped (nothing is written), so the figures are the simulator's
own. Peak memory is the resident-set high-water mark of this process and of the largest
worker (Linux ``ru_maxrss``); their sum with one term per worker bounds the total.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

try:
    import dpct.sim  # noqa: F401
except ImportError:  # running from a source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pyarrow.compute as pc

from dpct.sim import SimConfig, mission_day, simulate


def run(scale: float, day: int, workers: int, seed: int) -> dict[str, float]:
    """Simulate one OBMT day; return counts, wall time and peak memory."""
    config = SimConfig(seed=seed, scale=scale)
    counts = {"af_windows": 0, "af_samples": 0, "bam_images": 0, "gsr_observations": 0}
    n_bytes = 0
    start = time.perf_counter()
    cpu0 = time.process_time()
    for chunk in simulate(config, mission_day(day), workers=workers):
        af = chunk.products["af_windows"]
        counts["af_windows"] += af.num_rows
        counts["af_samples"] += int(pc.sum(af.column("n_samples")).as_py() or 0)
        counts["bam_images"] += chunk.products["bam_images"].num_rows // 2
        counts["gsr_observations"] += chunk.products["gsr_observations"].num_rows
        n_bytes += sum(t.nbytes for t in chunk.products.values())
        n_bytes += sum(t.nbytes for t in chunk.truth.values())
    wall = time.perf_counter() - start
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        **counts,
        "wall_s": wall,
        "main_cpu_s": time.process_time() - cpu0,
        "table_mib": n_bytes / 2**20,
        "peak_rss_main_mib": self_kib / 1024,
        "peak_rss_worker_mib": child_kib / 1024,
        "peak_rss_bound_mib": (self_kib + max(workers, 1) * child_kib) / 1024
        if workers > 1
        else self_kib / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="scale 0.02 (small test day)")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--scale", type=float, default=None, help="volume scale (default 1)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--day", type=int, default=700, help="OBMT day")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    scale = args.scale if args.scale is not None else (0.02 if args.quick else 1.0)
    case = f"day{args.day}-scale{scale:g}-workers{args.workers}"
    r = run(scale, args.day, args.workers, args.seed)
    rate = r["af_windows"] / r["wall_s"]
    rows = [
        ("throughput", rate, "windows/s"),
        ("day_wall_time", r["wall_s"], "s"),
        ("af_windows", r["af_windows"], "windows"),
        ("af_samples", r["af_samples"], "samples"),
        ("bam_images", r["bam_images"], "images"),
        ("gsr_observations", r["gsr_observations"], "rows"),
        ("bam_rate", r["bam_images"] / r["wall_s"], "images/s"),
        ("tables_streamed_total", r["table_mib"], "MiB"),
        ("peak_rss_main", r["peak_rss_main_mib"], "MiB"),
        ("peak_rss_worker", r["peak_rss_worker_mib"], "MiB"),
        ("peak_rss_bound", r["peak_rss_bound_mib"], "MiB"),
    ]
    print(f"dpct.sim — one OBMT day ({case})")
    print(f"{'metric':<24}{'value':>16}  unit")
    for metric, value, unit in rows:
        shown = f"{value:,.0f}" if value >= 100 else f"{value:,.3g}"
        print(f"{metric:<24}{shown:>16}  {unit}")
    if args.json:
        print(
            json.dumps(
                {
                    "bench": "simulate",
                    "rows": [
                        {"system": "dpct", "case": case, "metric": m, "value": v, "unit": u}
                        for m, v, u in rows
                    ],
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
