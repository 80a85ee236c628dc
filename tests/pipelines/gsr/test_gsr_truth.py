"""Truth recovery on a simulated problem: exact without noise, honest errors with noise."""

from __future__ import annotations

import numpy as np
import pytest
from gsr_testing import TIGHT, Solved

import dpct.pipelines.gsr as gsr
from dpct.testing import gsr_problem

pytestmark = pytest.mark.slow  # science validation: truth recovery


def _blocks(layout: gsr.UnknownLayout) -> dict[str, slice]:
    return {
        "astrometric": slice(0, layout.att_offset),
        "attitude": slice(layout.att_offset, layout.instr_offset),
        "instrument": slice(layout.instr_offset, layout.glob_offset),
    }


def test_noise_free_observations_give_the_truth_back(
    ci_problem: gsr_problem.SyntheticProblem,
) -> None:
    system = ci_problem.linear_system(noise=False)
    result = gsr.solve(system, **TIGHT)
    assert result.istop in (1, 2)
    err = result.x - ci_problem.truth
    pre = result.preconditioner
    # relative error where LSQR works (preconditioned unknowns): the tolerance times
    # a modest condition number
    assert np.linalg.norm(pre.solve(err)) <= 1e-9 * np.linalg.norm(pre.solve(ci_problem.truth))
    # and every unknown is right to a small fraction of what the data can resolve
    assert np.max(np.abs(err) * result.column_norms) < 1e-2


def test_pulls_have_unit_spread(ci_noisy: Solved) -> None:
    lay = ci_noisy.problem.layout
    assert ci_noisy.errors is not None
    pull = (ci_noisy.result.x - ci_noisy.problem.truth) / ci_noisy.errors.sigma
    for name, block in _blocks(lay).items():
        p = pull[block]
        assert 0.9 <= p.std() <= 1.1, name
        assert abs(p.mean()) < 5 / np.sqrt(p.size) + 0.05, name
    # each astrometric parameter separately, too
    per_param = pull[: lay.att_offset].reshape(-1, 5).std(axis=0)
    assert np.all((per_param >= 0.9) & (per_param <= 1.1))
    assert 0.97 < ci_noisy.result.unit_weight_error < 1.03


def test_lsqr_own_variance_is_far_too_small(ci_noisy: Solved) -> None:
    # the running estimate covers only the Krylov subspace LSQR explored
    assert ci_noisy.errors is not None and ci_noisy.errors.lsqr is not None
    lay = ci_noisy.problem.layout
    for name in ("astrometric", "attitude"):
        block = _blocks(lay)[name]
        ratio = np.median(ci_noisy.errors.lsqr[block] / ci_noisy.errors.sigma[block])
        assert ratio < 0.3, name


def test_constraints_fix_the_null_space(ci_noisy: Solved) -> None:
    problem, system = ci_noisy.problem, ci_noisy.system
    sigma = ci_noisy.errors.sigma if ci_noisy.errors is not None else None
    assert sigma is not None
    # all nine directions at once, each moving its unknowns by ~100 mas
    null = problem.null_vectors()
    shift = (null / np.max(np.abs(null), axis=1, keepdims=True)).sum(axis=0) * 100.0
    from_truth = gsr.solve(system, x0=problem.truth + shift, **TIGHT)
    from_zero = ci_noisy.result  # solved from 0 with the same tolerances
    assert np.max(np.abs(from_truth.x - from_zero.x) / sigma) < 1e-2
    assert np.max(np.abs(shift) / sigma) > 10  # the shift was far from negligible


def test_without_constraints_the_start_decides(small_problem: gsr_problem.SyntheticProblem) -> None:
    # the same comparison fails without the constraint equations: LSQR never moves along
    # an exact null direction, so the start's null-space component stays in the solution
    z = 50.0 * small_problem.null_vectors()[0]  # attitude z against instrument offsets
    system = small_problem.linear_system(noise=True)
    loose = system.with_constraints(None)
    assert np.max(np.abs(gsr.matvec(loose, z))) < 1e-12 * np.max(np.abs(z))  # exactly null
    x0 = small_problem.truth
    up = gsr.solve(loose, x0=x0 + z, require_constraints=False, **TIGHT).x
    down = gsr.solve(loose, x0=x0 - z, require_constraints=False, **TIGHT).x
    assert np.linalg.norm((up - down) - 2 * z) < 1e-6 * np.linalg.norm(z)
    # with them, both starts end at the same place
    up = gsr.solve(system, x0=x0 + z, **TIGHT).x
    down = gsr.solve(system, x0=x0 - z, **TIGHT).x
    assert np.linalg.norm(up - down) < 1e-6 * np.linalg.norm(z)


def test_outer_loop_reaches_the_truth_of_the_non_linear_model(
    small_problem: gsr_problem.SyntheticProblem,
) -> None:
    exact = small_problem.without_noise()
    x0 = np.zeros(exact.layout.n_unknowns)
    out = gsr.solve_nonlinear(exact, x0, update_tol=1e-4, max_outer=8, **TIGHT)
    assert out.converged
    # one linear solve is far from enough: the truth is arcseconds from the start
    assert out.max_update[1] > 10
    # every unknown ends within 1e-3 of what one column of data resolves (~ its sigma);
    # float32 partials and the weakly determined frame directions set the floor
    norms = out.solves[-1].column_norms
    assert np.max(np.abs(out.x - exact.truth) * norms) < 1e-3


@pytest.mark.large
def test_truth_recovery_at_1e5_stars() -> None:
    problem = gsr_problem.make_problem(
        n_stars=100_000, mission_days=365.0, knot_minutes=120.0, n_ccd_strips=3, seed=5
    )
    system = problem.linear_system(noise=True)
    result = gsr.solve(system, atol=1e-12, btol=1e-12)
    errors = gsr.standard_errors(system, result)
    pull = (result.x - problem.truth) / errors.sigma
    for name, block in _blocks(problem.layout).items():
        assert 0.9 <= pull[block].std() <= 1.1, name
