"""Shared simulations for the simulator tests (small scale, a few hours of OBMT)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from dpct.sim import DAY_NS, SimConfig, Simulator, Span

DAY = 700
START = DAY * DAY_NS
HOUR_NS = 3600 * 10**9


def concat(chunks: list, kind: str, name: str) -> pa.Table:
    """Concatenate one table over chunks (``kind`` is "products" or "truth")."""
    return pa.concat_tables([getattr(c, kind)[name] for c in chunks])


def columns(table: pa.Table) -> dict[str, np.ndarray]:
    """A table's columns as NumPy arrays (list columns stay Arrow)."""
    out = {}
    for name in table.column_names:
        col = table.column(name)
        out[name] = col if pa.types.is_list(col.type) else col.to_numpy()
    return out


@pytest.fixture(scope="session")
def small_config() -> SimConfig:
    return SimConfig(seed=11, scale=0.01)


@pytest.fixture(scope="session")
def small_sim(small_config: SimConfig) -> Simulator:
    return Simulator(small_config)


@pytest.fixture(scope="session")
def small_run(small_sim: Simulator) -> list:
    """Two hours and a quarter of a small-scale mission: ≈ 3·10⁴ AF windows."""
    return list(small_sim.chunks(Span(START, START + 9 * HOUR_NS // 4)))
