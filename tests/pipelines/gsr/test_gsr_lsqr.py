"""LSQR on the compact system against SciPy's LSQR on the same system in CSR."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
import scipy.sparse.linalg as spla

import dpct.pipelines.gsr as gsr
from dpct.testing import gsr_problem


def _scipy(system: gsr.GsrSystem, result: gsr.LsqrResult, **kwargs: object) -> tuple:
    """SciPy's LSQR on ``A M`` with the same preconditioner M; returns its raw tuple."""
    a = gsr.to_csr(system) @ result.preconditioner.to_sparse()
    x0 = kwargs.pop("x0", None)
    if x0 is not None:
        kwargs["x0"] = result.preconditioner.solve(np.asarray(x0))
    return spla.lsqr(a, system.weighted_rhs(), calc_var=True, **kwargs)


def _scaled_rel(result: gsr.LsqrResult, y_ref: np.ndarray) -> float:
    """Relative difference in the preconditioned unknowns, where LSQR's iterates live."""
    y = result.preconditioner.solve(result.x)
    return float(np.linalg.norm(y - y_ref) / np.linalg.norm(y_ref))


@pytest.mark.parametrize("precondition", ["stars", "columns"])
def test_converged_solution_matches_scipy(
    small_problem: gsr_problem.SyntheticProblem,
    make_random_system: Callable[..., gsr.GsrSystem],
    precondition: str,
) -> None:
    # column scaling alone needs thousands of iterations on the simulated problem (and its
    # unconverged iterates amplify rounding differences): use a random system for it
    if precondition == "stars":
        system = small_problem.linear_system(noise=True)
    else:
        system = make_random_system(seed=11, m=20_000)
    tol = dict(atol=1e-10, btol=1e-10)
    ours = gsr.solve(system, precondition=precondition, require_constraints=False, **tol)
    ref = _scipy(system, ours, **tol)
    assert ours.istop == ref[1] == 2
    # near convergence the stopping quantities creep: rounding may move the stop a little
    assert abs(ours.itn - ref[2]) <= max(2, ours.itn // 100)
    assert _scaled_rel(ours, ref[0]) <= 1e-8
    assert ours.r1norm == pytest.approx(ref[3], rel=1e-8)


@pytest.mark.large
def test_column_scaled_solution_matches_scipy_on_simulated_problem(
    small_problem: gsr_problem.SyntheticProblem,
) -> None:
    system = small_problem.linear_system(noise=True)
    tol = dict(atol=1e-10, btol=1e-10, iter_lim=20_000)
    ours = gsr.solve(system, precondition="columns", **tol)
    ref = _scipy(system, ours, **tol)
    assert ours.istop == ref[1] == 2
    assert _scaled_rel(ours, ref[0]) <= 1e-8


def test_damping_and_starting_point_match_scipy(
    small_problem: gsr_problem.SyntheticProblem,
) -> None:
    system = small_problem.linear_system(noise=True)
    x0 = np.random.default_rng(0).normal(size=system.layout.n_unknowns)
    tol = dict(atol=1e-10, btol=1e-10, damp=0.3)
    ours = gsr.solve(system, x0=x0, **tol)
    ref = _scipy(system, ours, x0=x0, **tol)
    assert ours.istop == ref[1]
    assert _scaled_rel(ours, ref[0]) <= 1e-8
    assert ours.r1norm == pytest.approx(ref[3], rel=1e-8)


def test_stopping_rules_are_lsqrs(make_random_system: Callable[..., gsr.GsrSystem]) -> None:
    system = make_random_system(seed=7)
    for kwargs, istop in (
        (dict(iter_lim=5), 7),
        (dict(conlim=3.0), 3),
        (dict(atol=1e-3, btol=1e-3), 2),
    ):
        ours = gsr.solve(system, require_constraints=False, **kwargs)
        ref = _scipy(system, ours, **kwargs)
        assert (ours.istop, ours.itn) == (ref[1], ref[2]) == (istop, ref[2])


def test_lsqr_variance_estimate_is_scipys(small_problem: gsr_problem.SyntheticProblem) -> None:
    system = small_problem.linear_system(noise=True)
    # few iterations: column scaling alone leaves this problem ill-conditioned, and LSQR's
    # loss of orthogonality soon amplifies rounding differences (1e-16 -> 1e-6 in 15 steps)
    ours = gsr.solve(system, iter_lim=15, precondition="columns")
    ref = _scipy(system, ours, iter_lim=15)
    scale = ours.preconditioner.diag
    np.testing.assert_allclose(ours.var, ref[9] * scale**2, rtol=1e-4)


def test_progress_bar_and_callback_report_each_iteration(
    make_random_system: Callable[..., gsr.GsrSystem], capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[gsr.IterationInfo] = []
    result = gsr.solve(make_random_system(seed=8), iter_lim=12, progress=True, callback=seen.append)
    assert [i.itn for i in seen] == list(range(1, result.itn + 1))
    assert seen[-1].r1norm == result.r1norm
    assert all(a.r1norm >= b.r1norm for a, b in itertools.pairwise(seen))  # |r| decreases
    assert "LSQR" in capsys.readouterr().out


def test_silent_by_default(
    make_random_system: Callable[..., gsr.GsrSystem], capsys: pytest.CaptureFixture[str]
) -> None:
    gsr.solve(make_random_system(seed=9), iter_lim=5)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_iteration_resumes_from_its_state_without_any_driver(
    make_random_system: Callable[..., gsr.GsrSystem],
) -> None:
    """The bare iteration: stopped by its callback, it goes on from the state it left."""
    from dpct.pipelines.gsr._kernels import RowOperator
    from dpct.pipelines.gsr._lsqr_iteration import ISTOP_INTERRUPTED, iterate, norm, start

    system = make_random_system(seed=5)
    tol = dict(damp=0.0, atol=1e-10, btol=1e-10, conlim=1e12, iter_lim=500)
    pre = gsr.make_preconditioner(system, "stars")
    bnorm = norm(system.weighted_rhs())

    def run(stop_at: int | None) -> tuple[np.ndarray, int, list[int]]:
        op = RowOperator(system)
        state = start(op, pre, bnorm=bnorm, x0=None, calc_var=False)
        seen: list[int] = []

        def hook(info: gsr.IterationInfo, current: object) -> bool:
            seen.append(info.itn)
            return info.itn == stop_at

        iterate(op, pre, state, **tol, on_iteration=hook)
        if stop_at is not None:
            assert state.istop == ISTOP_INTERRUPTED and state.itn == stop_at
            iterate(op, pre, state, **tol, on_iteration=hook)
        return pre.apply(state.y), state.istop, seen

    whole, istop, seen_whole = run(None)
    resumed, istop_resumed, seen_resumed = run(7)
    assert np.array_equal(resumed, whole)  # bit for bit
    assert istop_resumed == istop == 2
    assert seen_resumed == seen_whole == list(range(1, len(seen_whole) + 1))
    a = gsr.to_csr(system) @ pre.to_sparse()
    ref = spla.lsqr(a, system.weighted_rhs(), atol=1e-10, btol=1e-10)
    y = pre.solve(whole)
    assert np.linalg.norm(y - ref[0]) <= 1e-8 * np.linalg.norm(ref[0])
