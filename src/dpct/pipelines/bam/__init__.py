"""BAM: fringe fitting of Basic Angle Monitor images and the basic-angle variation (BAV).

The numeric core as a library (issue 5, items 1-2): :func:`calibrate_shape` and
:func:`fit_fringes` turn a day of profiles into phases (with errors, period, visibility,
background and quality flags); :func:`bav_series` differences the two fields;
:func:`fit_bav` and :func:`detect_jumps` fit spin harmonics, drift and jumps. Task types,
workflows and reports come next. See ``docs/bam.md``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from dpct.pipelines.bam._bav import (
    PIXEL_AL_UAS,
    BavFit,
    BavSeries,
    bav_series,
    detect_jumps,
    fit_bav,
    shift_uas,
    step_statistic,
)
from dpct.pipelines.bam._fringe import (
    BAD_FLAGS,
    BAD_INTERVAL,
    COSMIC,
    FIT_FAILED,
    LOW_SIGNAL,
    NONFINITE,
    SATURATED,
    FringeFit,
    FringeShape,
    calibrate_shape,
    calibrate_shapes,
    fit_fringes,
)


def spin_phase_rad(
    obmt_ns: NDArray[np.int64],
    *,
    nu_ref: float = 0.0,
    omega_ref: float = 0.0,
    grid_s: float = 60.0,
) -> NDArray[np.float64]:
    """Heliotropic spin phase Ω of the nominal scanning law (mission constants and the
    NSL reference phases), the argument of the BAV harmonics.

    The law is evaluated every ``grid_s`` seconds and interpolated: Ω turns at a nearly
    constant rate, so a day of 8·10⁴ images costs 1,440 evaluations, not 8·10⁴.
    """
    from dpct.mission.scanlaw import NominalScanLaw

    t = np.asarray(obmt_ns, np.int64)
    law = NominalScanLaw(nu_ref, omega_ref)
    if t.size < 2:
        return law.angles(t)["omega"]
    step = round(grid_s * 1e9)
    grid = np.arange(t.min(), t.max() + step, step, dtype=np.int64)
    omega = np.unwrap(law.angles(grid)["omega"])
    return np.mod(np.interp(t.astype(np.float64), grid.astype(np.float64), omega), 2 * np.pi)


__all__ = [
    "BAD_FLAGS",
    "BAD_INTERVAL",
    "COSMIC",
    "FIT_FAILED",
    "LOW_SIGNAL",
    "NONFINITE",
    "PIXEL_AL_UAS",
    "SATURATED",
    "BavFit",
    "BavSeries",
    "FringeFit",
    "FringeShape",
    "bav_series",
    "calibrate_shape",
    "calibrate_shapes",
    "detect_jumps",
    "fit_bav",
    "fit_fringes",
    "shift_uas",
    "spin_phase_rad",
    "step_statistic",
]
