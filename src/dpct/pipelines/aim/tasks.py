"""AIM task types: AF windows → checked chunks → image parameters → LSF calibration.

``aim.ingest`` checks a 6 h chunk of delivered windows (a window whose sample count is
not its ``n_samples`` makes the chunk corrupt: it fails, naming the windows, and the
rest of the day goes on) and stores it sorted by CCD, so that each
``aim.image_params`` job (one CCD × one chunk) reads only its CCD's rows.
``aim.lsf_calibration`` fits the day's LSF starting from the previous one, which the
next day's image parameters then use: "the output of one run becomes the input of the
next". ``aim.image_params_cyclic`` is the same fit with the newest calibration instead,
for reprocessing earlier days.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from dpct.datamodel import DataSpec, data_type
from dpct.mission.datatypes import TELEMETRY_TYPES
from dpct.pipelines.aim._image_params import (
    BAD_FLAGS,
    IMAGE_PARAMS_COLUMNS,
    bad_interval_mask,
    fit_image_parameters,
    flag_counts,
)
from dpct.pipelines.aim._lsf_basis import LSF_CALIBRATION_COLUMNS, LsfCalibration
from dpct.pipelines.aim._lsf_calibration import calibrate_lsf
from dpct.tasks import NoData, PermanentTaskError, task

data_type(
    "aim_windows",
    1,
    TELEMETRY_TYPES["af_windows"].columns,
    description="AF windows of a chunk, checked and sorted by CCD: AIM's input",
    time_column="obmt_ns",
    intermediate=True,
    supersede=True,
    ccd_column="ccd_index",
)
data_type(
    "aim_window_checks",
    1,
    [
        ("ccd_index", "int16", "", "AF CCD"),
        ("windows", "int64", "", "windows of the CCD in the chunk"),
        ("nonfinite", "int64", "", "windows with a NaN or infinite sample"),
        ("saturated", "int64", "", "windows flagged saturated on board"),
        ("truncated", "int64", "", "truncated windows (a close neighbour)"),
        ("bad_interval", "int64", "", "windows inside a data-qualifier bad interval"),
    ],
    description="What ingest found in a chunk of AF windows, per CCD",
    supersede=True,
)
data_type(
    "aim_image_params",
    1,
    IMAGE_PARAMS_COLUMNS,
    description="Image parameters of AF windows: centroid, flux, background, errors, flags",
    time_column="obmt_ns",
    supersede=True,
    ccd_column="ccd_index",
)
data_type(
    "aim_lsf_calibration",
    1,
    LSF_CALIBRATION_COLUMNS,
    description="LSF calibration: per-CCD basis coefficients in colour and time, covariance",
    supersede=True,
)


def _window_lengths(windows: pa.Table) -> np.ndarray:
    return pc.list_value_length(windows.column("samples_e")).to_numpy(zero_copy_only=False)


@task(
    "aim.ingest",
    inputs={"windows": "af_windows", "qualifiers": "data_qualifiers"},
    outputs={"windows": "aim_windows", "checks": "aim_window_checks"},
)
def ingest(
    windows: pa.Table,
    qualifiers: pa.Table,
    spec: DataSpec,
    log: logging.Logger,
    alarms: list[tuple[str, str]],
) -> dict[str, pa.Table]:
    """Check the chunk's windows and store them sorted by CCD; a corrupt chunk fails.

    An empty chunk is stored empty (with an alarm), so that the day still counts as
    delivered and its processing starts; its jobs then have nothing to do.
    """
    t = windows.column("obmt_ns").to_numpy()
    windows = windows.filter(pa.array((t >= spec.start_ns) & (t < spec.end_ns)))
    if windows.num_rows == 0:
        alarms.append(("aim_no_windows", f"no AF windows in {spec}"))
        log.warning("no AF windows in %s", spec)
    lengths = _window_lengths(windows)
    n = windows.column("n_samples").to_numpy().astype(np.int64)
    wrong = np.flatnonzero(lengths != n)
    if wrong.size:
        ids = windows.column("window_id").to_numpy()[wrong]
        raise PermanentTaskError(
            f"{wrong.size} AF windows in {spec} have a sample count other than their "
            f"n_samples (window ids {', '.join(map(str, ids[:5]))}"
            f"{', …' if ids.size > 5 else ''}): the delivery is corrupt; retract it, pull a "
            "corrected one and resume this workflow"
        )
    windows = windows.sort_by([("ccd_index", "ascending"), ("obmt_ns", "ascending")])
    ccd = windows.column("ccd_index").to_numpy().astype(np.int64)
    flat = pc.list_flatten(windows.column("samples_e")).to_numpy(zero_copy_only=False)
    finite_per_sample = np.isfinite(flat)
    offsets = np.concatenate([[0], np.cumsum(_window_lengths(windows))])
    nonfinite = np.add.reduceat(~finite_per_sample, offsets[:-1]) > 0 if flat.size else ccd < 0
    fov = windows.column("fov").to_numpy().astype(np.int64)
    bad = bad_interval_mask(windows.column("obmt_ns").to_numpy(), qualifiers, ccd, fov)
    saturated = windows.column("saturated").to_numpy(zero_copy_only=False)
    truncated = windows.column("truncated").to_numpy(zero_copy_only=False)
    ccds = np.unique(ccd)

    def per_ccd(hit: np.ndarray) -> np.ndarray:
        return np.bincount(ccd, weights=hit.astype(np.float64), minlength=63)[ccds].astype(np.int64)

    checks = pa.table(
        {
            "ccd_index": ccds.astype(np.int16),
            "windows": per_ccd(np.ones(ccd.size)),
            "nonfinite": per_ccd(nonfinite),
            "saturated": per_ccd(saturated),
            "truncated": per_ccd(truncated),
            "bad_interval": per_ccd(bad),
        }
    )
    log.info(
        "%d windows on %d CCDs: %d non-finite, %d saturated, %d truncated, %d in bad intervals",
        windows.num_rows, ccds.size, nonfinite.sum(), saturated.sum(), truncated.sum(), bad.sum(),
    )  # fmt: skip
    return {"windows": windows, "checks": checks}


class ImageParamsConfig(BaseModel, extra="forbid"):
    full_well_e: float = Field(5.0e5, gt=0, description="a sample at or above is saturated")
    reject_sigma: float = Field(6.0, gt=0, description="samples further above are cosmics")
    min_snr: float = Field(5.0, gt=0, description="flux S/N below: LOW_SIGNAL")
    require_calibration: bool = Field(
        False, description="fail when no earlier calibration exists instead of the default LSF"
    )


def _calibration(
    table: pa.Table, solutions: list[int], config: ImageParamsConfig, log: logging.Logger
) -> LsfCalibration:
    if table.num_rows == 0:
        if config.require_calibration:
            raise PermanentTaskError(
                "no LSF calibration precedes this interval and require_calibration is set: "
                "calibrate an earlier day first (or submit with the default LSF allowed)"
            )
        log.warning("no earlier LSF calibration: fitting with the default (nominal) LSF")
        return LsfCalibration.default()
    try:
        calibration = LsfCalibration.from_table(table)
    except ValueError as err:
        raise PermanentTaskError(f"the LSF calibration cannot be used: {err}") from err
    solution = solutions[0] if solutions else 0
    log.info("LSF calibration: solution %d, %d CCDs", solution, calibration.ccd_index.size)
    return calibration.with_solution_id(solution)


def image_params(
    windows: pa.Table,
    qualifiers: pa.Table,
    calibration: pa.Table,
    config: ImageParamsConfig,
    spec: DataSpec,
    log: logging.Logger,
    solutions: dict[str, list[int]],
) -> pa.Table:
    """Centroid, flux and background of every window of the chunk's CCD, with its LSF."""
    if windows.num_rows == 0:
        raise NoData(f"no AF windows in {spec}")
    t = windows.column("obmt_ns").to_numpy()
    windows = windows.filter(pa.array((t >= spec.start_ns) & (t < spec.end_ns)))
    if spec.ccd is not None:
        windows = windows.filter(pc.equal(windows.column("ccd_index"), spec.ccd))
    if windows.num_rows == 0:
        raise NoData(f"no AF windows in {spec}")
    lsf = _calibration(calibration, solutions.get("calibration", []), config, log)
    try:
        params = fit_image_parameters(
            windows,
            lsf,
            qualifiers,
            full_well_e=config.full_well_e,
            reject_sigma=config.reject_sigma,
            min_snr=config.min_snr,
        )
    except ValueError as err:  # malformed windows or a CCD the calibration lacks
        raise PermanentTaskError(f"{spec}: {err}") from err
    counts = flag_counts(params.column("flags").to_numpy())
    log.info("%d windows fitted; flags: %s", params.num_rows, counts)
    return params


def _image_params_task(name: str, calibration: str) -> None:
    task(
        name,
        inputs={
            "windows": "aim_windows",
            "qualifiers": "data_qualifiers",
            "calibration": calibration,
        },
        outputs={"params": "aim_image_params"},
        config=ImageParamsConfig,
    )(image_params)


# Daily: the latest calibration ending before the chunk. Cyclic: the newest, wherever it
# lies (a reprocessing of earlier days with what was learnt since).
_image_params_task("aim.image_params", "aim_lsf_calibration@before")
_image_params_task("aim.image_params_cyclic", "aim_lsf_calibration@newest")


class CalibrationConfig(BaseModel, extra="forbid"):
    iterations: int = Field(8, ge=1, le=50, description="rounds of image fit + LSF step")
    min_snr: float = Field(30.0, gt=0, description="windows used: flux S/N at least")
    max_windows_per_ccd: int = Field(20_000, ge=10)
    min_windows_per_ccd: int = Field(50, ge=10)
    colour_degree: int = Field(2, ge=0, le=4)
    time_degree: int = Field(0, ge=0, le=2)


@task(
    "aim.lsf_calibration",
    inputs={
        "windows": "aim_windows",
        "params": "aim_image_params",
        "qualifiers": "data_qualifiers",
        "prior": "aim_lsf_calibration@before",
    },
    outputs={"calibration": "aim_lsf_calibration"},
    config=CalibrationConfig,
)
def lsf_calibration(
    windows: pa.Table,
    params: pa.Table,
    qualifiers: pa.Table,
    prior: pa.Table,
    config: CalibrationConfig,
    spec: DataSpec,
    log: logging.Logger,
    solutions: dict[str, list[int]],
) -> pa.Table:
    """The day's LSF, from its well-exposed windows, starting from the previous one."""
    if windows.num_rows == 0 or params.num_rows == 0:
        raise NoData(f"no fitted AF windows in {spec}")
    start = _calibration(prior, solutions.get("prior", []), ImageParamsConfig(), log)
    windows = windows.sort_by("window_id")
    params = params.sort_by("window_id")
    if not windows.column("window_id").equals(params.column("window_id")):
        raise PermanentTaskError(
            f"{spec}: {windows.num_rows} windows but {params.num_rows} image parameters "
            "(a chunk was not fitted); resume the failed jobs first"
        )
    good = int(np.count_nonzero((params.column("flags").to_numpy() & BAD_FLAGS) == 0))
    try:
        calibration = calibrate_lsf(
            windows,
            start,
            image_params=params,
            intervals=qualifiers,
            iterations=config.iterations,
            min_snr=config.min_snr,
            max_windows_per_ccd=config.max_windows_per_ccd,
            min_windows_per_ccd=config.min_windows_per_ccd,
            colour_degree=config.colour_degree,
            time_degree=config.time_degree,
        )
    except ValueError as err:
        raise PermanentTaskError(f"{spec}: LSF calibration impossible: {err}") from err
    log.info(
        "LSF calibrated on %d CCDs from %d windows (%d unflagged); median chi2/dof %.3f",
        calibration.ccd_index.size, int(np.sum(calibration.n_windows)), good,
        float(np.nanmedian(calibration.chi2_dof)),
    )  # fmt: skip
    return calibration.to_table()
