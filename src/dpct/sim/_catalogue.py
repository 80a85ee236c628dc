"""Star catalogue with truth, generated per sky pixel so any part of the sky is cheap.

The sky is cut into iso-latitude pixels of 0.5° × ≈0.5° (360 declination bands; band i
has round(720·cos δ) pixels of equal area). A pixel's stars come from the pixel's own seed
stream: their number is Poisson with mean ∝ the density model times the pixel area (drawn for
blocks of 4096 pixels at once, so empty pixels cost nothing), and their positions are
uniform inside the pixel. The simulator regenerates only the pixels
near the current scan circle (≈ 1 % of the sky per chunk) instead of holding 4·10⁷ stars;
:func:`write_catalogue` writes the very same stars to Parquet for the pipelines.

Density model (stars per steradian, relative): ρ = 1 + 8 e^{−|b|/8°} (1 + 2 e^{−(l² + b²)
/ 2(20°)²}) — a disk denser toward the Galactic plane and a bulge toward the centre.
Magnitudes follow Gaia-like cumulative counts log N(<G) (scaled to ``n_stars``), colours
redden toward the plane, parallaxes fall with magnitude, proper motions come from
tangential velocities of 30 km/s rms. The reference catalogue a GSR solver starts from
is truth minus ``delta_*`` (rms ``gsr.reference_error_mas``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.special import ndtri

from dpct.mission.constants import DEG, KM_S_PER_MAS_YR_KPC
from dpct.mission.schemas import SCHEMAS
from dpct.sim._config import SimConfig
from dpct.sim._rng import Stream, generator

CATALOGUE_VERSION = 1
PIXEL_DEG = 0.5
#: Largest angular distance of a pixel's point from the pixel centre, rad (with margin).
PIXEL_RADIUS_RAD = 0.40 * DEG
_SOURCE_SHIFT = 20  # source_id = pixel << 20 | index in pixel

#: ICRS → Galactic rotation (Hipparcos definition, as in astropy).
ICRS_TO_GAL = np.array(
    [
        [-0.0548755604162154, -0.8734370902348850, -0.4838350155487132],
        [0.4941094278755837, -0.4448296299600112, 0.7469822444972189],
        [-0.8676661490190047, -0.1980763734312015, 0.4559837761750669],
    ]
)
# Gaia-like cumulative star counts: G → log10 N(<G) on the whole sky (≈1.8·10⁹ at 20.7).
_LOGN_G = np.array([2.0, 3.0, 6.0, 9.0, 12.0, 15.0, 17.0, 19.0, 20.0, 20.7, 21.5])
_LOGN = np.array([1.7, 2.2, 3.7, 5.2, 6.5, 7.65, 8.15, 8.76, 9.0, 9.26, 9.5])
_NDRAW = 12


def unit_vectors(ra_rad: np.ndarray, dec_rad: np.ndarray) -> np.ndarray:
    """ICRS unit vectors (n, 3) of right ascensions and declinations in rad."""
    cd = np.cos(dec_rad)
    return np.stack([cd * np.cos(ra_rad), cd * np.sin(ra_rad), np.sin(dec_rad)], axis=-1)


def galactic_lb(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Galactic longitude (in (−π, π]) and latitude of ICRS unit vectors, rad."""
    g = u @ ICRS_TO_GAL.T
    return np.arctan2(g[..., 1], g[..., 0]), np.arcsin(np.clip(g[..., 2], -1.0, 1.0))


def density(l_rad: np.ndarray, b_rad: np.ndarray) -> np.ndarray:
    """Relative star density per steradian at Galactic (l, b)."""
    ab = np.abs(b_rad) / DEG
    bulge = np.exp(-((l_rad / DEG) ** 2 + (b_rad / DEG) ** 2) / (2 * 20.0**2))
    return 1.0 + 8.0 * np.exp(-ab / 8.0) * (1.0 + 2.0 * bulge)


@dataclass(frozen=True)
class SkyPixels:
    """The iso-latitude pixelisation and the per-pixel expected star counts (scale 1)."""

    ra_lo: np.ndarray
    ra_width: np.ndarray
    sin_lo: np.ndarray
    sin_hi: np.ndarray
    centre: np.ndarray  # (n, 3) ICRS unit vectors
    weight: np.ndarray  # density × area / Σ(density × area)

    @property
    def size(self) -> int:
        return int(self.ra_lo.size)


@lru_cache(maxsize=1)
def sky_pixels() -> SkyPixels:
    """Build (once per process) the pixelisation; ≈ 1.65·10⁵ pixels."""
    n_bands = round(180 / PIXEL_DEG)
    dec_lo = -90.0 + PIXEL_DEG * np.arange(n_bands)
    n_ra = np.maximum(1, np.rint((360 / PIXEL_DEG) * np.cos((dec_lo + PIXEL_DEG / 2) * DEG)))
    n_ra = n_ra.astype(np.int64)
    band = np.repeat(np.arange(n_bands), n_ra)
    start = np.concatenate([[0], np.cumsum(n_ra)[:-1]])
    j = np.arange(band.size) - start[band]
    width = 2 * np.pi / n_ra[band]
    ra_lo = j * width
    sin_lo = np.sin(dec_lo[band] * DEG)
    sin_hi = np.sin((dec_lo[band] + PIXEL_DEG) * DEG)
    ra_c = ra_lo + width / 2
    dec_c = np.arcsin((sin_lo + sin_hi) / 2)
    centre = unit_vectors(ra_c, dec_c)
    area = width * (sin_hi - sin_lo)
    lg, bg = galactic_lb(centre)
    w = density(lg, bg) * area
    return SkyPixels(ra_lo, width, sin_lo, sin_hi, np.ascontiguousarray(centre), w / w.sum())


def _g_from_uniform(r: np.ndarray, g_min: float, g_max: float) -> np.ndarray:
    n_lo, n_hi = 10 ** np.interp([g_min, g_max], _LOGN_G, _LOGN)
    return np.interp(np.log10(n_lo + r * (n_hi - n_lo)), _LOGN, _LOGN_G)


_COUNT_BLOCK = 4096


@lru_cache(maxsize=512)
def _count_block(seed: int, mean_stars: float, block: int) -> np.ndarray:
    w = sky_pixels().weight[block * _COUNT_BLOCK : (block + 1) * _COUNT_BLOCK]
    return generator(seed, Stream.CATALOGUE_COUNTS, block).poisson(w * mean_stars)


def pixel_counts(config: SimConfig, pixel_ids: np.ndarray) -> np.ndarray:
    """Number of stars in each pixel (Poisson, drawn per block of 4096 pixels)."""
    ids = np.asarray(pixel_ids, dtype=np.int64)
    out = np.empty(ids.size, dtype=np.int64)
    mean = float(config.catalogue.n_stars * config.scale)
    blocks = ids // _COUNT_BLOCK
    for b in np.unique(blocks).tolist():
        sel = blocks == b
        out[sel] = _count_block(config.seed, mean, b)[ids[sel] - b * _COUNT_BLOCK]
    return out


def stars_in_pixels(config: SimConfig, pixel_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Generate the true stars of the given sky pixels.

    Parameters
    ----------
    config
        Seed, ``scale``, catalogue and GSR reference-error settings.
    pixel_ids
        Pixel indices (any order; output follows it).

    Returns
    -------
    dict of arrays
        ``source_id``, ``ra`` and ``dec`` (rad), ``u`` (n, 3) ICRS unit vectors,
        ``parallax_mas``, ``pmra_masyr`` (μ_α*), ``pmdec_masyr``, ``g_mag``, ``bp_rp_mag``,
        ``b_gal`` (rad), ``primary`` (bool, G ≤ gsr.g_max_mag) and ``delta`` (n, 5):
        truth − reference for (α*, δ, ϖ) in µas and (μ_α*, μ_δ) in µas/yr.
    """
    pixel_ids = np.asarray(pixel_ids, dtype=np.int64)
    counts = pixel_counts(config, pixel_ids)
    draws, owners, index = [], [], []
    nz = counts > 0
    for p, n in zip(pixel_ids[nz].tolist(), counts[nz].tolist(), strict=True):
        rng = generator(config.seed, Stream.CATALOGUE, p)
        draws.append(rng.random((n, _NDRAW)))
        owners.append(np.full(n, p, dtype=np.int64))
        index.append(np.arange(n, dtype=np.int64))
    px = sky_pixels()
    if not draws:
        r = np.zeros((0, _NDRAW))
        owner = np.zeros(0, dtype=np.int64)
        idx = np.zeros(0, dtype=np.int64)
    else:
        r = np.concatenate(draws)
        owner = np.concatenate(owners)
        idx = np.concatenate(index)
    z = ndtri(np.clip(r, 1e-16, 1 - 1e-16))
    ra = px.ra_lo[owner] + r[:, 0] * px.ra_width[owner]
    dec = np.arcsin(px.sin_lo[owner] + r[:, 1] * (px.sin_hi[owner] - px.sin_lo[owner]))
    u = unit_vectors(ra, dec)
    _, b = galactic_lb(u)
    cat = config.catalogue
    g = _g_from_uniform(r[:, 2], cat.g_min_mag, cat.g_max_mag).astype(np.float32)
    colour = 1.0 + 0.8 * np.exp(-np.abs(b) / (5 * DEG)) + 0.4 * z[:, 3]
    colour = np.clip(colour, -0.6, 5.0).astype(np.float32)
    plx = 3.0 * 10 ** (-0.16 * (g.astype(np.float64) - 10.0)) * np.exp(0.6 * z[:, 4])
    v_rms = 30.0 / KM_S_PER_MAS_YR_KPC
    err = config.gsr.reference_error_mas * 1e3
    return {
        "source_id": (owner << _SOURCE_SHIFT) | idx,
        "ra": ra,
        "dec": dec,
        "u": u,
        "parallax_mas": plx,
        "pmra_masyr": v_rms * plx * z[:, 5],
        "pmdec_masyr": v_rms * plx * z[:, 6],
        "g_mag": g.astype(np.float64),
        "bp_rp_mag": colour.astype(np.float64),
        "b_gal": b,
        "primary": g <= config.gsr.g_max_mag,
        "delta": err * z[:, 7:12],
    }


def stars_table(stars: dict[str, np.ndarray], name: str = "catalogue") -> pa.Table:
    """The ``catalogue`` (or per-chunk ``stars``) truth table of generated stars."""
    d = stars["delta"]
    cols = {
        "source_id": stars["source_id"],
        "ra_deg": np.rad2deg(stars["ra"]),
        "dec_deg": np.rad2deg(stars["dec"]),
        "parallax_mas": stars["parallax_mas"],
        "pmra_masyr": stars["pmra_masyr"],
        "pmdec_masyr": stars["pmdec_masyr"],
        "g_mag": stars["g_mag"].astype(np.float32),
        "bp_rp_mag": stars["bp_rp_mag"].astype(np.float32),
        "primary": stars["primary"],
        "delta_ra_cosdec_uas": d[:, 0],
        "delta_dec_uas": d[:, 1],
        "delta_parallax_uas": d[:, 2],
        "delta_pmra_uasyr": d[:, 3],
        "delta_pmdec_uasyr": d[:, 4],
    }
    return pa.Table.from_pydict(cols, schema=SCHEMAS[name])


def generate_catalogue(config: SimConfig, pixel_ids: np.ndarray | None = None) -> pa.Table:
    """The true catalogue (all pixels, or ``pixel_ids``) as one in-memory table.

    For the whole sky at scale 1 (4·10⁷ stars, ≈ 2.5 GB) use :func:`write_catalogue`.
    """
    ids = np.arange(sky_pixels().size) if pixel_ids is None else np.asarray(pixel_ids)
    return stars_table(stars_in_pixels(config, ids))


def catalogue_path(config: SimConfig, folder: str | os.PathLike[str]) -> Path:
    """Where :func:`write_catalogue` caches the catalogue of ``config`` in ``folder``."""
    c = config.catalogue
    name = (
        f"catalogue_v{CATALOGUE_VERSION}_seed{config.seed}_scale{config.scale:g}"
        f"_n{c.n_stars}_g{c.g_min_mag:g}-{c.g_max_mag:g}"
        f"_gsr{config.gsr.g_max_mag:g}-{config.gsr.reference_error_mas:g}.parquet"
    )
    return Path(folder) / name


def write_catalogue(
    config: SimConfig, folder: str | os.PathLike[str], *, pixels_per_group: int = 2048
) -> Path:
    """Generate the whole-sky true catalogue once and cache it as Parquet in ``folder``.

    The file name encodes every setting the stars depend on; an existing file is reused.
    Writing streams one row group per ``pixels_per_group`` pixels (≈ 5·10⁵ stars at scale
    1), so memory stays small; the file appears atomically (written, then renamed).

    Returns
    -------
    pathlib.Path
        The Parquet file.
    """
    path = catalogue_path(config, folder)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    n = sky_pixels().size
    schema = SCHEMAS["catalogue"].with_metadata(
        {**SCHEMAS["catalogue"].metadata, b"dpct.sim.config": config.model_dump_json().encode()}
    )
    with pq.ParquetWriter(tmp, schema) as writer:
        for lo in range(0, n, pixels_per_group):
            ids = np.arange(lo, min(n, lo + pixels_per_group))
            writer.write_table(stars_table(stars_in_pixels(config, ids)).cast(schema))
    tmp.replace(path)
    return path


def read_catalogue(path: str | os.PathLike[str], columns: list[str] | None = None) -> pa.Table:
    """Read a cached catalogue (or some of its columns)."""
    return pq.read_table(path, columns=columns)


def reference_catalogue(stars: pa.Table) -> pa.Table:
    """The reference positions of ``stars`` (a ``stars``/``catalogue`` truth table): truth
    minus the ``delta_*`` offsets, one row per star. The reference is what the mission
    knows before the solve, so it is what a delivery carries for the GSR frame."""
    from dpct.mission.schemas import SCHEMAS

    source = stars.column("source_id").to_numpy()
    _, first = np.unique(source, return_index=True)  # chunks repeat the stars they share
    dec = np.deg2rad(stars.column("dec_deg").to_numpy()[first])
    mas = np.pi / (180 * 3600e3)
    d_ra = stars.column("delta_ra_cosdec_uas").to_numpy()[first] / 1e3 * mas / np.cos(dec)
    d_dec = stars.column("delta_dec_uas").to_numpy()[first] / 1e3 * mas
    ra = np.deg2rad(stars.column("ra_deg").to_numpy()[first])
    return pa.Table.from_pydict(
        {
            "source_id": source[first].astype(np.int64),
            "ra_deg": np.rad2deg(ra - d_ra),
            "dec_deg": np.rad2deg(dec - d_dec),
        },
        schema=SCHEMAS["gsr_reference_catalogue"],
    )
