"""Benchmark of a delivery pull (DTS): a ≥ 2 GB delivery from a local HTTP server.

dpct's ``pull`` downloads, verifies (size, SHA-256, Parquet schema), moves each file
into the product store durably (fsync) and registers it in the metadata database. The
bound a user would script by hand is ``curl URL | tee FILE | sha256sum`` per file, on
fresh copies of the same files (the checksums then compared with the manifest's); it
neither fsyncs nor registers anything. It runs one file after another as a loop would,
and also four at a time (``xargs -P 4``), dpct's default parallelism. The same server
(sendfile, its own process) serves all; order alternates, median of 3.

Usage::

    python bench/ingest.py            # 10 files of 256 MiB raw (2.2 GB as Parquet)
    python bench/ingest.py --quick    # 4 files of 64 MiB
    python bench/ingest.py --json     # last line: one JSON object
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, parser, report

from dpct.config import Settings
from dpct.datamodel import NS_PER_DAY, DataSpec
from dpct.storage import Database, upgrade
from dpct.transfer import DeliveryWriter, Manifest, pull

HERE = Path(__file__).parent
ROW_BYTES = 48  # hk: an int64 time and five float64 channels
T0 = 700 * NS_PER_DAY


def make_delivery(folder: Path, files: int, file_mib: int) -> Manifest:
    """Random (incompressible) housekeeping tables, one per hour of OBMT."""
    writer = DeliveryWriter(folder, "bench-ingest")
    rows = file_mib * 2**20 // ROW_BYTES
    rng = np.random.default_rng(0)
    hour = 3600 * 10**9
    for k in range(files):
        start = T0 + k * hour
        table = pa.table(
            {
                "obmt_ns": np.linspace(start, start + hour - 1, rows).astype(np.int64),
                "fpa_temp_k": rng.normal(163.0, 0.01, rows),
                "payload_temp_k": rng.normal(293.0, 0.01, rows),
                "bam_bench_temp_k": rng.normal(293.0, 0.01, rows),
                "bus_voltage_v": rng.normal(28.0, 0.1, rows),
                "ccd_clock_voltage_v": rng.normal(12.0, 0.05, rows),
            }
        )
        writer.add_table(table, DataSpec("hk", start, start + hour), tag=f"b{k}")
    return writer.seal()


def run_dpct(work: Path, url: str, manifest: Manifest) -> float:
    home = work / "dpct-home"
    settings = Settings(home=home)
    db = Database(settings.url, create=True)
    upgrade(db)
    t0 = time.perf_counter()
    result = pull(db, settings, url)
    seconds = time.perf_counter() - t0
    registered = len(result.with_status("REGISTERED"))
    if result.status != "DONE" or registered != len(manifest.files):
        raise SystemExit(f"dpct pull ended {result.status}: {result.transfer.message}")
    db.engine.dispose()
    shutil.rmtree(home)
    return seconds


def run_curl(work: Path, url: str, manifest: Manifest, parallel: int) -> float:
    out = work / "curl-out"
    out.mkdir()
    names = "\n".join(f.file for f in manifest.files)
    script = (
        'set -o pipefail; mkdir -p "$2/$(dirname "$1")"; '
        'curl -sf "$0/$1" | tee "$2/$1" | sha256sum | cut -d" " -f1 > "$2/$1.sha256"'
    )
    t0 = time.perf_counter()
    subprocess.run(
        ["xargs", "-P", str(parallel), "-I{}", "bash", "-c", script, url, "{}", str(out)],
        input=names,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - t0
    for entry in manifest.files:  # the verification a hand script would do next
        digest = (out / f"{entry.file}.sha256").read_text().strip()
        if "sha256:" + digest != entry.checksum:
            raise SystemExit(f"curl fetched a bad copy of {entry.file}")
    shutil.rmtree(out)
    return seconds


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    files, file_mib = (4, 64) if args.quick else (10, 256)
    scratch = HERE.parent / ".bench-tmp"
    scratch.mkdir(exist_ok=True)  # absent from a fresh clone
    work = Path(tempfile.mkdtemp(prefix="ingest-", dir=scratch))
    rows: list[Row] = []
    server = None
    try:
        t0 = time.perf_counter()
        manifest = make_delivery(work / "delivery", files, file_mib)
        total_mb = manifest.total_bytes / 1e6
        print(
            f"delivery: {files} files, {total_mb:.0f} MB, made in {time.perf_counter() - t0:.0f} s"
        )
        port = 18000 + int(time.time()) % 1000
        server = subprocess.Popen(
            [sys.executable, str(HERE / "_http_server.py"), str(work / "delivery"), str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        url = f"http://127.0.0.1:{port}"
        systems = {
            "dpct": lambda: run_dpct(work, url, manifest),
            "curl": lambda: run_curl(work, url, manifest, 1),
            "curl -P4": lambda: run_curl(work, url, manifest, 4),
        }
        times: dict[str, list[float]] = {name: [] for name in systems}
        for r in range(args.rounds):
            order = list(systems) if r % 2 == 0 else list(reversed(systems))
            for name in order:
                seconds = systems[name]()
                times[name].append(seconds)
                print(f"round {r + 1}: {name:9s} {seconds:6.2f} s  {total_mb / seconds:7.0f} MB/s")
        case = f"{files}x{file_mib} MiB http"
        best_bound = 0.0
        for name, values in times.items():
            rate = total_mb / statistics.median(values)
            system = "dpct" if name == "dpct" else name
            rows.append(Row(system, case, "throughput", rate, "MB/s"))
            if name != "dpct":
                best_bound = max(best_bound, rate)
        dpct_rate = rows[0].value
        rows.append(Row("dpct", case, "ratio to best curl", dpct_rate / best_bound, "x"))
    finally:
        if server is not None:
            server.terminate()
        shutil.rmtree(work, ignore_errors=True)
    report("ingest", rows, args.json)


if __name__ == "__main__":
    main()
