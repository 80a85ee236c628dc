"""Benchmark of AIM image parameters: a full day of AF windows against per-window scipy.

dpct fits centroid, flux and background of every window (Fisher scoring on the
shifted-Poisson likelihood, formal errors, flags; Numba, parallel over windows, in record
batches) with an LSF calibrated on the day's first hour. The baseline a user would write
is ``scipy.optimize.least_squares`` per window on the same likelihood (deviance
residuals of y + RON² ~ Poisson(λ + RON²), analytic Jacobian, the same LSF, the same
start values, and its x-tolerance set to a hundredth of the parameters' formal errors,
as dpct's), timed on a sample of the day's windows in the same run. The day is also run
as a pipeline would: Parquet in, batches of 10⁶ windows fitted, Parquet out, in a fresh
process whose peak resident memory is reported (interpreter, Numba and Arrow included).

The windows come from the simulator (``dpct.sim``, seed 3, OBMT day 700, two workers).

Usage::

    python bench/aim.py            # scale 1: ≈ 1.5·10⁷ windows (the full day)
    python bench/aim.py --quick    # scale 0.1: ≈ 1.5·10⁶ windows
    python bench/aim.py --json     # last line: one JSON object
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.optimize import least_squares

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, parser, report

import dpct.pipelines.aim as aim
from dpct.pipelines.aim._image_params import start_values
from dpct.sim import SimConfig, Simulator, mission_day

DAY = 700
HOUR_NS = 3600 * 10**9


def simulate(scale: float) -> pa.Table:
    sim = Simulator(SimConfig(seed=3, scale=scale, products=("af_windows",)))
    tables = [c.products["af_windows"] for c in sim.chunks(mission_day(DAY), workers=2)]
    return pa.concat_tables(tables).combine_chunks()


def run_scipy(
    windows: pa.Table, lsf: aim.LsfCalibration, rows: np.ndarray
) -> tuple[float, np.ndarray]:
    """least_squares per window: deviance residuals, analytic Jacobian, dpct's start."""
    tel = windows.take(pa.array(rows))
    n_s = tel.column("n_samples").to_numpy().astype(np.int64)
    offsets = np.r_[0, np.cumsum(n_s)]
    values = tel.column("samples_e").combine_chunks().flatten().to_numpy().astype(np.float64)
    ccd = tel.column("ccd_index").to_numpy()
    colour = tel.column("bp_rp_mag").to_numpy()
    t = tel.column("obmt_ns").to_numpy()
    ron = tel.column("ron_e").to_numpy().astype(np.float64)
    out = np.empty((rows.size, 3))
    t0 = time.perf_counter()
    for i in range(rows.size):
        y = values[offsets[i] : offsets[i + 1]]
        n = y.size
        k = np.arange(n, dtype=np.float64)
        r2 = ron[i] ** 2
        x0 = np.array(start_values(y, n, r2, np.ones(n, bool), np.empty(n)))
        yp = np.maximum(y + r2, 1e-3)

        def model(p, k=k, i=i):
            prof, dprof = lsf.profile_and_derivative(k - p[0], ccd[i], colour[i], t[i])
            return p[1] * prof + p[2], prof, dprof

        def fun(p, yp=yp, r2=r2, model=model):
            lam = np.maximum(model(p)[0] + r2, 1e-3)
            dev = 2 * (yp * np.log(yp / lam) - (yp - lam))
            return np.sign(lam - yp) * np.sqrt(np.maximum(dev, 0.0))

        def jac(p, yp=yp, r2=r2, model=model):
            lam_m, prof, dprof = model(p)
            lam = np.maximum(lam_m + r2, 1e-3)
            r = fun(p)
            with np.errstate(divide="ignore", invalid="ignore"):
                dr = np.where(np.abs(r) > 1e-8, (1 - yp / lam) / r, 1 / np.sqrt(lam))
            return np.stack([-p[1] * dprof * dr, prof * dr, dr], axis=1)

        j0 = jac(x0)
        sigma = np.sqrt(np.abs(np.diag(np.linalg.pinv(j0.T @ j0))))
        sigma = np.where(sigma > 0, sigma, 1.0)
        xtol = 0.01 / max(1.0, float(np.linalg.norm(x0 / sigma)))
        sol = least_squares(
            fun, x0, jac=jac, x_scale=sigma, xtol=xtol, ftol=None, gtol=None, max_nfev=100
        )
        out[i] = sol.x
    return time.perf_counter() - t0, out


def day_with_parquet(src: str, dst: str, lsf_path: str) -> None:
    """Parquet in, batches fitted, Parquet out (run in a fresh process)."""
    lsf = aim.LsfCalibration.from_table(pq.read_table(lsf_path))
    reader = pq.ParquetFile(src)
    with pq.ParquetWriter(dst, aim.IMAGE_PARAMS_SCHEMA) as writer:
        for batch in reader.iter_batches(batch_size=1_000_000):
            writer.write_table(aim.fit_image_parameters(pa.Table.from_batches([batch]), lsf))
    print(f"peak_rss_kb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    scale = 0.1 if args.quick else 1.0
    t0 = time.perf_counter()
    windows = simulate(scale)
    n = windows.num_rows
    print(f"simulated {n} windows in {time.perf_counter() - t0:.0f} s")
    # compile the kernels (cached on disk after the first run)
    head = windows.slice(0, 2000)
    aim.fit_image_parameters(head, aim.LsfCalibration.default())
    t_first = windows.column("obmt_ns")[0].as_py()
    hour = windows.filter(pa.compute.less(windows.column("obmt_ns"), t_first + HOUR_NS))
    t0 = time.perf_counter()
    lsf = aim.calibrate_lsf(hour, aim.LsfCalibration.default(), solution_id=1)
    cal_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = aim.fit_image_parameters(windows, lsf)
    seconds = time.perf_counter() - t0
    flags = fit.column("flags").to_numpy()
    case = f"{n / 1e6:.2f}M windows"
    rows = [
        Row("dpct", case, "LSF calibration (1st h)", cal_s, "s"),
        Row("dpct", case, "fit wall time", seconds, "s"),
        Row("dpct", case, "throughput", n / seconds, "windows/s"),
        Row("dpct", case, "unflagged", float(np.mean(flags == 0)), "fraction"),
    ]
    rng = np.random.default_rng(0)
    sample = rng.choice(np.flatnonzero(flags == 0), 400, replace=False)
    sample_s, ref = run_scipy(windows, lsf, sample)
    scipy_rate = sample.size / sample_s
    mine = np.stack(
        [fit.column(k).to_numpy()[sample] for k in ("centroid_px", "flux_e", "background_e")], 1
    )
    errs = np.stack(
        [
            fit.column(k).to_numpy()[sample]
            for k in ("centroid_err_px", "flux_err_e", "background_err_e")
        ],
        1,
    )
    agree = np.max(np.abs(mine - ref) / errs, axis=0)
    rows += [
        Row("scipy", case, "throughput (400 windows)", scipy_rate, "windows/s"),
        Row("dpct", case, "speed-up over scipy", n / seconds / scipy_rate, "x"),
        Row("dpct", case, "max |c - scipy| / sigma", float(agree[0]), ""),
        Row("dpct", case, "max |F - scipy| / sigma", float(agree[1]), ""),
    ]
    del fit
    with tempfile.TemporaryDirectory() as tmp:
        src, dst, lsf_path = (os.path.join(tmp, f) for f in ("in.parquet", "out.parquet", "lsf"))
        pq.write_table(windows, src)
        pq.write_table(lsf.to_table(), lsf_path)
        del windows, hour
        code = (
            f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import aim; "
            f"aim.day_with_parquet({src!r}, {dst!r}, {lsf_path!r})"
        )
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        )
        day_s = time.perf_counter() - t0
        peak_gb = int(done.stdout.split("peak_rss_kb=")[1].split()[0]) / 2**20
        assert pq.ParquetFile(dst).metadata.num_rows == n
    rows += [
        Row("dpct", case, "day: Parquet→fit→Parquet", day_s, "s"),
        Row("dpct", case, "day: peak memory", peak_gb, "GB"),
    ]
    report("aim", rows, args.json)


if __name__ == "__main__":
    main()
