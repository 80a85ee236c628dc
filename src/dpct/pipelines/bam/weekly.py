"""BAM weekly processing and analysis: a week of ΔΓ fitted day by day and as a whole.

``bam.weekly`` refits each day of the week's ΔΓ (so every day is judged by the same
configuration) and fits the week at once with harmonic coefficients that may drift
linearly, each day keeping its own zero point and drift (a day's phases have an
arbitrary zero). ``bam.weekly_report`` turns that into the report series, a PNG and a
page; ``bam.analysis`` asks whether the harmonics were stable over the week and how ΔΓ
follows the BAM bench temperature.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray
from pydantic import BaseModel, Field

from dpct.datamodel import NS_PER_DAY, DataSpec, data_type
from dpct.pipelines.bam._bav import BavFit, BavSeries, detect_jumps
from dpct.pipelines.bam.report import BIN_NS, REPORT_COLUMNS, binned
from dpct.pipelines.bam.tasks import HARMONIC_COLUMNS, JUMP_COLUMNS
from dpct.tasks import JobContext, NoData, PermanentTaskError, task

WEEKLY_BIN_NS = 6 * BIN_NS
"""The weekly report's ΔΓ series are 6-hour means: one spin period per point."""

data_type(
    "bam_weekly_harmonics",
    1,
    [
        ("scope", "string", "", "'day': one day's own fit; 'week': the whole week's"),
        ("start_ns", "int64", "ns", "start of the day or week fitted"),
        *HARMONIC_COLUMNS,  # the week's: at ref_ns
        ("cos_rate_uas_per_day", "float64", "uas/d", "dC_k/dt over the week (0 for a day)"),
        ("sin_rate_uas_per_day", "float64", "uas/d", "dS_k/dt over the week (0 for a day)"),
        ("cos_rate_err_uas_per_day", "float64", "uas/d", "error of dC_k/dt"),
        ("sin_rate_err_uas_per_day", "float64", "uas/d", "error of dS_k/dt"),
        ("ref_ns", "int64", "ns", "time the coefficients refer to"),
        ("chi2_dof", "float64", "", "chi2 per degree of freedom of the fit"),
        ("images", "int64", "", "ΔΓ samples fitted"),
    ],
    description="Spin harmonics of a week of BAV: each day's fit and the week's",
    time_column="start_ns",
    supersede=True,
)
data_type(
    "bam_weekly_jumps",
    1,
    JUMP_COLUMNS,
    description="Jumps of the basic-angle variation found in the week's fit",
    time_column="obmt_ns",
    supersede=True,
)
data_type(
    "bam_weekly_report",
    1,
    REPORT_COLUMNS,
    description="BAM weekly report: 6-hourly ΔΓ, daily harmonics, jumps, ΔΓ vs HK",
    supersede=True,
)
data_type(
    "bam_analysis",
    1,
    [
        ("quantity", "string", "", "what was estimated (see the task's doc)"),
        ("k", "int16", "", "harmonic, 0 when not per harmonic"),
        ("value", "float64", "", "the estimate"),
        ("error", "float64", "", "its formal error"),
        ("chi2_dof", "float64", "", "chi2 per degree of freedom of the fit behind it"),
        ("unit", "string", "", "unit of value and error"),
    ],
    description="BAM analysis of a week: harmonic stability and trends, ΔΓ vs temperature",
    supersede=True,
)


class WeeklyConfig(BaseModel, extra="forbid"):
    harmonics: int = Field(8, ge=1, le=64, description="spin harmonics k = 1 … K")
    drift_degree: int = Field(2, ge=0, le=6, description="each day's drift polynomial degree")
    jump_threshold: float = Field(8.0, gt=0, description="step statistic that makes a jump")
    harmonic_rates: bool = Field(True, description="let the week's coefficients drift linearly")


def _series(bav: pa.Table) -> BavSeries:
    order = pc.sort_indices(bav, [("obmt_ns", "ascending")])
    b = bav.take(order)
    return BavSeries(
        b.column("obmt_ns").to_numpy(),
        b.column("bav_uas").to_numpy(),
        b.column("err_uas").to_numpy(),
        b.column("image_id").to_numpy(),
    )


def _take(series: BavSeries, keep: NDArray[np.bool_]) -> BavSeries:
    return BavSeries(
        series.obmt_ns[keep], series.bav_uas[keep], series.err_uas[keep], series.image_id[keep]
    )


def _rows(scope: str, start_ns: int, fit: BavFit, images: int) -> dict[str, list]:
    k = fit.harmonics
    return {
        "scope": [scope] * k,
        "start_ns": [start_ns] * k,
        "k": list(range(1, k + 1)),
        "cos_uas": fit.cos_uas.tolist(),
        "sin_uas": fit.sin_uas.tolist(),
        "cos_err_uas": fit.cos_err_uas.tolist(),
        "sin_err_uas": fit.sin_err_uas.tolist(),
        "cos_rate_uas_per_day": fit.cos_rate_uas_per_day.tolist(),
        "sin_rate_uas_per_day": fit.sin_rate_uas_per_day.tolist(),
        "cos_rate_err_uas_per_day": fit.cos_rate_err_uas_per_day.tolist(),
        "sin_rate_err_uas_per_day": fit.sin_rate_err_uas_per_day.tolist(),
        "amplitude_uas": fit.amplitude_uas.tolist(),
        "phase_rad": fit.phase_rad.tolist(),
        "ref_ns": [fit.harmonic_ref_ns] * k,
        "chi2_dof": [fit.chi2 / max(fit.dof, 1)] * k,
        "images": [images] * k,
    }


@task(
    "bam.weekly",
    inputs={"bav": "bam_bav"},
    outputs={"harmonics": "bam_weekly_harmonics", "jumps": "bam_weekly_jumps"},
    config=WeeklyConfig,
)
def weekly(
    bav: pa.Table, config: WeeklyConfig, spec: DataSpec, log: logging.Logger
) -> dict[str, pa.Table]:
    """Each day's harmonics, then the week's with slowly varying coefficients and jumps."""
    from dpct.pipelines.bam import spin_phase_rad

    series = _series(bav)
    least = 4 * config.harmonics + 10
    if series.bav_uas.size < least:
        raise NoData(f"{series.bav_uas.size} BAV samples in {spec}: too few for a weekly fit")
    omega = spin_phase_rad(series.obmt_ns)
    day_of = (series.obmt_ns - spec.start_ns) // NS_PER_DAY
    days = np.unique(day_of)
    starts = spec.start_ns + days * NS_PER_DAY
    model = {"harmonics": config.harmonics, "drift_degree": config.drift_degree}
    parts: list[dict[str, list]] = []
    for day, start in zip(days, starts, strict=True):
        inside = day_of == day
        if np.count_nonzero(inside) < least:
            log.warning("day starting %d: %d samples, not fitted", start, inside.sum())
            continue
        fit = detect_jumps(
            _take(series, inside), omega[inside], threshold=config.jump_threshold, **model
        )
        parts.append(_rows("day", int(start), fit, int(inside.sum())))
        log.info(
            "day %d: %d images, chi2/dof %.3f, %d jumps, k=1 amplitude %.1f µas",
            start // NS_PER_DAY, inside.sum(), fit.chi2 / max(fit.dof, 1),
            fit.jump_obmt_ns.size, fit.amplitude_uas[0],
        )  # fmt: skip
    try:
        week = detect_jumps(
            series,
            omega,
            threshold=config.jump_threshold,
            segments_ns=starts,
            harmonic_degree=1 if config.harmonic_rates else 0,
            **model,
        )
    except np.linalg.LinAlgError as err:  # degenerate data: retrying cannot help
        raise PermanentTaskError(f"the week's BAV fit over {spec} is singular: {err}") from err
    parts.append(_rows("week", spec.start_ns, week, series.bav_uas.size))
    log.info(
        "week: %d images over %d days, chi2/dof %.3f, %d jumps",
        series.bav_uas.size, days.size, week.chi2 / max(week.dof, 1), week.jump_obmt_ns.size,
    )  # fmt: skip
    harmonics = pa.concat_tables([pa.table(p) for p in parts])
    jumps = pa.table(
        {"obmt_ns": week.jump_obmt_ns, "jump_uas": week.jump_uas, "err_uas": week.jump_err_uas}
    )
    return {"harmonics": harmonics, "jumps": jumps}


def _scope(harmonics: pa.Table, scope: str) -> pa.Table:
    part = harmonics.filter(pc.equal(harmonics.column("scope"), scope))
    return part.sort_by([("start_ns", "ascending"), ("k", "ascending")])


@task(
    "bam.weekly_report",
    inputs={
        "bav": "bam_bav",
        "harmonics": "bam_weekly_harmonics",
        "jumps": "bam_weekly_jumps",
        "hk": "hk",
    },
    outputs={"report": "bam_weekly_report"},
)
def weekly_report(
    bav: pa.Table,
    harmonics: pa.Table,
    jumps: pa.Table,
    hk: pa.Table,
    spec: DataSpec,
    log: logging.Logger,
    job: JobContext,
) -> pa.Table:
    """The week's series: 6-hourly ΔΓ, the week's harmonics, each day's amplitudes."""
    from dpct.pipelines.bam import report

    if bav.num_rows == 0 or harmonics.num_rows == 0:
        raise NoData(f"no weekly BAV fit in {spec}")
    bav = bav.sort_by("obmt_ns")
    rows, summary = report.make_report(
        bav, _scope(harmonics, "week"), jumps, hk, bin_ns=WEEKLY_BIN_NS, label="6-hourly"
    )
    for r in _scope(harmonics, "day").to_pylist():
        err = float(np.hypot(r["cos_err_uas"], r["sin_err_uas"]))
        rows.append(
            (
                f"daily amplitude k={r['k']}",
                float(r["start_ns"]),
                r["amplitude_uas"],
                err,
                "OBMT ns",
            )
        )
    week = _scope(harmonics, "week").to_pylist()
    for r in week:
        rate = float(np.hypot(r["cos_rate_uas_per_day"], r["sin_rate_uas_per_day"]))
        err = float(np.hypot(r["cos_rate_err_uas_per_day"], r["sin_rate_err_uas_per_day"]))
        rows.append(("harmonic rate", float(r["k"]), rate, err, "k, µas/day"))
    summary["days fitted"] = len({r["start_ns"] for r in _scope(harmonics, "day").to_pylist()})
    summary["week chi2/dof"] = week[0]["chi2_dof"] if week else float("nan")
    table = report.as_table(rows)
    figure = job.report_path("bam_weekly_report.png")
    report.write_figure(table, figure, bin_ns=WEEKLY_BIN_NS, label="6-hourly")
    page = job.report_path("bam_weekly_report.html")
    report.write_page(summary, figure, page, f"BAM weekly report {spec.text}")
    log.info("weekly report: %s; figure %s, page %s", summary, figure, page)
    return table


def _line_fit(
    x: NDArray[np.float64], y: NDArray[np.float64], err: NDArray[np.float64]
) -> tuple[float, float, float, float, float]:
    """Weighted straight line: (mean, its error, slope, its error, chi2/dof of the line).

    The mean is the weighted mean (its chi2/dof says whether a constant fits); the slope
    is taken about the weighted mean abscissa so the two are uncorrelated.
    """
    w = 1.0 / err**2
    xm = (w * x).sum() / w.sum()
    mean = (w * y).sum() / w.sum()
    dx = x - xm
    sxx = (w * dx * dx).sum()
    slope = (w * dx * (y - mean)).sum() / sxx if sxx > 0 else 0.0
    resid = y - mean - slope * dx
    dof = max(x.size - 2, 1)
    return (
        float(mean),
        float(1 / np.sqrt(w.sum())),
        float(slope),
        float(1 / np.sqrt(sxx)) if sxx > 0 else float("inf"),
        float((w * resid**2).sum() / dof),
    )


@task(
    "bam.analysis",
    inputs={"harmonics": "bam_weekly_harmonics", "bav": "bam_bav", "hk": "hk"},
    outputs={"analysis": "bam_analysis"},
)
def analysis(
    harmonics: pa.Table, bav: pa.Table, hk: pa.Table, spec: DataSpec, log: logging.Logger
) -> pa.Table:
    """Are the harmonics stable from day to day, and does ΔΓ follow the temperature?

    Per harmonic k and coefficient (C_k, S_k): the weighted mean of the daily values with
    the chi2/dof of a constant (≈ 1 when stable), and the day-to-day trend (µas/day).
    Then the slope of the 6-hourly mean residual of the daily models against the BAM
    bench temperature (µas/K): the daily models absorb drifts, so what is left is the
    thermal response the harmonics and drift do not describe.
    """
    daily = _scope(harmonics, "day")
    if daily.num_rows == 0:
        raise NoData(f"no daily harmonics in {spec}")
    out: dict[str, list] = {c: [] for c in ("quantity", "k", "value", "error", "chi2_dof", "unit")}

    def add(quantity: str, k: int, value: float, error: float, chi2: float, unit: str) -> None:
        for c, v in zip(out, (quantity, k, value, error, chi2, unit), strict=True):
            out[c].append(v)

    day = (daily.column("start_ns").to_numpy() - spec.start_ns) / NS_PER_DAY
    ks = daily.column("k").to_numpy()
    for k in np.unique(ks):
        at = ks == k
        for name in ("cos", "sin"):
            y = daily.column(f"{name}_uas").to_numpy()[at]
            e = daily.column(f"{name}_err_uas").to_numpy()[at]
            if y.size < 2:
                continue
            mean, mean_err, slope, slope_err, chi2 = _line_fit(day[at], y, e)
            resid = y - mean
            constant_chi2 = float(((resid / e) ** 2).sum() / (y.size - 1))
            add(f"{name} mean", int(k), mean, mean_err, constant_chi2, "uas")
            add(f"{name} trend", int(k), slope, slope_err, chi2, "uas/d")
    if bav.num_rows and hk.num_rows:
        t = bav.column("obmt_ns").to_numpy()
        w = 1.0 / bav.column("err_uas").to_numpy() ** 2
        centre, resid, resid_err = binned(
            t, bav.column("residual_uas").to_numpy(), w, WEEKLY_BIN_NS
        )
        temp = np.interp(
            centre, hk.column("obmt_ns").to_numpy(), hk.column("bam_bench_temp_k").to_numpy()
        )
        if centre.size > 2 and np.ptp(temp) > 0:
            _, _, slope, slope_err, chi2 = _line_fit(temp, resid, resid_err)
            add("residual vs bench temperature", 0, slope, slope_err, chi2, "uas/K")
    log.info("analysis of %s: %d estimates", spec, len(out["quantity"]))
    return pa.table(out)
