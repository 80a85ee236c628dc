"""OBMT ↔ astropy ``Time`` at the edges (the simulator itself works in OBMT ns, int64).

OBMT is the on-board mission timeline in ns. The simulator's clock model is the linear
relation of [S18][S65], TCB = J2015.0 + (OBMT − 1717.6256 rev)/(1461 rev/yr), taken as
exact (1 rev = 6 h, so OBMT runs at one TCB day per day).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dpct.mission.constants import DAY_NS, OBMT_ZERO_JD_TCB

if TYPE_CHECKING:  # astropy is imported on use: worker processes never need it
    from astropy.time import Time


def obmt_to_time(obmt_ns: np.ndarray | int) -> Time:
    """OBMT (ns) → astropy ``Time`` in the TCB scale."""
    from astropy.time import Time

    t = np.asarray(obmt_ns, dtype=np.int64)
    days, rem = np.divmod(t, DAY_NS)
    return Time(OBMT_ZERO_JD_TCB + days, rem / DAY_NS, format="jd", scale="tcb")


def time_to_obmt(time: Time) -> np.ndarray:
    """astropy ``Time`` (any scale) → OBMT ns (int64), rounded to the nearest ns."""
    tcb = time.tcb
    d1 = np.asarray(tcb.jd1, dtype=np.float64) - OBMT_ZERO_JD_TCB
    d2 = np.asarray(tcb.jd2, dtype=np.float64)
    whole = np.floor(d1) + np.floor(d2)
    frac = (d1 - np.floor(d1)) + (d2 - np.floor(d2))
    return whole.astype(np.int64) * DAY_NS + np.rint(frac * DAY_NS).astype(np.int64)
