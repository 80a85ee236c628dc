"""GSR rows: residuals equal the partials times the truth (to second order), plus noise."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from scipy import stats

from dpct.sim import GsrConfig, SimConfig, Simulator, Span

from .conftest import HOUR_NS, START, columns, concat


def _run(noise: bool):
    cfg = SimConfig(
        seed=31,
        scale=0.02,
        products=("af_windows", "gsr_observations"),
        gsr=GsrConfig(noise=noise, gamma_minus_one=0.01),
    )
    sim = Simulator(cfg)
    return sim, list(sim.chunks(Span(START, START + HOUR_NS // 2)))


@pytest.fixture(scope="module")
def noiseless():
    return _run(False)


@pytest.fixture(scope="module")
def noisy():
    return _run(True)


def _lists(table: pa.Table, name: str, width: int) -> np.ndarray:
    col = table.column(name).combine_chunks()
    assert np.all(np.diff(col.offsets.to_numpy()) == width)
    return col.flatten().to_numpy().reshape(-1, width)


def _model_uas(sim: Simulator, chunks: list) -> tuple[np.ndarray, dict, np.ndarray]:
    """A·x_true from the partials and the truth tables."""
    obs = concat(chunks, "products", "gsr_observations")
    g = columns(obs)
    stars = columns(concat(chunks, "truth", "stars"))
    order = {s: i for i, s in enumerate(stars["source_id"].tolist())}
    si = np.array([order[s] for s in g["source_id"].tolist()])
    delta = np.stack(
        [
            stars[k][si]
            for k in (
                "delta_ra_cosdec_uas",
                "delta_dec_uas",
                "delta_parallax_uas",
                "delta_pmra_uasyr",
                "delta_pmdec_uasyr",
            )
        ],
        axis=1,
    )
    astro = (_lists(obs, "astro_partials", 5) * delta).sum(-1)
    att = columns(concat(chunks, "truth", "gsr_attitude"))
    coeff = {j: i for i, j in enumerate(att["coeff_index"].tolist())}
    theta = np.stack([att["theta_x_uas"], att["theta_y_uas"], att["theta_z_uas"]], axis=1)
    ap = _lists(obs, "att_partials", 12).reshape(-1, 3, 4)
    idx = np.array([[coeff[j + k] for k in range(4)] for j in g["att_first_coeff"].tolist()])
    attitude = np.einsum("nak,nka->n", ap, theta[idx])
    inst = columns(sim.static_truth()["gsr_instrument"])
    value = np.zeros(inst["column"].max() + 1)
    value[inst["column"]] = inst["value_uas"]
    instr = (_lists(obs, "instr_partials", 6) * value[_lists(obs, "instr_cols", 6)]).sum(-1)
    gamma = g["gamma_partial_uas"] * sim.config.gsr.gamma_minus_one
    return astro + attitude + instr + gamma, g, gamma


def test_residuals_are_linear_in_the_truth(noiseless):
    sim, chunks = noiseless
    model, g, gamma = _model_uas(sim, chunks)
    assert g["al_residual_uas"].size > 300
    # second-order terms of ≈ 1 mas perturbations and float rounding: ≪ 0.01 µas
    assert np.max(np.abs(g["al_residual_uas"] - model)) < 0.01
    # every block matters (the test would see a wrong partial)
    assert np.std(g["al_residual_uas"]) > 500
    assert np.max(np.abs(gamma)) > 10


def test_residual_noise_matches_stated_errors(noisy):
    sim, chunks = noisy
    model, g, _ = _model_uas(sim, chunks)
    z = (g["al_residual_uas"] - model) / g["al_error_uas"]
    lo, hi = stats.chi2.ppf([0.0005, 0.9995], z.size)
    assert lo < (z**2).sum() < hi
    assert abs(z.mean()) < 4 / np.sqrt(z.size)
    # errors grow with magnitude and respect the floor
    assert g["al_error_uas"].min() >= sim.config.gsr.error_floor_uas


def test_row_format(noisy):
    sim, chunks = noisy
    obs = concat(chunks, "products", "gsr_observations")
    g = columns(obs)
    win = columns(concat(chunks, "products", "af_windows"))
    assert set(g["obs_id"].tolist()) <= set(win["window_id"].tolist())
    assert np.all(g["att_first_coeff"] == g["obmt_ns"] // sim.scanlaw.knot_ns)
    cols = _lists(obs, "instr_cols", 6)
    assert cols.min() >= 0 and cols.max() < 6 * 2 * 62
    assert np.all(np.isin(g["ccd_strip"], np.arange(1, 10)))
    # astrometric partials: ∂η/∂α* = sin ψ, ∂η/∂δ = cos ψ (up to 1/cos ζ ≤ 1 + 2·10⁻⁵)
    ap = _lists(obs, "astro_partials", 5)
    psi = g["scan_angle_rad"]
    assert np.allclose(ap[:, 0], np.sin(psi), atol=3e-5)
    assert np.allclose(ap[:, 1], np.cos(psi), atol=3e-5)


def test_scan_angle_against_astropy(noisy):
    """ψ is the position angle (astropy) of the scan direction Z × u at the star."""
    sim, chunks = noisy
    g = columns(concat(chunks, "products", "gsr_observations"))
    stars = columns(concat(chunks, "truth", "stars"))
    order = {s: i for i, s in enumerate(stars["source_id"].tolist())}
    si = np.array([order[s] for s in g["source_id"].tolist()])[:200]
    star = SkyCoord(stars["ra_deg"][si] * u.deg, stars["dec_deg"][si] * u.deg)
    zaxis = sim.attitude(g["obmt_ns"][:200])["reference_matrix"][:, 2, :]
    uvec = star.cartesian.xyz.value.T
    w = np.cross(zaxis, uvec)
    ahead = uvec + 1e-6 * w / np.linalg.norm(w, axis=-1, keepdims=True)
    other = SkyCoord(x=ahead[:, 0], y=ahead[:, 1], z=ahead[:, 2], representation_type="cartesian")
    pa_rad = star.position_angle(SkyCoord(other.spherical.lon, other.spherical.lat)).rad
    d = np.angle(np.exp(1j * (pa_rad - g["scan_angle_rad"][:200])))
    assert np.max(np.abs(d)) < 1e-4
