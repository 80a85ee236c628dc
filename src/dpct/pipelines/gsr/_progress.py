"""What the solver reports after each iteration, and an optional rich progress bar."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True)
class IterationInfo:
    """State of LSQR after an iteration, for progress bars, heartbeats and logs.

    Attributes
    ----------
    itn
        Iterations done (including those before a resume).
    iter_lim
        Iteration limit.
    r1norm
        ``||b - A x||`` (weighted, so in units of sigma).
    arnorm
        ``||A^T (b - A x)||`` estimate (column-scaled problem).
    test1, test2
        LSQR's stopping quantities for the compatible and least-squares cases.
    anorm, acond
        Estimates of the Frobenius norm and condition of the column-scaled matrix.
    seconds
        Wall time of this attempt so far.
    """

    itn: int
    iter_lim: int
    r1norm: float
    arnorm: float
    test1: float
    test2: float
    anorm: float
    acond: float
    seconds: float


Callback = Callable[[IterationInfo], bool | None]
"""Called after every iteration; returning True asks the solver to checkpoint and stop."""


class ProgressBar:
    """A rich progress bar showing the residual norms, or nothing when disabled."""

    def __init__(self, enabled: bool, total: int, start: int = 0) -> None:
        self._progress = None
        self._task = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("LSQR"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[norms]}"),
            TimeElapsedColumn(),
        )
        self._task = self._progress.add_task("lsqr", total=total, completed=start, norms="")

    def __enter__(self) -> ProgressBar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, info: IterationInfo) -> None:
        """Advance to ``info.itn`` and show the norms and stopping quantities."""
        if self._progress is None or self._task is None:
            return
        norms = (
            f"|r|={info.r1norm:.4e} |A'r|={info.arnorm:.2e} "
            f"test1={info.test1:.1e} test2={info.test2:.1e}"
        )
        self._progress.update(self._task, completed=info.itn, norms=norms)
