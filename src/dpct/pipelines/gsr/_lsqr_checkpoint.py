"""Saving LSQR's state while it runs, and resuming from it: the checkpoint driver.

The state is saved every so many iterations or seconds, when LSQR finishes and when the
caller interrupts it; a file written for another system or other settings is refused
(``_checkpoint.read_checkpoint``) rather than resumed. What is saved is an
:class:`~dpct.pipelines.gsr._lsqr_iteration.LsqrState` plus the operator's pending u,
so a resumed solve continues the same sequence of iterates, bit for bit, on any device.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from dpct.pipelines.gsr._checkpoint import read_checkpoint, write_checkpoint
from dpct.pipelines.gsr._lsqr_iteration import SCALARS, LsqrState, RowPass
from dpct.pipelines.gsr._precondition import Preconditioner
from dpct.pipelines.gsr._system import GsrSystem


def solve_fingerprint(
    system: GsrSystem,
    *,
    damp: float,
    preconditioner: Preconditioner,
    calc_var: bool,
    x0: NDArray[np.float64] | None,
) -> str:
    """Fingerprint of a solve: the system and every setting that shapes the iterates.

    Stopping tolerances and the iteration limit are left out: a retry may allow more
    iterations and still continue the same sequence of iterates.
    """
    h = hashlib.blake2b(digest_size=20)
    h.update(system.fingerprint().encode())
    h.update(repr((float(damp), bool(calc_var))).encode())
    h.update(preconditioner.fingerprint_bytes())
    if x0 is not None:
        h.update(memoryview(np.ascontiguousarray(x0, np.float64)).cast("B"))
    return h.hexdigest()


class LsqrCheckpoint:
    """One solve's checkpoint file: restore once, then save as the iteration goes.

    Parameters
    ----------
    path
        The file (keyed by the job, see :func:`~dpct.pipelines.gsr.checkpoint_path`).
    fingerprint
        :func:`solve_fingerprint` of this solve; a file with another one is refused.
    op
        The row operator, which holds LSQR's pending u.
    every, seconds
        Save every ``every`` iterations, or when ``seconds`` have passed since the last
        save, whichever comes first (``math.inf``: by iteration count only).
    """

    def __init__(
        self, path: Path, fingerprint: str, op: RowPass, *, every: int, seconds: float = math.inf
    ) -> None:
        self.path = Path(path)
        self._fingerprint = fingerprint
        self._op = op
        self._every = every
        self._seconds = seconds
        self._saved: tuple[int, int] | None = None  # (itn, istop) of the file's state
        self._t_saved = time.monotonic()

    def restore(self, *, calc_var: bool) -> LsqrState | None:
        """The saved state (the operator's u set from it), or None when there is none.

        Raises
        ------
        CheckpointMismatchError
            The file belongs to another problem or other settings, or cannot be read.
        """
        saved = read_checkpoint(self.path, self._fingerprint)
        self._t_saved = time.monotonic()
        if saved is None:
            return None
        arrays, scalars = saved
        self._op.set_u(arrays["u_obs"], arrays["u_con"])
        state = LsqrState(
            y=arrays["y"].copy(),
            v=arrays["v"].copy(),
            w=arrays["w"].copy(),
            var=arrays["var"].copy() if calc_var else None,
            scalars=scalars,
        )
        self._saved = (state.itn, state.istop)
        return state

    def save(self, state: LsqrState) -> None:
        """Write ``state`` now (atomically)."""
        u_obs, u_con = self._op.get_u()
        arrays = {"y": state.y, "v": state.v, "w": state.w, "u_obs": u_obs, "u_con": u_con}
        if state.var is not None:
            arrays["var"] = state.var
        scalars = {name: state.scalars[name] for name in SCALARS}
        write_checkpoint(self.path, self._fingerprint, arrays, scalars)
        self._saved = (state.itn, state.istop)
        self._t_saved = time.monotonic()

    def after_iteration(self, state: LsqrState) -> None:
        """Save when LSQR has finished, every ``every`` iterations, or when it is time."""
        if (
            state.finished
            or state.itn % self._every == 0
            or time.monotonic() - self._t_saved >= self._seconds
        ):
            self.save(state)

    def finish(self, state: LsqrState) -> None:
        """Save the final state unless the file holds it already (then solving again
        returns at once; an interrupted solve resumes from here)."""
        if self._saved != (state.itn, state.istop):
            self.save(state)
