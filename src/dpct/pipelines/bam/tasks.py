"""BAM task types: a day of images → fringe parameters → the basic-angle variation.

``bam.fringes`` fits every profile of the day (flags included, so a report can show what
was left out) and ``bam.bav`` builds and models the ΔΓ series; BAMDailyProcessingWorkflow
runs them once a day of images has been registered.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from dpct.datamodel import DataSpec, data_type
from dpct.pipelines.bam._bav import bav_series, detect_jumps
from dpct.pipelines.bam._fringe import BAD_FLAGS, BAD_INTERVAL, calibrate_shapes, fit_fringes
from dpct.pipelines.bam.report import REPORT_COLUMNS
from dpct.tasks import JobContext, NoData, task

data_type(
    "bam_fringes",
    1,
    [
        ("image_id", "int64", "", "BAM image"),
        ("obmt_ns", "int64", "ns", "OBMT of the image"),
        ("fov", "int8", "", "field of view: 0 preceding, 1 following"),
        ("phase_rad", "float64", "rad", "fringe phase φ"),
        ("phase_err_rad", "float64", "rad", "formal error of φ"),
        ("period_px", "float64", "px", "fringe period"),
        ("period_err_px", "float64", "px", "formal error of the period"),
        ("visibility", "float64", "", "fringe visibility"),
        ("amplitude_e", "float64", "e-", "envelope peak"),
        ("background_e", "float64", "e-", "background per sample"),
        ("chi2", "float64", "", "weighted residual sum of squares"),
        ("dof", "int32", "", "degrees of freedom of chi2"),
        ("n_rejected", "int32", "", "samples left out (cosmic rays)"),
        (
            "flags",
            "int32",
            "",
            "quality bits: 1 NaN, 2 low signal, 4 saturated, 8 cosmic, "
            "16 bad interval, 32 fit failed",
        ),
    ],
    description="Per-profile fringe parameters of the Basic Angle Monitor",
    time_column="obmt_ns",
    intermediate=True,
    supersede=True,
)
data_type(
    "bam_bav",
    1,
    [
        ("image_id", "int64", "", "BAM image"),
        ("obmt_ns", "int64", "ns", "OBMT of the image"),
        ("bav_uas", "float64", "uas", "ΔΓ: shift(preceding) − shift(following), arbitrary zero"),
        ("err_uas", "float64", "uas", "formal error"),
        ("model_uas", "float64", "uas", "fitted model: harmonics + drift + jumps"),
        ("residual_uas", "float64", "uas", "ΔΓ − model"),
    ],
    description="Basic-angle variation series with its fitted model",
    time_column="obmt_ns",
    supersede=True,
)
HARMONIC_COLUMNS = [
    ("k", "int16", "", "harmonic of the 6 h spin"),
    ("cos_uas", "float64", "uas", "C_k of C_k cos kΩ + S_k sin kΩ"),
    ("sin_uas", "float64", "uas", "S_k"),
    ("cos_err_uas", "float64", "uas", "error of C_k"),
    ("sin_err_uas", "float64", "uas", "error of S_k"),
    ("amplitude_uas", "float64", "uas", "sqrt(C_k² + S_k²)"),
    ("phase_rad", "float64", "rad", "atan2(S_k, C_k)"),
]
data_type(
    "bam_harmonics",
    1,
    HARMONIC_COLUMNS,
    description="Spin-harmonic coefficients of the basic-angle variation",
    supersede=True,
)
JUMP_COLUMNS = [
    ("obmt_ns", "int64", "ns", "first image after the jump"),
    ("jump_uas", "float64", "uas", "size of the step in ΔΓ"),
    ("err_uas", "float64", "uas", "formal error"),
]
data_type(
    "bam_jumps",
    1,
    JUMP_COLUMNS,
    description="Jumps of the basic-angle variation",
    time_column="obmt_ns",
    supersede=True,
)


class FringeConfig(BaseModel, extra="forbid"):
    full_well_e: float = Field(350_000.0, gt=0, description="a sample at or above is saturated")
    reject_sigma: float = Field(7.0, gt=0, description="samples further off are cosmic rays")
    min_snr: float = Field(5.0, gt=0, description="fringe amplitude / error below: low signal")


@task(
    "bam.fringes",
    inputs={"images": "bam_images", "qualifiers": "data_qualifiers"},
    outputs={"fringes": "bam_fringes"},
    config=FringeConfig,
)
def fringes(
    images: pa.Table, qualifiers: pa.Table, config: FringeConfig, log: logging.Logger
) -> pa.Table:
    """Fit every profile of the day; images in telemetry-gap qualifiers are flagged."""
    if images.num_rows == 0:
        raise NoData("no BAM images")
    n = len(images.column("samples_e")[0])
    samples = images.column("samples_e").combine_chunks().flatten().to_numpy().reshape(-1, n)
    fov = images.column("fov").to_numpy().astype(np.int64)
    ron = images.column("ron_e").to_numpy()
    shapes = calibrate_shapes(samples, ron, fov)
    for f, shape in enumerate(shapes):
        log.info(
            "field %d: period %.5f px, envelope centre %.2f px, sigma %.2f px, visibility %.4f",
            f, shape.period_px, shape.envelope_centre_px, shape.envelope_sigma_px,
            shape.visibility,
        )  # fmt: skip
    fit = fit_fringes(
        samples,
        ron,
        fov,
        shapes,
        full_well_e=config.full_well_e,
        reject_sigma=config.reject_sigma,
        min_snr=config.min_snr,
    )
    t = images.column("obmt_ns").to_numpy()
    flags = fit.flags.copy()
    gaps = qualifiers.filter(pc.equal(qualifiers.column("instrument"), "ALL"))
    for start, stop in zip(
        gaps.column("start_obmt_ns").to_pylist(),
        gaps.column("stop_obmt_ns").to_pylist(),
        strict=True,
    ):
        flags[(t >= start) & (t < stop)] |= BAD_INTERVAL
    bad = np.count_nonzero(flags & BAD_FLAGS)
    log.info("%d profiles fitted, %d flagged out of the BAV", flags.size, bad)
    return pa.table(
        {
            "image_id": images.column("image_id"),
            "obmt_ns": images.column("obmt_ns"),
            "fov": images.column("fov"),
            "phase_rad": fit.phase_rad,
            "phase_err_rad": fit.phase_err_rad,
            "period_px": fit.period_px,
            "period_err_px": fit.period_err_px,
            "visibility": fit.visibility,
            "amplitude_e": fit.amplitude_e,
            "background_e": fit.background_e,
            "chi2": fit.chi2,
            "dof": fit.dof.astype(np.int32),
            "n_rejected": fit.n_rejected.astype(np.int32),
            "flags": flags.astype(np.int32),
        }
    )


class BavConfig(BaseModel, extra="forbid"):
    harmonics: int = Field(8, ge=1, le=64, description="spin harmonics k = 1 … K")
    drift_degree: int = Field(2, ge=0, le=6, description="polynomial degree of the drift")
    jump_threshold: float = Field(8.0, gt=0, description="step statistic that makes a jump")


@task(
    "bam.bav",
    inputs={"fringes": "bam_fringes"},
    outputs={"bav": "bam_bav", "harmonics": "bam_harmonics", "jumps": "bam_jumps"},
    config=BavConfig,
)
def bav(
    fringes: pa.Table, config: BavConfig, spec: DataSpec, log: logging.Logger
) -> dict[str, pa.Table]:
    """ΔΓ from the two fields' phases, fitted with harmonics, drift and detected jumps."""
    from dpct.pipelines.bam import spin_phase_rad

    col = {name: fringes.column(name).to_numpy() for name in fringes.column_names}
    series = bav_series(
        col["image_id"], col["obmt_ns"], col["fov"], col["phase_rad"], col["phase_err_rad"],
        col["period_px"], (col["flags"] & BAD_FLAGS) == 0,
    )  # fmt: skip
    if series.bav_uas.size < 4 * config.harmonics + 10:
        raise NoData(f"{series.bav_uas.size} usable images in {spec}: too few for a BAV fit")
    fit = detect_jumps(
        series,
        spin_phase_rad(series.obmt_ns),
        harmonics=config.harmonics,
        drift_degree=config.drift_degree,
        threshold=config.jump_threshold,
    )
    log.info(
        "ΔΓ from %d images: %d jumps, chi2/dof %.3f, k=1 amplitude %.1f µas",
        series.bav_uas.size, fit.jump_obmt_ns.size, fit.chi2 / max(fit.dof, 1),
        fit.amplitude_uas[0],
    )  # fmt: skip
    k = np.arange(1, config.harmonics + 1, dtype=np.int16)
    return {
        "bav": pa.table(
            {
                "image_id": series.image_id,
                "obmt_ns": series.obmt_ns,
                "bav_uas": series.bav_uas,
                "err_uas": series.err_uas,
                "model_uas": series.bav_uas - fit.residual_uas,
                "residual_uas": fit.residual_uas,
            }
        ),
        "harmonics": pa.table(
            {
                "k": k,
                "cos_uas": fit.cos_uas,
                "sin_uas": fit.sin_uas,
                "cos_err_uas": fit.cos_err_uas,
                "sin_err_uas": fit.sin_err_uas,
                "amplitude_uas": fit.amplitude_uas,
                "phase_rad": fit.phase_rad,
            }
        ),
        "jumps": pa.table(
            {"obmt_ns": fit.jump_obmt_ns, "jump_uas": fit.jump_uas, "err_uas": fit.jump_err_uas}
        ),
    }


data_type(
    "bam_report",
    1,
    REPORT_COLUMNS,
    description="BAM daily report: hourly ΔΓ, model and residuals, harmonics, jumps, vs HK",
    supersede=True,
)


@task(
    "bam.report",
    inputs={"bav": "bam_bav", "harmonics": "bam_harmonics", "jumps": "bam_jumps", "hk": "hk"},
    outputs={"report": "bam_report"},
)
def bam_report(
    bav: pa.Table,
    harmonics: pa.Table,
    jumps: pa.Table,
    hk: pa.Table,
    spec: DataSpec,
    log: logging.Logger,
    job: JobContext,
) -> pa.Table:
    """The day's series as a product; a PNG and an HTML page next to the job's log."""
    from dpct.pipelines.bam import report

    if bav.num_rows == 0:
        raise NoData(f"no BAV series in {spec}")
    rows, summary = report.make_report(bav, harmonics, jumps, hk)
    table = report.as_table(rows)
    figure = job.report_path("bam_report.png")
    report.write_figure(table, figure)
    page = job.report_path("bam_report.html")
    report.write_page(summary, figure, page, f"BAM report {spec.text}")
    log.info("report: %s; figure %s, page %s", summary, figure, page)
    return table
