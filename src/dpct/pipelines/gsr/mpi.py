"""Running a GSR solve under MPI: the launcher a task calls, and the program each rank runs.

``run_mpi`` starts ``mpiexec -n RANKS python -m dpct.pipelines.gsr.mpi SYSTEM OUT ...``;
each rank reads its rows of the saved system (:func:`save_system`), all ranks solve
together, and rank 0 writes the solution and how the rows were split. A processing node
gives such a job as many slots as it has ranks (the task type's ``cores``).

mpiexec is looked up beside the running Python first (the ``mpich`` wheel installs it
in the virtual environment), then on ``PATH``; ``DPCT_MPIEXEC`` overrides both.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpct.errors import DpctError
from dpct.pipelines.gsr._lsqr import LsqrResult
from dpct.pipelines.gsr._progress import IterationInfo


class MpiError(DpctError):
    """MPI is missing, or the ranks failed."""


@dataclass(frozen=True)
class MpiSolution:
    result: LsqrResult
    """Rank 0's result (every rank ends with the same solution)."""
    rank_rows: list[tuple[int, int]]
    """Each rank's row range ``[first, last)`` in the saved system."""
    iterations: list[IterationInfo]
    """What the solver reported after each iteration of this run, for progress logs."""

    @property
    def x(self) -> np.ndarray:
        return self.result.x


def mpiexec() -> str:
    found = os.environ.get("DPCT_MPIEXEC") or shutil.which(
        "mpiexec", path=str(Path(sys.executable).parent)
    )
    found = found or shutil.which("mpiexec")
    if not found:
        raise MpiError(
            "no mpiexec found: install an MPI (e.g. `pip install mpi4py mpich`, or Debian's "
            "openmpi-bin) or set DPCT_MPIEXEC"
        )
    return found


def run_mpi(
    system_dir: str | Path,
    out: str | Path,
    *,
    ranks: int,
    atol: float = 1e-10,
    btol: float = 1e-10,
    iter_lim: int | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 100,
    timeout_s: float | None = None,
) -> MpiSolution:
    """Solve the saved system on ``ranks`` MPI processes; returns rank 0's result."""
    if ranks < 1:
        raise MpiError(f"ranks must be ≥ 1, not {ranks}")
    cmd = [mpiexec(), "-n", str(ranks)]
    if os.geteuid() == 0 and "openmpi" in os.path.realpath(cmd[0]).lower():
        cmd.append("--allow-run-as-root")
    cmd += [sys.executable, "-m", "dpct.pipelines.gsr.mpi", str(system_dir), str(out)]
    cmd += ["--atol", repr(atol), "--btol", repr(btol), "--every", str(checkpoint_every)]
    if iter_lim is not None:
        cmd += ["--iter-lim", str(iter_lim)]
    if checkpoint is not None:
        cmd += ["--checkpoint", str(checkpoint)]
    # Each rank is one process with one thread: the node granted one slot per rank.
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise MpiError(f"mpiexec exited with {done.returncode}: " + " | ".join(tail))
    return read_solution(out)


def read_solution(out: str | Path) -> MpiSolution:
    """Rank 0's output file (a pickle this module wrote: trusted as much as the job's folder)."""
    with open(out, "rb") as f:
        return pickle.load(f)


def main(argv: list[str] | None = None) -> None:
    """One rank's program."""
    from mpi4py import MPI

    import dpct.pipelines.gsr as gsr
    from dpct.pipelines.gsr._distributed import load_rank_rows, rank_star_ranges

    p = argparse.ArgumentParser(description="one rank of an MPI GSR solve")
    p.add_argument("system")
    p.add_argument("out")
    p.add_argument("--atol", type=float, default=1e-10)
    p.add_argument("--btol", type=float, default=1e-10)
    p.add_argument("--iter-lim", type=int, default=None)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--every", type=int, default=100)
    args = p.parse_args(argv)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    system = load_rank_rows(args.system, rank, size)
    iterations: list[IterationInfo] = []
    result = gsr.solve(
        system,
        atol=args.atol,
        btol=args.btol,
        iter_lim=args.iter_lim,
        checkpoint=args.checkpoint,
        checkpoint_every=args.every,
        callback=iterations.append if rank == 0 else None,
        comm=comm,
    )
    star = np.load(Path(args.system) / "star.npy", mmap_mode="r")
    star_ptr = np.searchsorted(star, np.arange(system.layout.n_stars + 1))
    s0, s1 = rank_star_ranges(star_ptr, size)[rank]
    mine = (int(star_ptr[s0]), int(star_ptr[s1]))
    assert mine[1] - mine[0] == system.n_rows
    rank_rows = comm.gather(mine, root=0)
    if rank == 0:
        # this file runs as __main__: pickle the class under its importable name
        from dpct.pipelines.gsr.mpi import MpiSolution

        solution = MpiSolution(result, [tuple(r) for r in rank_rows], iterations)
        tmp = Path(str(args.out) + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(solution, f)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
