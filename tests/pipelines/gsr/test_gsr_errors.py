"""Standard errors against the dense covariance, and the Monte-Carlo estimate against both."""

from __future__ import annotations

import numpy as np
import pytest

import dpct.pipelines.gsr as gsr
from dpct.testing import gsr_problem

# small enough for a dense normal matrix (~4000 unknowns)
TINY = dict(n_stars=500, mission_days=365.0, knot_minutes=2880.0, n_ccd_strips=2, n_ccd_rows=3)


@pytest.fixture(scope="module")
def tiny() -> tuple[gsr_problem.SyntheticProblem, gsr.GsrSystem, np.ndarray]:
    """A tiny problem and the covariance of its solution, from the dense normal matrix."""
    problem = gsr_problem.make_problem(**TINY)
    system = problem.linear_system(noise=True)
    a = gsr.to_csr(system).toarray()
    n_inv = np.linalg.inv(a.T @ a)
    c = a[system.n_rows :]
    # x - truth = N^-1 A_obs^T W noise  =>  cov = N^-1 (N - C^T C) N^-1
    x = n_inv @ c.T
    return problem, system, np.sqrt(np.diag(n_inv - x @ x.T))


def test_schur_errors_are_the_exact_ones(tiny: tuple) -> None:
    problem, system, exact = tiny
    lay = problem.layout
    np.testing.assert_allclose(gsr.schur_errors(system), exact[lay.att_offset :], rtol=1e-7)


def test_block_errors_invert_each_stars_block(tiny: tuple) -> None:
    problem, system, exact = tiny
    lay = problem.layout
    a = gsr.to_csr(system)[: system.n_rows].toarray()
    block = gsr.astrometric_block_errors(system)
    for s in (0, lay.n_stars // 2, lay.n_stars - 1):
        cols = a[:, 5 * s : 5 * s + 5]
        np.testing.assert_allclose(
            block[s], np.sqrt(np.diag(np.linalg.inv(cols.T @ cols))), rtol=1e-9
        )
    # they hold the attitude and instrument fixed, so they can only be smaller
    assert np.all(block.ravel() <= exact[: lay.att_offset] * (1 + 1e-9))


@pytest.mark.slow  # science validation: Monte Carlo over many draws
def test_monte_carlo_errors_agree_with_the_exact_ones(tiny: tuple) -> None:
    _, system, exact = tiny
    k = 24
    mc = gsr.monte_carlo_errors(system, n_samples=k, seed=1, atol=1e-10, btol=1e-10)
    ratio = mc / exact
    # each ratio^2 is chi2_k / k: mean 1, spread sqrt(2/k) ~ 0.29 on the variance
    assert abs(np.mean(ratio**2) - 1) < 0.1
    assert np.quantile(ratio, 0.02) > 1 - 4 * np.sqrt(0.5 / k)
    assert np.quantile(ratio, 0.98) < 1 + 4 * np.sqrt(0.5 / k)


def test_standard_errors_combine_the_methods(tiny: tuple) -> None:
    problem, system, exact = tiny
    lay = problem.layout
    result = gsr.solve(system)
    errors = gsr.standard_errors(system, result)
    assert errors.shared_method == "schur" and errors.lsqr is not None
    np.testing.assert_array_equal(errors.sigma[: lay.att_offset], errors.astrometric_block.ravel())
    np.testing.assert_allclose(errors.sigma[lay.att_offset :], exact[lay.att_offset :], rtol=1e-7)
    with pytest.raises(gsr.GsrInputError, match="method="):
        gsr.standard_errors(system, method="guess")
