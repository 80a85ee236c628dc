"""BAM images: the basic-angle harmonics recovered from the telemetry match the truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dpct.sim import BamJump, SimConfig, Simulator, mission_day
from dpct.sim._bam import PIXEL_AL_UAS

from .conftest import DAY, columns, concat

DAY_NS = 86_400 * 10**9


@pytest.fixture(scope="module")
def bam_day():
    """One day of BAM images only, 8000 images (1 per 10.8 s), with an injected jump."""
    jump_t = DAY * DAY_NS + 7 * 3600 * 10**9
    cfg = SimConfig(
        seed=21,
        scale=0.1,
        products=("bam_images",),
        anomalies=(BamJump(obmt_ns=jump_t, amplitude_uas=150.0),),
    )
    sim = Simulator(cfg)
    chunks = list(sim.chunks(mission_day(DAY)))
    return sim, chunks, jump_t


def _phases(tel: dict, truth: dict, samples) -> tuple[np.ndarray, np.ndarray]:
    """Least squares per profile with the true period and envelope (shared per field):
    y = B + E(x)(A + C cos θ + S sin θ), θ = 2π(x − x_c)/P, φ = atan2(S, C); the phase
    error propagates the per-sample variance y + RON²."""
    n = len(samples[0])
    y = np.asarray(samples.flatten().to_numpy(), dtype=np.float64).reshape(-1, n)
    x = np.arange(n)
    xc = (n - 1) / 2
    ph = np.empty(y.shape[0])
    err = np.empty(y.shape[0])
    for fov in (0, 1):
        rows = np.flatnonzero(tel["fov"] == fov)
        i0 = rows[0]
        env = np.exp(
            -0.5 * ((x - truth["envelope_centre_px"][i0]) / truth["envelope_sigma_px"][i0]) ** 2
        )
        th = 2 * np.pi * (x - xc) / truth["period_px"][i0]
        design = np.stack([np.ones(n), env, env * np.cos(th), env * np.sin(th)], axis=1)
        pinv = np.linalg.pinv(design)  # (4, n)
        coef = y[rows] @ pinv.T
        var = np.maximum(y[rows], 1) + tel["ron_e"][rows, None] ** 2
        c, s = coef[:, 2], coef[:, 3]
        g = np.stack([-s, c], axis=1) / (c * c + s * s)[:, None]
        # cov(C, S) = P diag(var) Pᵀ per row
        pp = pinv[2:]
        cov = np.einsum("in,rn,jn->rij", pp, var, pp)
        ph[rows] = np.arctan2(s, c)
        err[rows] = np.sqrt(np.einsum("ri,rij,rj->r", g, cov, g))
    return ph, err


def test_bav_harmonics_in_telemetry_match_truth(bam_day):
    sim, chunks, jump_t = bam_day
    tel = columns(concat(chunks, "products", "bam_images"))
    truth = columns(concat(chunks, "truth", "bam_truth"))
    samples = concat(chunks, "products", "bam_images").column("samples_e").combine_chunks()
    assert tel["obmt_ns"].size == 2 * 8000
    assert len(samples[0]) >= 1000
    phase, phase_err = _phases(tel, truth, samples)
    # fitted phases agree with the truth phases (χ², 0.1 %)
    dphi = np.angle(np.exp(1j * (phase - truth["phase_rad"])))
    chi2 = ((dphi / phase_err) ** 2).sum()
    assert chi2 < stats.chi2.isf(0.001, dphi.size)
    # BAV = shift(preceding) − shift(following), shift = φ P / 2π in µas
    shift = np.unwrap(phase) * truth["period_px"] * PIXEL_AL_UAS / (2 * np.pi)
    shift_err = phase_err * truth["period_px"] * PIXEL_AL_UAS / (2 * np.pi)
    p, f = tel["fov"] == 0, tel["fov"] == 1
    t = tel["obmt_ns"][p]
    bav = shift[p] - shift[f]
    bav -= np.round((bav - np.median(bav)) / (truth["period_px"][p] * PIXEL_AL_UAS)) * (
        truth["period_px"][p] * PIXEL_AL_UAS
    )
    sig = np.hypot(shift_err[p], shift_err[f])
    # model: harmonics k ≤ 8 in the heliotropic spin phase + quadratic drift + jumps
    omega = sim.spin_phase_rad(t)
    jumps = columns(concat(chunks, "truth", "bav_jumps"))
    assert jump_t in set(jumps["obmt_ns"].tolist())
    days = (t - t[0]) / DAY_NS
    cols = [np.ones_like(days), days, days**2]
    cols += [(t >= tj).astype(float) for tj in jumps["obmt_ns"]]
    n_fixed = len(cols)
    for k in range(1, 9):
        cols += [np.cos(k * omega), np.sin(k * omega)]
    design = np.stack(cols, axis=1) / sig[:, None]
    coef, *_ = np.linalg.lstsq(design, bav / sig, rcond=None)
    cov = np.linalg.inv(design.T @ design)
    resid = bav - (design * sig[:, None]) @ coef
    assert ((resid / sig) ** 2).mean() == pytest.approx(1.0, abs=0.1)
    model = columns(sim.static_truth()["bav_model"])
    true = np.stack([model["cos_uas"][1:9], model["sin_uas"][1:9]], axis=1).ravel()
    fit = coef[n_fixed:]
    err = np.sqrt(np.diag(cov)[n_fixed:])
    z = (fit - true) / err
    assert np.all(np.abs(z) < 4.5), z
    assert (z**2).sum() < stats.chi2.isf(0.001, z.size)
    # k = 8 (≈ 8 µas) is detected; the fit is sharp enough to matter
    amp8 = np.hypot(*fit[-2:])
    assert amp8 > 4 * err[-1]
    # the injected jump is recovered
    i_jump = n_fixed - len(jumps["obmt_ns"]) + list(jumps["obmt_ns"]).index(jump_t)
    assert coef[i_jump] == pytest.approx(150.0, abs=5 * np.sqrt(cov[i_jump, i_jump]))


def test_bam_truth_is_consistent(bam_day):
    sim, chunks, _ = bam_day
    truth = columns(concat(chunks, "truth", "bam_truth"))
    p, f = truth["fov"] == 0, truth["fov"] == 1
    assert np.allclose(truth["shift_uas"][p] - truth["shift_uas"][f], truth["bav_uas"][p])
    parts = truth["bav_harmonic_uas"] + truth["bav_slow_uas"] + truth["bav_jump_uas"]
    assert np.allclose(parts, truth["bav_uas"])
    assert np.allclose(sim.bav_uas(truth["obmt_ns"][p]), truth["bav_uas"][p], atol=1e-6)
    # about 1 mas, spin-synchronous
    assert 500 < np.ptp(truth["bav_harmonic_uas"]) < 5000
