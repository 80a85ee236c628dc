"""Bad input is refused with a clear error before the first iteration."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

import dpct.pipelines.gsr as gsr
from dpct.testing import gsr_problem


def _never(info: gsr.IterationInfo) -> bool:
    raise AssertionError("the solve started")


def _refuse(system: gsr.GsrSystem, error: type[Exception], match: str, **kwargs: object) -> None:
    with pytest.raises(error, match=match):
        gsr.solve(system, callback=_never, **kwargs)


@pytest.fixture
def good(make_random_system: Callable[..., gsr.GsrSystem]) -> gsr.GsrSystem:
    return make_random_system(seed=21, m=3_000)


def _with(system: gsr.GsrSystem, **arrays: np.ndarray) -> gsr.GsrSystem:
    return dataclasses.replace(system, **arrays)


def test_rows_referencing_unknown_stars(good: gsr.GsrSystem) -> None:
    star = good.star.copy()
    star[-3:] = good.layout.n_stars + 5
    _refuse(_with(good, star=star), gsr.InvalidIndexError, r"reference stars \[125\]")


@pytest.mark.parametrize("name", ["coef", "rhs", "t"])
def test_nan_values(good: gsr.GsrSystem, name: str) -> None:
    a = getattr(good, name).copy()
    a.reshape(a.shape[0], -1)[7, -1] = np.nan
    _refuse(_with(good, **{name: a}), gsr.NonFiniteError, f"rows 7 have NaN.*'{name}'")


def test_zero_or_nan_sigma(good: gsr.GsrSystem) -> None:
    w = good.inv_sigma.copy()
    w[3] = np.inf  # sigma = 0
    _refuse(_with(good, inv_sigma=w), gsr.NonFiniteError, "sigma zero, negative or NaN")
    w[3] = -1.0
    _refuse(_with(good, inv_sigma=w), gsr.GsrInputError, "sigma <= 0")


def test_empty_system(good: gsr.GsrSystem) -> None:
    empty = gsr.make_system(
        n_stars=good.layout.n_stars, n_att=good.layout.n_att, n_instr=good.layout.n_instr,
        star=[], knot=[], instr=[], instr_cols=good.instr_cols, t=[],
        astro=np.zeros((0, 3)), attitude=np.zeros((0, 3)), instrument=np.zeros((0, 6)),
        rhs=[], sigma=[], knot_t0=0.0, knot_dt=1.0,
    )  # fmt: skip
    _refuse(empty, gsr.EmptySystemError, "no observation rows")


def test_rank_deficient_without_constraints(small_problem: gsr_problem.SyntheticProblem) -> None:
    system = small_problem.linear_system().with_constraints(None)
    _refuse(system, gsr.RankDeficientError, "no constraint equations.*frame")
    # damping makes the solution unique: then it may go ahead
    assert gsr.solve(system, damp=0.1, iter_lim=2).itn == 2


def test_unobserved_unknowns(good: gsr.GsrSystem) -> None:
    lay = good.layout
    bigger = dataclasses.replace(good, layout=dataclasses.replace(lay, n_instr=lay.n_instr + 2))
    _refuse(bigger, gsr.RankDeficientError, "2 unknowns appear in no observation")


def test_star_seen_from_one_direction_only(good: gsr.GsrSystem) -> None:
    coef = good.coef.copy()
    rows = slice(*good.star_row_ranges()[4:6])
    coef[rows, 0] = 0.6  # all scans of star 4 along the same direction
    coef[rows, 1] = 0.8
    _refuse(_with(good, coef=coef), gsr.RankDeficientError, "stars 4 have too few")


def test_knot_index_that_does_not_match_the_time(good: gsr.GsrSystem) -> None:
    knot = good.knot.copy()
    knot[11] = (knot[11] + 2) % (good.layout.n_att - 3)
    _refuse(_with(good, knot=knot), gsr.InvalidIndexError, "rows 11: the knot index")


def test_rows_not_sorted_by_star(good: gsr.GsrSystem) -> None:
    _refuse(_with(good, star=good.star[::-1].copy()), gsr.LayoutError, "not sorted by star")


def test_wrong_dtype_is_refused_at_construction(good: gsr.GsrSystem) -> None:
    with pytest.raises(gsr.LayoutError, match=r"GsrSystem.coef is float64"):
        _with(good, coef=good.coef.astype(np.float64))


def test_errors_are_value_errors_with_the_projects_base() -> None:
    from dpct.errors import DpctError

    assert issubclass(gsr.GsrInputError, ValueError)
    assert issubclass(gsr.RankDeficientError, DpctError)
