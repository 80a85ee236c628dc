"""The GPU row pass (CuPy) against the CPU reference; skipped where no GPU is seen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gsr_testing import TIGHT

import dpct.pipelines.gsr as gsr
from dpct.pipelines.gsr._gpu import GpuRowOperator, gpu_available
from dpct.pipelines.gsr._kernels import RowOperator
from dpct.testing import gsr_problem

pytestmark = pytest.mark.skipif(not gpu_available(), reason="no CUDA device seen by CuPy")


def test_gpu_pass_matches_cpu_pass(small_problem: gsr_problem.SyntheticProblem) -> None:
    system = small_problem.linear_system(noise=True)
    rng = np.random.default_rng(1)
    vs = rng.normal(size=system.layout.n_unknowns)
    u0 = rng.normal(size=system.n_rows), rng.normal(size=system.n_constraints)
    for coeffs in [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 1.0, -0.7), (1.0, -1.0, 0.0)]:
        cpu, gpu = RowOperator(system), GpuRowOperator(system)
        cpu.set_u(*u0)
        gpu.set_u(*u0)
        out_c, ss_c = cpu.apply(vs, *coeffs)
        out_g, ss_g = gpu.apply(vs, *coeffs)
        scale = np.max(np.abs(out_c))
        assert np.max(np.abs(out_g - out_c)) <= 1e-14 * scale * 10
        assert ss_g == pytest.approx(ss_c, rel=1e-13)
        # Row sums are formed in another order (and with fused multiply-adds): compare
        # against the vector's scale, not element by element (a sum may cancel to ~0).
        u_g, u_c = gpu.get_u()[0], cpu.get_u()[0]
        assert np.max(np.abs(u_g - u_c)) <= 1e-13 * np.max(np.abs(u_c))


def test_gpu_solve_matches_cpu_solve_and_resumes_on_cpu(
    small_problem: gsr_problem.SyntheticProblem, tmp_path: Path
) -> None:
    system = small_problem.linear_system(noise=True)
    cpu = gsr.solve(system, **TIGHT)
    gpu = gsr.solve(system, device="gpu", **TIGHT)
    assert np.linalg.norm(gpu.x - cpu.x) <= 1e-10 * np.linalg.norm(cpu.x)
    # A checkpoint written on the GPU resumes on the CPU.
    ck = tmp_path / "ck.npz"
    part = gsr.solve(system, device="gpu", iter_lim=20, checkpoint=ck, checkpoint_every=5, **TIGHT)
    assert part.itn == 20
    rest = gsr.solve(system, checkpoint=ck, **TIGHT)
    assert rest.resumed_from == 20
    assert np.linalg.norm(rest.x - cpu.x) <= 1e-10 * np.linalg.norm(cpu.x)
