"""The numba kernels against the readable CSR reference, and the storage's footprint."""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
import pytest
import scipy.sparse.linalg as spla

import dpct.pipelines.gsr as gsr
from dpct.pipelines.gsr import _kernels
from dpct.pipelines.gsr._reference import csr_nbytes_per_observation
from dpct.testing import gsr_problem


def _assert_equal_products(system: gsr.GsrSystem, x: np.ndarray, y: np.ndarray) -> None:
    """A x and A^T y agree with the CSR products to 1e-14, in norm and entry by entry.

    Entry by entry relative to ``|A| |x|``: a sum of thousands of terms that cancel can
    only be expected to agree to rounding of its largest terms, whatever the code.
    """
    a = gsr.to_csr(system)
    for got, ref, scale in (
        (gsr.matvec(system, x), a @ x, abs(a) @ np.abs(x)),
        (gsr.rmatvec(system, y), a.T @ y, abs(a).T @ np.abs(y)),
    ):
        diff = got - ref
        assert np.linalg.norm(diff) <= 1e-14 * np.linalg.norm(ref)
        assert np.all(np.abs(diff) <= 1e-14 * scale)


@pytest.mark.parametrize("n_glob", [0, 1])
@pytest.mark.parametrize("constraints", [False, True])
def test_products_match_csr_on_random_vectors(
    make_random_system: Callable[..., gsr.GsrSystem], n_glob: int, constraints: bool
) -> None:
    system = make_random_system(seed=1, n_glob=n_glob, constraints=constraints)
    rng = np.random.default_rng(2)
    for _ in range(3):
        x = rng.normal(size=system.shape[1])
        y = rng.normal(size=system.shape[0])
        _assert_equal_products(system, x, y)


def test_products_match_csr_on_simulated_system(
    small_problem: gsr_problem.SyntheticProblem,
) -> None:
    system = small_problem.linear_system()
    rng = np.random.default_rng(3)
    x = rng.normal(size=system.shape[1])
    y = rng.normal(size=system.shape[0])
    _assert_equal_products(system, x, y)


def test_column_norms_and_star_blocks_match_csr(
    make_random_system: Callable[..., gsr.GsrSystem],
) -> None:
    system = make_random_system(seed=4)
    a = gsr.to_csr(system)
    np.testing.assert_allclose(gsr.column_norms(system), spla.norm(a, axis=0), rtol=1e-13)
    obs = a[: system.n_rows].toarray()
    for s in (0, 17, system.layout.n_stars - 1):
        block = obs[:, 5 * s : 5 * s + 5]
        np.testing.assert_allclose(
            gsr.star_normal_blocks(system)[s], block.T @ block, rtol=1e-12, atol=1e-12
        )


def test_products_do_not_depend_on_thread_count(
    make_random_system: Callable[..., gsr.GsrSystem], monkeypatch: pytest.MonkeyPatch
) -> None:
    # sums are formed per work block, in block order: a resumed solve on another machine
    # continues the same iterates
    monkeypatch.setattr(_kernels, "PARALLEL_MIN_ROWS", 0)  # use the threads even when small
    system = make_random_system(seed=5, m=20_000)
    y = np.random.default_rng(6).normal(size=system.shape[0])
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = gsr.rmatvec(system, y)
        numba.set_num_threads(before)
        many = gsr.rmatvec(system, y)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(one, many)


def test_memory_per_observation_is_within_target(
    small_problem: gsr_problem.SyntheticProblem,
) -> None:
    system = small_problem.linear_system()
    mem = system.memory_per_observation()
    per_row = sum(v for k, v in mem.items() if k not in ("shared, amortised", "total"))
    assert per_row == 92.0  # 4+4+4 indices, 8 time, 52 coefficients, 8 rhs, 4 weight, 8 u
    assert mem["total"] <= 120.0
    csr = csr_nbytes_per_observation(gsr.to_csr(system), system.n_rows)
    assert csr > 2.5 * per_row
