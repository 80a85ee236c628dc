"""Fixtures for the GSR solver tests: random systems and simulated problems with truth.

The simulated problems are session-scoped: making one and solving it costs seconds, and
several tests look at the same solution from different sides.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from gsr_testing import CI_PROBLEM, SMALL_PROBLEM, TIGHT, Solved, random_system

import dpct.pipelines.gsr as gsr
from dpct.testing import gsr_problem

HERE = Path(__file__).parent


@pytest.fixture
def make_random_system() -> Callable[..., gsr.GsrSystem]:
    return random_system


@pytest.fixture(scope="session")
def small_problem() -> gsr_problem.SyntheticProblem:
    return gsr_problem.make_problem(**SMALL_PROBLEM)


@pytest.fixture(scope="session")
def ci_problem() -> gsr_problem.SyntheticProblem:
    return gsr_problem.make_problem(**CI_PROBLEM)


@pytest.fixture(scope="session")
def ci_noisy(ci_problem: gsr_problem.SyntheticProblem) -> Solved:
    system = ci_problem.linear_system(noise=True)
    result = gsr.solve(system, **TIGHT)
    return Solved(ci_problem, system, result, gsr.standard_errors(system, result))
