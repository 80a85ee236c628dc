"""Checkpoints keyed by the job: an interrupted solve resumes and ends where it would have."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dpct.pipelines.gsr as gsr
from dpct.testing import gsr_problem

TOL = dict(atol=1e-10, btol=1e-10)


@pytest.fixture(scope="module")
def system(small_problem: gsr_problem.SyntheticProblem) -> gsr.GsrSystem:
    return small_problem.linear_system(noise=True)


@pytest.fixture(scope="module")
def uninterrupted(system: gsr.GsrSystem) -> gsr.LsqrResult:
    return gsr.solve(system, **TOL)


@pytest.mark.parametrize("stop_at", [1, 37])
def test_interrupted_solve_resumes_to_the_same_solution(
    system: gsr.GsrSystem, uninterrupted: gsr.LsqrResult, tmp_path: Path, stop_at: int
) -> None:
    path = gsr.checkpoint_path(tmp_path, "job-42")
    first = gsr.solve(
        system, checkpoint=path, checkpoint_every=1000, callback=lambda i: i.itn >= stop_at, **TOL
    )
    assert first.interrupted and first.itn == stop_at
    assert path.exists()

    # a new attempt of the same job: same path, resumes where the first one stopped
    second = gsr.solve(system, checkpoint=path, checkpoint_every=1000, **TOL)
    assert second.resumed_from == stop_at
    assert second.iterations_this_attempt == uninterrupted.itn - stop_at
    assert second.itn == uninterrupted.itn and second.istop == uninterrupted.istop
    assert np.max(np.abs(second.x - uninterrupted.x)) <= 1e-12 * np.max(np.abs(uninterrupted.x))
    assert second.r1norm == uninterrupted.r1norm


def test_resumes_from_the_last_periodic_checkpoint(
    system: gsr.GsrSystem, uninterrupted: gsr.LsqrResult, tmp_path: Path
) -> None:
    # a killed node writes nothing on its way out: the retry starts from the last save
    path = tmp_path / "job.npz"
    saves: list[int] = []

    def crash(info: gsr.IterationInfo) -> None:
        if path.exists():
            saves.append(info.itn)
        if info.itn == 25:
            raise KeyboardInterrupt  # stands in for SIGKILL: no checkpoint on the way out

    with pytest.raises(KeyboardInterrupt):
        gsr.solve(system, checkpoint=path, checkpoint_every=10, callback=crash, **TOL)
    assert not list(tmp_path.glob(".*.tmp"))  # writes are atomic: no half file left
    resumed = gsr.solve(system, checkpoint=path, checkpoint_every=1000, **TOL)
    assert resumed.resumed_from == 20
    assert np.array_equal(resumed.x, uninterrupted.x)


def test_finished_checkpoint_returns_the_solution_at_once(
    system: gsr.GsrSystem, uninterrupted: gsr.LsqrResult, tmp_path: Path
) -> None:
    path = tmp_path / "done.npz"
    gsr.solve(system, checkpoint=path, **TOL)
    again = gsr.solve(system, checkpoint=path, **TOL)
    assert again.iterations_this_attempt == 0
    assert np.array_equal(again.x, uninterrupted.x)


def test_checkpoint_of_another_problem_is_refused(system: gsr.GsrSystem, tmp_path: Path) -> None:
    path = tmp_path / "job.npz"
    gsr.solve(system, checkpoint=path, iter_lim=3)
    other = system.with_rhs(system.rhs + 1.0)
    with pytest.raises(gsr.CheckpointMismatchError, match="another system"):
        gsr.solve(other, checkpoint=path)
    with pytest.raises(gsr.CheckpointMismatchError, match="another system"):
        gsr.solve(system, checkpoint=path, damp=0.1)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(gsr.CheckpointMismatchError, match="cannot be read"):
        gsr.solve(system, checkpoint=path)


def test_outer_loop_resumes_after_interruption(
    small_problem: gsr_problem.SyntheticProblem, tmp_path: Path
) -> None:
    x0 = np.zeros(small_problem.layout.n_unknowns)
    kwargs = dict(update_tol=1e-3, max_outer=4, **TOL)
    whole = gsr.solve_nonlinear(small_problem, x0, **kwargs)

    calls = {"n": 0}

    def stop_in_second_solve(info: gsr.IterationInfo) -> bool:
        calls["n"] += 1
        return calls["n"] > whole.solves[0].itn + 5

    part = gsr.solve_nonlinear(
        small_problem, x0, checkpoint_dir=tmp_path, job_id="gsr-7", callback=stop_in_second_solve,
        **kwargs,
    )  # fmt: skip
    assert part.solves[-1].interrupted and len(part.solves) == 2
    rest = gsr.solve_nonlinear(small_problem, x0, checkpoint_dir=tmp_path, job_id="gsr-7", **kwargs)
    assert rest.solves[0].iterations_this_attempt == 0  # the first solve was finished
    assert rest.solves[1].resumed_from > 0
    np.testing.assert_array_equal(rest.x, whole.x)
