"""Numba kernels against their NumPy reference versions (stated tolerances)."""

from __future__ import annotations

import math

import numpy as np

from dpct.mission.constants import OBLIQUITY_J2000_ARCSEC, UAS
from dpct.mission.focalplane import instrument_partials
from dpct.sim import DAY_NS
from dpct.sim._anomalies import collect_events
from dpct.sim._bam import bav_rad
from dpct.sim._transits import instrument_offset

from .conftest import START


def test_nominal_attitude_kernel_matches_closed_form(small_sim):
    """Hermite-interpolated frame × spin vs the NSL formulae evaluated directly: 1e-12 rad."""
    t = START + np.arange(0, 2 * DAY_NS, 3_777 * 10**9, dtype=np.int64)
    m = small_sim.attitude(t)["nominal_matrix"]
    a = small_sim.scanlaw.nominal.angles(t)
    lam, nu, om = a["lam"], a["nu"], a["omega"]
    xi = math.pi / 4
    s = np.stack([np.cos(lam), np.sin(lam), 0 * lam], -1)
    c = np.stack([-np.cos(nu) * np.sin(lam), np.cos(nu) * np.cos(lam), np.sin(nu)], -1)
    z = math.cos(xi) * s + math.sin(xi) * c
    x0 = math.sin(xi) * s - math.cos(xi) * c
    x = np.cos(om)[:, None] * x0 + np.sin(om)[:, None] * np.cross(z, x0)
    eps = OBLIQUITY_J2000_ARCSEC * math.pi / 648_000
    rot = np.array(
        [[1, 0, 0], [0, math.cos(eps), -math.sin(eps)], [0, math.sin(eps), math.cos(eps)]]
    )
    assert np.max(np.abs(x @ rot.T - m[:, 0])) < 1e-12
    assert np.max(np.abs(z @ rot.T - m[:, 2])) < 1e-12


def test_bav_kernel_matches_reference(small_sim):
    cfg = small_sim.config
    t0, t1 = START, START + DAY_NS
    events = collect_events(cfg.event_rates, cfg.anomalies, t0, t1)
    t = np.sort(np.random.default_rng(2).integers(t0, t1, 500))
    om = small_sim.spin_phase_rad(t)
    ref = small_sim.basic_angle.parts(t, om, events).total
    params = small_sim.basic_angle.kernel_params(t0, events)
    fast = np.array([bav_rad((ti - t0) / 1e9, o, params) for ti, o in zip(t, om, strict=True)])
    assert np.max(np.abs(fast / UAS - ref)) < 1e-6  # µas


def test_calibration_kernel_matches_partials(small_sim):
    cal = small_sim.calibration
    rng = np.random.default_rng(4)
    mu, col, g = rng.uniform(14, 1979, 200), rng.uniform(-0.5, 4, 200), rng.uniform(3, 21, 200)
    fov, ccd = rng.integers(0, 2, 200), rng.integers(0, 62, 200)
    ref = (cal[fov, ccd] * instrument_partials(mu, col, g)).sum(-1)
    fast = np.array(
        [
            instrument_offset(cal, f, c, m, co, gg)
            for f, c, m, co, gg in zip(fov, ccd, mu, col, g, strict=True)
        ]
    )
    assert np.max(np.abs(fast - ref)) < 1e-18
