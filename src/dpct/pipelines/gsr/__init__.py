"""GSR, the Global Sphere Reconstruction: the AVU-GSR least-squares solver, as a library.

One row per along-scan observation (5 astrometric, 12 attitude, 6 instrument and 0-1
global unknowns), stored compactly (:class:`GsrSystem`, about 100 bytes per observation);
constraint equations fix the frame and attitude/instrument null space; preconditioned
LSQR with one fused pass over the rows per iteration, checkpoints keyed by the job, an
outer Gauss-Newton loop for the non-linearity, and honest standard errors. Tests and
benchmarks get simulated problems with known truth from :mod:`dpct.testing.gsr_problem`.

See ``docs/gsr.md`` for the equations, the storage layout and the measured figures.
"""

from dpct.pipelines.gsr._checkpoint import checkpoint_path
from dpct.pipelines.gsr._constraints import attitude_constraints, frame_constraints
from dpct.pipelines.gsr._errors import (
    StandardErrors,
    astrometric_block_errors,
    monte_carlo_errors,
    schur_errors,
    standard_errors,
)
from dpct.pipelines.gsr._exceptions import (
    CheckpointMismatchError,
    EmptySystemError,
    GsrInputError,
    InvalidIndexError,
    LayoutError,
    NonFiniteError,
    RankDeficientError,
)
from dpct.pipelines.gsr._kernels import column_norms, matvec, rmatvec, star_normal_blocks
from dpct.pipelines.gsr._lsqr import LsqrResult, solve
from dpct.pipelines.gsr._outer import LinearisedModel, OuterResult, solve_nonlinear
from dpct.pipelines.gsr._precondition import Preconditioner, make_preconditioner
from dpct.pipelines.gsr._progress import IterationInfo
from dpct.pipelines.gsr._reference import bspline_weights, to_csr
from dpct.pipelines.gsr._system import (
    DAYS_PER_YEAR,
    N_ASTRO,
    N_AXES,
    N_INSTR,
    Constraints,
    GsrSystem,
    UnknownLayout,
    make_system,
)
from dpct.pipelines.gsr._validate import validate_system

__all__ = [
    "DAYS_PER_YEAR",
    "N_ASTRO",
    "N_AXES",
    "N_INSTR",
    "CheckpointMismatchError",
    "Constraints",
    "EmptySystemError",
    "GsrInputError",
    "GsrSystem",
    "InvalidIndexError",
    "IterationInfo",
    "LayoutError",
    "LinearisedModel",
    "LsqrResult",
    "NonFiniteError",
    "OuterResult",
    "Preconditioner",
    "RankDeficientError",
    "StandardErrors",
    "UnknownLayout",
    "astrometric_block_errors",
    "attitude_constraints",
    "bspline_weights",
    "checkpoint_path",
    "column_norms",
    "frame_constraints",
    "make_preconditioner",
    "make_system",
    "matvec",
    "monte_carlo_errors",
    "rmatvec",
    "schur_errors",
    "solve",
    "solve_nonlinear",
    "standard_errors",
    "star_normal_blocks",
    "to_csr",
    "validate_system",
]
