"""Seed streams: one independent ``numpy.random.Generator`` per (seed, stream, key).

Every random quantity is drawn from a generator named by what it is for (a sky pixel's
stars, a chunk's noise, a day's events), so results do not depend on which chunks were
simulated before, on the span asked for, or on the number of worker processes.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """Independent random streams; values are part of the seed and must never change."""

    CATALOGUE = 1
    INSTRUMENT = 2
    ATTITUDE_ERROR = 3
    EVENTS = 4
    AF_NOISE = 5
    BAM_NOISE = 6
    GSR_NOISE = 7
    HK_NOISE = 8
    CATALOGUE_COUNTS = 9


def generator(seed: int, stream: Stream, *key: int) -> np.random.Generator:
    """Return the generator for ``(seed, stream, *key)``.

    Parameters
    ----------
    seed
        The simulation seed (non-negative).
    stream
        What the numbers are for.
    key
        Further non-negative integers (pixel index, chunk index, day, ...).
    """
    ss = np.random.SeedSequence(entropy=seed, spawn_key=(int(stream), *map(int, key)))
    return np.random.Generator(np.random.PCG64(ss))
