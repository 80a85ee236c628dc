"""Star catalogue: determinism, density toward the Galactic plane (astropy), caching."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord

from dpct.sim import SimConfig, catalogue_path, generate_catalogue, read_catalogue, write_catalogue
from dpct.sim._catalogue import ICRS_TO_GAL, pixel_counts, sky_pixels

from .conftest import columns


def test_pixels_cover_the_sky_once():
    px = sky_pixels()
    area = px.ra_width * (px.sin_hi - px.sin_lo)
    assert area.sum() == pytest.approx(4 * np.pi, rel=1e-12)
    assert 1.5e5 < px.size < 1.8e5
    assert px.weight.sum() == pytest.approx(1.0)


def test_galactic_rotation_matches_astropy():
    gal = SkyCoord(l=[0, 90, 33, 250] * u.deg, b=[0, 0, 60, -20] * u.deg, frame="galactic")
    v_icrs = gal.icrs.cartesian.xyz.value.T
    # Hipparcos matrix vs astropy's FK5-based Galactic frame: agree to ≈ 0.1 µrad
    assert np.allclose(v_icrs @ ICRS_TO_GAL.T, gal.cartesian.xyz.value.T, atol=5e-7)


def test_stars_are_deterministic_and_seeded():
    ids = np.arange(40_000, 40_050)
    a = generate_catalogue(SimConfig(seed=3, scale=0.05), ids)
    b = generate_catalogue(SimConfig(seed=3, scale=0.05), ids[::-1])
    c = generate_catalogue(SimConfig(seed=4, scale=0.05), ids)
    assert a.sort_by("source_id").equals(b.sort_by("source_id"))
    assert not a.column("ra_deg").equals(c.column("ra_deg"))


def test_density_toward_the_galactic_plane_and_counts():
    """Stars in a random tenth of the sky: latitudes from astropy; counts Poisson."""
    cfg = SimConfig(seed=8, scale=0.005)
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(sky_pixels().size, sky_pixels().size // 10, replace=False))
    cat = columns(generate_catalogue(cfg, ids))
    expected = sky_pixels().weight[ids].sum() * cfg.catalogue.n_stars * cfg.scale
    assert abs(cat["source_id"].size - expected) < 5 * np.sqrt(expected)
    assert cat["source_id"].size == pixel_counts(cfg, ids).sum()
    b = SkyCoord(cat["ra_deg"] * u.deg, cat["dec_deg"] * u.deg).galactic.b.deg

    # stars per steradian in |b| < 5° vs |b| > 40°
    def per_sr(lo: float, hi: float) -> float:
        n = ((np.abs(b) >= lo) & (np.abs(b) < hi)).sum()
        return n / (4 * np.pi * (np.sin(np.radians(hi)) - np.sin(np.radians(lo))))

    assert per_sr(0, 5) > 4 * per_sr(40, 90)
    g = cat["g_mag"]
    assert g.min() >= cfg.catalogue.g_min_mag and g.max() <= cfg.catalogue.g_max_mag
    # Gaia-like counts: N(<19)/N(<20.7) ≈ 10^(8.76 − 9.26)
    assert (g < 19).mean() == pytest.approx(10 ** (8.76 - 9.26), rel=0.05)
    assert np.all(cat["parallax_mas"] > 0)
    assert np.all(cat["primary"] == (g <= cfg.gsr.g_max_mag))


def test_write_catalogue_caches(tmp_path):
    cfg = SimConfig(seed=9, scale=2e-4)
    path = write_catalogue(cfg, tmp_path)
    assert path == catalogue_path(cfg, tmp_path)
    mtime = path.stat().st_mtime_ns
    assert write_catalogue(cfg, tmp_path).stat().st_mtime_ns == mtime  # reused
    table = read_catalogue(path)
    assert table.num_rows == pixel_counts(cfg, np.arange(sky_pixels().size)).sum()
    ids = np.array([77_777, 123_456])
    part = generate_catalogue(cfg, ids).column("source_id").to_pylist()
    assert set(part) <= set(table.column("source_id").to_pylist())
