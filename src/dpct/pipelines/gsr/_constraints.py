"""Constraint equations that remove the GSR's rank deficiency.

Along-scan observations are unchanged when the whole sphere is rotated (3 directions)
or spun (3 more, in proper motion) and the attitude follows, and when a constant
attitude rotation is traded against the instrument's along-scan offsets and their
across-scan slopes (3 more with the usual instrument models). Nine equations fix them:
no net rotation and no net spin of the stars with respect to the reference catalogue,
and zero mean attitude correction per axis.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from dpct.pipelines.gsr._system import N_ASTRO, N_AXES, Constraints, UnknownLayout


def frame_constraints(
    ra: ArrayLike, dec: ArrayLike, layout: UnknownLayout, weight: float = 1.0
) -> Constraints:
    """No net rotation (3 rows) and no net spin (3 rows) of the stars' corrections.

    A rotation ``omega`` (mas) of the frame moves star ``s`` by
    ``d(ra*) = omega . e_dec``, ``d(dec) = -omega . e_ra``, where ``e_ra``, ``e_dec`` are
    the unit vectors towards increasing ra and dec; a spin does the same to the proper
    motions. The rows are ``sum_s (e_dec d(ra*) - e_ra d(dec)) = 0`` per axis: the
    least-squares rotation of the corrections is zero.

    Parameters
    ----------
    ra, dec
        Reference positions of the stars (radians), in star order.
    layout
        Unknown numbering.
    weight
        Multiplies every row; pick it so the rows weigh like the data (``solve`` scales
        columns, so only the rows' relative size matters).
    """
    ra = np.asarray(ra, np.float64)
    dec = np.asarray(dec, np.float64)
    sa, ca, sd, cd = np.sin(ra), np.cos(ra), np.sin(dec), np.cos(dec)
    e_ra = np.stack([-sa, ca, np.zeros_like(ra)], axis=1)
    e_dec = np.stack([-sd * ca, -sd * sa, cd], axis=1)
    base = N_ASTRO * np.arange(layout.n_stars)
    rows = []
    names = []
    for kind, off in (("rotation", 0), ("spin", 3)):
        for k, axis in enumerate("xyz"):
            cols = np.concatenate([base + off, base + off + 1])
            vals = weight * np.concatenate([e_dec[:, k], -e_ra[:, k]])
            rows.append((cols, vals))
            names.append(f"frame {kind} {axis}")
    return Constraints.from_rows(rows, names=tuple(names))


def attitude_constraints(layout: UnknownLayout, weight: float = 1.0) -> Constraints:
    """Zero mean attitude correction per axis (3 rows).

    A constant attitude rotation about the spin axis shifts every along-scan
    observation like a common instrument offset, and constant rotations about the
    other two axes like across-scan slopes of those offsets; fixing the mean attitude
    correction leaves them to the instrument.
    """
    rows = []
    for axis in range(N_AXES):
        cols = layout.att_offset + N_AXES * np.arange(layout.n_att) + axis
        rows.append((cols, np.full(layout.n_att, weight)))
    return Constraints.from_rows(
        rows, names=("attitude mean x", "attitude mean y", "attitude mean z")
    )
