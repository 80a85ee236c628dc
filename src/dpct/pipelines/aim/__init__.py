"""AIM: image parameters of AF windows and the LSF calibration (the numeric core).

Issue 4, items 1–2, as a library: :class:`LsfCalibration` is the LSF model (a nominal
core + halo plus a Gauss–Hermite basis of corrections whose coefficients depend on CCD,
colour and time), storable as the ``aim_lsf_calibration`` table;
:func:`fit_image_parameters` fits centroid, flux and background of every window (Poisson
+ read-out noise likelihood, formal errors, quality flags; Numba, parallel, in batches);
:func:`calibrate_lsf` fits the coefficients from a day's well-exposed windows. The task
types are in :mod:`dpct.pipelines.aim.tasks` and :mod:`dpct.pipelines.aim.monitoring`.
See ``docs/aim.md``.

Examples
--------
>>> import dpct.pipelines.aim as aim
>>> lsf = aim.LsfCalibration.default()                     # doctest: +SKIP
>>> params = aim.fit_image_parameters(af_windows, lsf, data_qualifiers)  # doctest: +SKIP
>>> lsf = aim.calibrate_lsf(af_windows, lsf, image_params=params)      # doctest: +SKIP
>>> table = lsf.to_table()   # the aim_lsf_calibration product          # doctest: +SKIP
"""

from __future__ import annotations

from dpct.pipelines.aim._image_params import (
    BAD_FLAGS,
    BAD_INTERVAL,
    COSMIC,
    FLAG_NAMES,
    IMAGE_PARAMS_COLUMNS,
    IMAGE_PARAMS_SCHEMA,
    LOW_SIGNAL,
    NON_CONVERGED,
    NONFINITE,
    SATURATED,
    TRUNCATED,
    bad_interval_mask,
    fit_arrays,
    fit_image_parameters,
    flag_counts,
)
from dpct.pipelines.aim._lsf_basis import (
    LSF_CALIBRATION_COLUMNS,
    LSF_CALIBRATION_SCHEMA,
    NOMINAL_HALO_WEIGHT,
    LsfBasis,
    LsfCalibration,
    sampled_basis,
    term_powers,
)
from dpct.pipelines.aim._lsf_calibration import calibrate_lsf

__all__ = [
    "BAD_FLAGS",
    "BAD_INTERVAL",
    "COSMIC",
    "FLAG_NAMES",
    "IMAGE_PARAMS_COLUMNS",
    "IMAGE_PARAMS_SCHEMA",
    "LOW_SIGNAL",
    "LSF_CALIBRATION_COLUMNS",
    "LSF_CALIBRATION_SCHEMA",
    "NOMINAL_HALO_WEIGHT",
    "NONFINITE",
    "NON_CONVERGED",
    "SATURATED",
    "TRUNCATED",
    "LsfBasis",
    "LsfCalibration",
    "bad_interval_mask",
    "calibrate_lsf",
    "fit_arrays",
    "fit_image_parameters",
    "flag_counts",
    "sampled_basis",
    "term_powers",
]
