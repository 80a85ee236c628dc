"""Where a single-process solve runs its row passes: Numba on the CPU, or CuPy on a GPU."""

from __future__ import annotations

from typing import Literal

from dpct.pipelines.gsr._exceptions import GsrInputError
from dpct.pipelines.gsr._kernels import RowOperator
from dpct.pipelines.gsr._lsqr_iteration import RowPass
from dpct.pipelines.gsr._system import GsrSystem

Device = Literal["cpu", "gpu", "auto"]


def row_operator(system: GsrSystem, device: Device) -> RowPass:
    """The row operator for ``device``: ``"auto"`` takes the GPU when CuPy sees one.

    CuPy is imported only when a GPU may be used, so a CPU solve never needs it.

    Raises
    ------
    ValueError
        ``device`` is none of the three.
    GsrInputError
        ``"gpu"`` was asked for but CuPy sees no CUDA device.
    """
    if device not in ("cpu", "gpu", "auto"):
        raise ValueError(f"device must be 'cpu', 'gpu' or 'auto', not {device!r}")
    if device == "cpu":
        return RowOperator(system)
    from dpct.pipelines.gsr._gpu import GpuRowOperator, gpu_available

    if gpu_available():
        return GpuRowOperator(system)  # type: ignore[return-value]
    if device == "gpu":
        raise GsrInputError("device='gpu' asked for, but CuPy sees no CUDA device here")
    return RowOperator(system)
