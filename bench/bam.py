"""Benchmark of BAM fringe processing: a full day of images against per-image curve_fit.

dpct calibrates each field's fringe shape on the day's mean profile, then fits every
profile (phase, period, visibility, amplitude, background, with errors and flags) by
weighted linear least squares with a Gauss-Newton period step (Numba, parallel), and
fits the basic-angle variation with jump detection. The baseline a user would write is
``scipy.optimize.curve_fit`` per profile on the same model (envelope fixed, analytic
Jacobian, started from the same calibrated shape), timed on a sample of the day's
profiles, in the same run.

Usage::

    python bench/bam.py            # 8·10⁴ images (1.6·10⁵ profiles): the seed's full day
    python bench/bam.py --quick    # 8·10³ images
    python bench/bam.py --json     # last line: one JSON object
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy.optimize import curve_fit

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, parser, report

import dpct.pipelines.bam as bam
from dpct.sim import SimConfig, Simulator, mission_day

DAY = 700


def simulate(scale: float) -> dict[str, np.ndarray]:
    sim = Simulator(SimConfig(seed=3, scale=scale, products=("bam_images",)))
    tables = [c.products["bam_images"] for c in sim.chunks(mission_day(DAY), workers=2)]
    tel = pa.concat_tables(tables)
    n = len(tel.column("samples_e")[0])
    return {
        "samples": tel.column("samples_e").combine_chunks().flatten().to_numpy().reshape(-1, n),
        "fov": tel.column("fov").to_numpy(),
        "ron": tel.column("ron_e").to_numpy(),
        "image_id": tel.column("image_id").to_numpy(),
        "obmt_ns": tel.column("obmt_ns").to_numpy(),
    }


def run_dpct(day: dict[str, np.ndarray]) -> tuple[float, bam.FringeFit]:
    t0 = time.perf_counter()
    fov, y, ron = day["fov"], day["samples"], day["ron"]
    shapes = bam.calibrate_shapes(y, ron, fov)
    fit = bam.fit_fringes(y, ron, fov, shapes)
    good = (fit.flags & bam.BAD_FLAGS) == 0
    series = bam.bav_series(
        day["image_id"], day["obmt_ns"], fov, fit.phase_rad, fit.phase_err_rad, fit.period_px, good
    )
    bam.detect_jumps(series, bam.spin_phase_rad(series.obmt_ns))
    return time.perf_counter() - t0, fit


def run_scipy(day: dict[str, np.ndarray], rows: np.ndarray) -> tuple[float, np.ndarray]:
    """curve_fit per profile: B, A, V, φ, P free; envelope fixed; analytic Jacobian."""
    fov, y, ron = day["fov"], day["samples"], day["ron"]
    shapes = bam.calibrate_shapes(y, ron, fov)
    n = y.shape[1]
    x = np.arange(n, dtype=np.float64)
    xc = 0.5 * (n - 1)
    phases = np.empty(rows.size)
    t0 = time.perf_counter()
    for k, i in enumerate(rows):
        shape = shapes[fov[i]]
        env = shape.envelope(n)

        def model(x, b, a, v, phi, p, env=env):
            return b + a * env * (1 + v * np.cos(2 * np.pi * (x - xc) / p - phi))

        def jac(x, b, a, v, phi, p, env=env):
            th = 2 * np.pi * (x - xc) / p - phi
            c, s = np.cos(th), np.sin(th)
            dth_dp = -2 * np.pi * (x - xc) / p**2
            return np.stack(
                [np.ones_like(x), env * (1 + v * c), a * env * c, a * env * v * s,
                 -a * env * v * s * dth_dp],
                axis=1,
            )  # fmt: skip

        yi = y[i].astype(np.float64)
        sigma = np.sqrt(np.maximum(yi, 1.0) + float(ron[i]) ** 2)
        start = (shape.background_e, shape.amplitude_e, shape.visibility, shape.phase_rad,
                 shape.period_px)  # fmt: skip
        popt, _ = curve_fit(model, x, yi, p0=start, sigma=sigma, jac=jac, maxfev=200)
        phases[k] = np.angle(np.exp(1j * popt[3]))
    return time.perf_counter() - t0, phases


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    scale = 0.1 if args.quick else 1.0
    t0 = time.perf_counter()
    day = simulate(scale)
    images = day["samples"].shape[0] // 2
    print(f"simulated {images} images ({2 * images} profiles) in {time.perf_counter() - t0:.0f} s")
    # compile the kernels (cached on disk after the first run)
    head = {k: v[:400] for k, v in day.items()}
    shapes = bam.calibrate_shapes(head["samples"], head["ron"], head["fov"])
    bam.fit_fringes(head["samples"], head["ron"], head["fov"], shapes)
    seconds, fit = run_dpct(day)
    case = f"{images} images"
    rows = [
        Row("dpct", case, "day wall time", seconds, "s"),
        Row("dpct", case, "throughput", images / seconds, "images/s"),
    ]
    sample = np.random.default_rng(0).choice(day["samples"].shape[0], 400, replace=False)
    sample_s, phases = run_scipy(day, sample)
    agree = np.abs(np.angle(np.exp(1j * (phases - fit.phase_rad[sample]))))
    scipy_rate = sample.size / 2 / sample_s  # two profiles make an image
    rows += [
        Row("scipy", case, "throughput (400 profiles)", scipy_rate, "images/s"),
        Row("dpct", case, "speed-up over curve_fit", images / seconds / scipy_rate, "x"),
        Row("dpct", case, "max |phase - curve_fit| / sigma",
            float(np.max(agree / fit.phase_err_rad[sample])), ""),
    ]  # fmt: skip
    report("bam", rows, args.json)


if __name__ == "__main__":
    main()
