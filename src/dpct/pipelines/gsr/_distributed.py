"""The GSR solve over MPI ranks (mpi4py): rows split by star, shared sums all-reduced.

Each rank holds the rows of a contiguous range of stars (so it owns those stars'
astrometric unknowns outright) and runs the same LSQR iteration on the same vectors;
the fused row pass gives each rank its part of ``A^T u`` and ``|u|^2``, and one
all-reduce per iteration sums them. The LSQR scalars are therefore identical on every
rank, and so is the solution. Column norms and the stars' 5x5 blocks for validation and
preconditioning are all-reduced once at the start. The constraint rows are applied by
rank 0 only.

A system file (:func:`save_system`) lets every rank read just its rows
(:func:`load_rank_rows`) through a memory map, so no rank ever holds the whole system.
:class:`Ranks` is what the solve needs of the communicator besides the row pass: global
sums, agreement on a stop, and per-rank checkpoint files.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dpct.pipelines.gsr._kernels import RowOperator
from dpct.pipelines.gsr._lsqr_iteration import sumsq
from dpct.pipelines.gsr._system import Constraints, GsrSystem, UnknownLayout, star_blocks

Reduce = Callable[[Any], Any]
"""Sum over ranks: arrays element-wise (same shape on every rank), or a Python float."""

_ROW_ARRAYS = ("star", "knot", "instr", "t", "coef", "rhs", "inv_sigma")


def allreduce_sum(comm: Any) -> Reduce:
    """A sum over ``comm``'s ranks, in rank order, so every rank gets the same bits."""
    from mpi4py import MPI

    def reduce(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            out = np.empty_like(value)
            comm.Allreduce(np.ascontiguousarray(value), out, op=MPI.SUM)
            return out
        return comm.allreduce(value, op=MPI.SUM)

    return reduce


def rank_star_ranges(star_ptr: NDArray[np.int64], size: int) -> list[tuple[int, int]]:
    """Split stars into ``size`` contiguous ranges of about equal row counts."""
    m = int(star_ptr[-1])
    targets = [round(m * k / size) for k in range(size + 1)]
    cuts = np.searchsorted(star_ptr, targets[1:-1])
    bounds = [0, *[int(c) for c in cuts], len(star_ptr) - 1]
    return [(bounds[k], bounds[k + 1]) for k in range(size)]


def save_system(system: GsrSystem, path: str | Path) -> Path:
    """Write a system for :func:`load_rank_rows` (uncompressed .npy files in a folder)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for name in _ROW_ARRAYS:
        np.save(folder / f"{name}.npy", getattr(system, name))
    np.save(folder / "instr_cols.npy", system.instr_cols)
    c = system.constraints
    if c is not None:
        np.savez(folder / "constraints.npz", indptr=c.indptr, indices=c.indices, data=c.data,
                 rhs=c.rhs)  # fmt: skip
    lay = system.layout
    meta = {
        "layout": [lay.n_stars, lay.n_att, lay.n_instr, lay.n_glob],
        "knot_t0": system.knot_t0,
        "knot_dt": system.knot_dt,
        "epoch": system.epoch,
        "n_blocks": len(system.blocks) - 1,
    }
    (folder / "system.json").write_text(json.dumps(meta))
    return folder


def load_rank_rows(path: str | Path, rank: int, size: int) -> GsrSystem:
    """The rows of rank ``rank`` of ``size``: a GsrSystem over the full layout."""
    folder = Path(path)
    meta = json.loads((folder / "system.json").read_text())
    star = np.load(folder / "star.npy", mmap_mode="r")
    lay = UnknownLayout(*meta["layout"])
    star_ptr = np.searchsorted(star, np.arange(lay.n_stars + 1)).astype(np.int64)
    s0, s1 = rank_star_ranges(star_ptr, size)[rank]
    r0, r1 = int(star_ptr[s0]), int(star_ptr[s1])
    rows = {
        name: np.ascontiguousarray(np.load(folder / f"{name}.npy", mmap_mode="r")[r0:r1])
        for name in _ROW_ARRAYS
    }
    constraints = None
    if (folder / "constraints.npz").exists():
        with np.load(folder / "constraints.npz") as z:
            constraints = Constraints(z["indptr"], z["indices"], z["data"], z["rhs"])
    n_blocks = max(1, round(meta["n_blocks"] / size))
    return GsrSystem(
        layout=lay,
        instr_cols=np.load(folder / "instr_cols.npy"),
        knot_t0=meta["knot_t0"],
        knot_dt=meta["knot_dt"],
        epoch=meta["epoch"],
        constraints=constraints,
        blocks=star_blocks(rows["star"], n_blocks),
        **rows,
    )


class DistributedRowOperator:
    """RowOperator's contract over ranks: local pass, then one all-reduce."""

    def __init__(self, system: GsrSystem, reduce: Reduce, rank: int) -> None:
        # rank 0 alone applies the constraint rows, so they count once
        local = system if rank == 0 else system.with_constraints(None)
        self._local = RowOperator(local)
        self._reduce = reduce
        self.n = self._local.n

    def get_u(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return self._local.get_u()

    def set_u(self, u_obs: NDArray[np.float64], u_con: NDArray[np.float64]) -> None:
        self._local.set_u(u_obs, u_con)

    def apply(
        self, vs: NDArray[np.float64], c_rhs: float, c_av: float, c_u: float
    ) -> tuple[NDArray[np.float64], float]:
        out, ss = self._local.apply(vs, c_rhs, c_av, c_u)
        packed = np.empty(out.shape[0] + 1)
        packed[:-1] = out
        packed[-1] = ss
        total = self._reduce(packed)
        return total[:-1], float(total[-1])


class Ranks:
    """A solve spread over the ranks of an mpi4py communicator (every rank runs it)."""

    def __init__(self, comm: Any) -> None:
        self.reduce: Reduce = allreduce_sum(comm)
        self.rank: int = comm.Get_rank()
        self.size: int = comm.Get_size()

    @property
    def is_root(self) -> bool:
        """Rank 0: the one that shows progress."""
        return self.rank == 0

    def checkpoint_file(self, path: str | os.PathLike[str]) -> Path:
        """This rank's checkpoint file: the rank is added to the name when there are several."""
        base = Path(path)
        if self.size == 1:
            return base
        return base.with_name(f"{base.stem}.rank{self.rank}of{self.size}{base.suffix}")

    def operator(self, system: GsrSystem) -> DistributedRowOperator:
        """The row pass over this rank's rows, summed over all ranks."""
        return DistributedRowOperator(system, self.reduce, self.rank)

    def rhs_norm(self, system: GsrSystem) -> float:
        """``|b|``: observation rows are spread over ranks, constraint rows are everywhere."""
        bvec = system.weighted_rhs()
        obs_sq = self.reduce(sumsq(bvec[: system.n_rows]))
        return math.sqrt(obs_sq + sumsq(bvec[system.n_rows :]))

    def agree(self, stop: bool) -> bool:
        """Stop when any rank asks to, so that all ranks stop at the same iteration."""
        return bool(self.reduce(int(stop)))

    def n_rows(self, system: GsrSystem) -> int:
        """Observation rows over all ranks."""
        return int(self.reduce(system.n_rows))
