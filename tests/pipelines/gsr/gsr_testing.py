"""Shared pieces of the GSR tests: problem sizes, a random system builder, a result holder.

A module with a unique name (not conftest) so that test modules can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import dpct.pipelines.gsr as gsr
from dpct.testing import gsr_problem

# 10^4 stars over a year, 3 CCD strips: ~5e5 observations, the CI truth-recovery problem
CI_PROBLEM = dict(n_stars=10_000, mission_days=365.0, knot_minutes=480.0, n_ccd_strips=3)
# a small problem (~800 stars, 3e4 observations) for comparisons with SciPy, checkpoints
# and the outer loop
SMALL_PROBLEM = dict(n_stars=800, mission_days=365.0, knot_minutes=1440.0, n_ccd_strips=2, seed=4)
TIGHT = dict(atol=1e-13, btol=1e-13)


def random_system(
    seed: int = 0,
    m: int = 5_000,
    n_stars: int = 120,
    n_glob: int = 1,
    constraints: bool = True,
) -> gsr.GsrSystem:
    """A system with random coefficients and every unknown observed (for kernel tests)."""
    rng = np.random.default_rng(seed)
    n_int, dt, n_instr, n_cfg = 40, 0.5, 30, 12
    t = rng.uniform(0, n_int * dt, m)
    cols = (np.arange(n_cfg)[:, None] * 6 + np.arange(6)) % n_instr
    lay = gsr.UnknownLayout(n_stars, n_int + 3, n_instr, n_glob)
    cons = None
    if constraints:
        cons = gsr.Constraints.from_rows(
            [
                (np.arange(0, 5 * n_stars, 5), rng.normal(size=n_stars)),
                ([lay.att_offset + 1, lay.instr_offset + 7], [1.0, 2.0]),
            ],
            rhs=[0.5, -1.0],
        )
    return gsr.make_system(
        n_stars=n_stars,
        n_att=n_int + 3,
        n_instr=n_instr,
        star=np.concatenate([np.arange(n_stars), rng.integers(0, n_stars, m - n_stars)]),
        knot=np.minimum((t / dt).astype(int), n_int - 1),
        instr=rng.integers(0, n_cfg, m),
        instr_cols=cols,
        t=t,
        astro=rng.normal(size=(m, 3)),
        attitude=rng.normal(size=(m, 3)),
        instrument=rng.normal(size=(m, 6)),
        glob=rng.normal(size=m) if n_glob else None,
        rhs=rng.normal(size=m),
        sigma=rng.uniform(0.5, 2.0, m),
        knot_t0=0.0,
        knot_dt=dt,
        epoch=3.0,
        constraints=cons,
        n_blocks=7,
    )


@dataclass
class Solved:
    """A simulated problem, one of its linear systems, the solution and its errors."""

    problem: gsr_problem.SyntheticProblem
    system: gsr.GsrSystem
    result: gsr.LsqrResult
    errors: gsr.StandardErrors | None = None


def mpi_missing() -> str | None:
    """Why an MPI solve cannot run here (None when it can)."""
    import importlib.util

    from dpct.pipelines.gsr.mpi import MpiError, mpiexec

    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed"
    try:
        mpiexec()
    except MpiError as err:
        return str(err)
    return None
