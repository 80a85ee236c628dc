"""The MPI solve (mpi4py, 2 ranks) against the 1-process solve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gsr_testing import mpi_missing

import dpct.pipelines.gsr as gsr
from dpct.pipelines.gsr._distributed import load_rank_rows, rank_star_ranges, save_system
from dpct.pipelines.gsr.mpi import run_mpi
from dpct.testing import gsr_problem

needs_mpi = pytest.mark.skipif(mpi_missing() is not None, reason=mpi_missing() or "")


def test_ranks_split_rows_by_whole_stars(
    small_problem: gsr_problem.SyntheticProblem, tmp_path: Path
):
    system = small_problem.linear_system(noise=True)
    save_system(system, tmp_path / "sys")
    star_ptr = system.star_row_ranges()
    for size in (1, 2, 3):
        ranges = rank_star_ranges(star_ptr, size)
        parts = [load_rank_rows(tmp_path / "sys", r, size) for r in range(size)]
        assert sum(p.n_rows for p in parts) == system.n_rows
        for (s0, s1), part in zip(ranges, parts, strict=True):
            assert part.n_rows > 0 and set(np.unique(part.star)) == set(range(s0, s1))
        joined = np.concatenate([p.rhs for p in parts])
        assert np.array_equal(joined, system.rhs)


@pytest.mark.slow  # mpirun processes
@needs_mpi
def test_two_ranks_agree_with_one_process(
    small_problem: gsr_problem.SyntheticProblem, tmp_path: Path
):
    system = small_problem.linear_system(noise=True)
    serial = gsr.solve(system, atol=1e-12, btol=1e-12)
    save_system(system, tmp_path / "sys")
    mpi = run_mpi(tmp_path / "sys", tmp_path / "x.npz", ranks=2, atol=1e-12, btol=1e-12)
    # each rank held a disjoint, non-empty set of rows, together all of them
    (a0, a1), (b0, b1) = mpi.rank_rows
    assert 0 == a0 < a1 == b0 < b1 == system.n_rows
    assert np.linalg.norm(mpi.x - serial.x) <= 1e-10 * np.linalg.norm(serial.x)
    assert abs(mpi.result.itn - serial.itn) <= 5
