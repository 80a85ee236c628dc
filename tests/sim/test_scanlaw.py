"""Scanning law and transit geometry against independent geometry from astropy."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest
from astropy import units as u
from astropy.coordinates import (
    BarycentricMeanEcliptic,
    Distance,
    GeocentricMeanEcliptic,
    SkyCoord,
    get_body_barycentric,
    get_sun,
)
from scipy.spatial.transform import Rotation

from dpct.mission.constants import (
    AC_CENTRE_PX,
    BASIC_ANGLE_RAD,
    PIXEL_AC_MAS,
    ROW_PITCH_ARCSEC,
    SPIN_RATE_ARCSEC_S,
)
from dpct.sim import (
    DAY_NS,
    INSTRUMENT_TERMS,
    PIXEL_AL_MAS,
    STRIP_ETA_RAD,
    obmt_to_time,
    time_to_obmt,
)

from .conftest import START, columns, concat

ARCSEC = np.pi / 648_000
MAS = ARCSEC / 1e3


def _unit(c: SkyCoord) -> np.ndarray:
    return np.stack(
        [
            np.cos(c.dec.rad) * np.cos(c.ra.rad),
            np.cos(c.dec.rad) * np.sin(c.ra.rad),
            np.sin(c.dec.rad),
        ],
        axis=-1,
    )


def test_obmt_time_round_trip():
    t = np.array([0, START, START + 123_456_789_012], dtype=np.int64)
    back = time_to_obmt(obmt_to_time(t))
    assert np.all(np.abs(back - t) <= 1)
    # the sheet's relation: OBMT 1717.6256 rev is J2015.0 (TCB)
    j2015 = obmt_to_time(int(1717.6256 * 21_600 * 10**9))
    assert abs(j2015.tcb.jyear - 2015.0) < 1e-9


def test_spin_axis_is_45_deg_from_the_sun(small_sim):
    t = START + np.linspace(0, 130 * DAY_NS, 60).astype(np.int64)
    z = small_sim.attitude(t)["nominal_matrix"][:, 2, :]
    sun = _unit(get_sun(obmt_to_time(t)))  # GCRS axes are ICRS axes
    angle = np.degrees(np.arccos(np.clip((z * sun).sum(-1), -1, 1)))
    assert np.max(np.abs(angle - 45.0)) < 0.02  # low-precision Sun: ±0.01°


def test_precession_period_is_63_days(small_sim):
    """63 days on average over the year: the NSL precession speed is tied to the Sun's
    motion, so the period is measured per 360° of solar longitude (from astropy)."""
    t = START + np.arange(0, 130 * DAY_NS, DAY_NS // 8, dtype=np.int64)
    z = small_sim.attitude(t)["nominal_matrix"][:, 2, :]
    tt = obmt_to_time(t)
    sun = _unit(get_sun(tt))
    pole = SkyCoord(0 * u.deg, 90 * u.deg, frame=BarycentricMeanEcliptic()).icrs
    n = _unit(pole)[None, :]
    e2 = np.cross(n, sun)
    e2 /= np.linalg.norm(e2, axis=-1, keepdims=True)
    nu = np.unwrap(np.arctan2((z * n).sum(-1), (z * e2).sum(-1)))
    lam = np.unwrap(get_sun(tt).transform_to(GeocentricMeanEcliptic()).lon.rad)
    # whole loops only (the precession rate varies along a loop): λ at ν = ν₀ + 2πk
    loops = int((nu[-1] - nu[0]) // (2 * np.pi))
    assert loops >= 2
    lam_end = np.interp(nu[0] + 2 * np.pi * loops, nu, lam)
    period_days = 365.25 * (lam_end - lam[0]) / (2 * np.pi) / loops
    assert period_days == pytest.approx(63.0, rel=0.005)


def test_attitude_quaternions_match_matrices(small_sim):
    t = START + np.arange(0, 3 * 3600, 7, dtype=np.int64) * 10**9
    att = small_sim.attitude(t)
    for kind in ("true", "reference", "nominal"):
        m = Rotation.from_quat(att[kind]).as_matrix()  # scalar-last (x, y, z, w)
        assert np.allclose(m, att[f"{kind}_matrix"], atol=1e-14), kind
        assert np.all(att[kind][:, 3] >= 0)


def test_spin_rate(small_sim):
    dt = 10**7  # 10 ms: the chord's curvature error (ωdt)²/6 is then 6·10⁻¹²
    t0 = START + np.arange(0, 6 * 3600, 600, dtype=np.int64) * 10**9
    m = small_sim.attitude(np.concatenate([t0 - dt, t0 + dt]))
    for kind, tol in (("nominal_matrix", 1e-6), ("true_matrix", 0.05)):
        a = m[kind]
        x_minus, x_plus = a[: t0.size, 0], a[t0.size :, 0]
        y = 0.5 * (a[: t0.size, 1] + a[t0.size :, 1])
        rate = ((x_plus - x_minus) * y).sum(-1) / (2 * dt * 1e-9) / ARCSEC  # ω_z, ″/s
        assert np.max(np.abs(rate - SPIN_RATE_ARCSEC_S)) < tol, kind
    # the true attitude departs by the wobble only: mean rate over 6 h is nominal
    assert np.mean(rate) == pytest.approx(SPIN_RATE_ARCSEC_S, abs=5e-3)


def test_transits_lie_on_their_ccd_fiducial_lines(small_sim, small_run):
    """Independent geometry: astropy star positions seen from L2, the true attitude."""
    truth = concat(small_run, "truth", "af_truth")
    win = concat(small_run, "products", "af_windows").select(
        ["window_id", "fov", "ccd_row", "ccd_strip", "ccd_index"]
    )
    stars = concat(small_run, "truth", "stars").group_by("source_id").aggregate([])
    stars = (
        stars.join(concat(small_run, "truth", "stars"), "source_id")
        .group_by(
            [
                "source_id",
                "ra_deg",
                "dec_deg",
                "parallax_mas",
                "pmra_masyr",
                "pmdec_masyr",
                "g_mag",
                "bp_rp_mag",
            ]
        )
        .aggregate([])
    )
    joined = truth.join(win, "window_id").join(stars, "source_id")
    pick = np.random.default_rng(1).choice(joined.num_rows, 400, replace=False)
    df = columns(joined.take(pick))
    t = df["transit_obmt_ns"]
    when = obmt_to_time(t)
    star = SkyCoord(
        ra=df["ra_deg"] * u.deg,
        dec=df["dec_deg"] * u.deg,
        distance=Distance(parallax=df["parallax_mas"] * u.mas),
        pm_ra_cosdec=df["pmra_masyr"] * u.mas / u.yr,
        pm_dec=df["pmdec_masyr"] * u.mas / u.yr,
        radial_velocity=0 * u.km / u.s,
        obstime=obmt_to_time(0).__class__(2016.0, format="jyear", scale="tcb"),
    ).apply_space_motion(new_obstime=when)
    earth = get_body_barycentric("earth", when)
    sun_b = get_body_barycentric("sun", when)
    gaia = earth + (earth - sun_b) * 0.01  # L2: 1 % beyond the Earth
    rel = star.cartesian.without_differentials() - gaia
    d = rel.xyz.to_value(u.au).T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    # gravitational light deflection by the Sun (GR, γ = 1), away from the Sun
    s_vec = (sun_b - gaia).xyz.to_value(u.au).T
    r_sun = np.linalg.norm(s_vec, axis=-1)
    s_vec /= r_sun[:, None]
    cos_chi = (d * s_vec).sum(-1)
    away = (d * cos_chi[:, None] - s_vec) / np.sqrt(1 - cos_chi**2)[:, None]
    gm_c2_au = 9.8706e-9
    d = d + (2 * gm_c2_au / r_sun * (1 + cos_chi) / np.sqrt(1 - cos_chi**2))[:, None] * away
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    a = small_sim.attitude(t)["true_matrix"]
    v = np.einsum("nij,nj->ni", a, d)
    phi = np.arctan2(v[:, 1], v[:, 0])
    zeta = np.arcsin(v[:, 2])
    fov = df["fov"]
    # η of the fiducial line: φ − φ_fov(ΔΓ) + calibration = η_strip
    static = small_sim.static_truth()
    cal = columns(static["gsr_instrument"])
    table = np.zeros((6, 2, 62))
    term_index = {name: k for k, name in enumerate(INSTRUMENT_TERMS)}
    for term, f, ccd, val in zip(
        cal["term"], cal["fov"], cal["ccd_index"], cal["value_uas"], strict=True
    ):
        table[term_index[str(term)], f, ccd] = val
    c = {name: table[k, fov, df["ccd_index"]] for name, k in term_index.items()}
    m = (df["ac_star_px"] - AC_CENTRE_PX) / 983.0
    col = df["bp_rp_mag"] - 1.0
    gm = (df["g_mag"] - 15.0) / 5.0
    instr = (
        (
            c["offset"]
            + c["ac1"] * m
            + c["ac2"] * (m * m - 1 / 3)
            + c["colour"] * col
            + c["magnitude"] * gm
            + c["colour_ac"] * col * m
        )
        * 1e-6
        * ARCSEC
    )
    bav = small_sim.bav_uas(t) * 1e-6 * ARCSEC
    sign = np.where(fov == 0, 1.0, -1.0)
    eta = phi - sign * 0.5 * (BASIC_ANGLE_RAD + bav) + instr
    miss_uas = (eta - STRIP_ETA_RAD[df["ccd_strip"]]) / ARCSEC * 1e6
    # L2 modelled from a low-precision Sun and heliocentric (not barycentric) positions:
    # the parallax displacement can differ by ≈ 1 % of the parallax.
    tol = 30.0 + 20.0 * df["parallax_mas"]
    assert np.all(np.abs(miss_uas) < tol), np.max(np.abs(miss_uas) - tol)
    # AC: the star sits on its CCD row, at the true AC pixel coordinate
    row_centre = (df["ccd_row"] - 4) * ROW_PITCH_ARCSEC * ARCSEC
    mu = AC_CENTRE_PX + (zeta - row_centre) / (PIXEL_AC_MAS * MAS)
    assert np.all(np.abs(mu - df["ac_star_px"]) < 0.01)
    assert np.all(np.abs(mu - AC_CENTRE_PX) <= 983.0)
    # window timing: sample 0 + centroid × TDI period is the transit time
    assert pytest.approx(58.93, abs=0.01) == PIXEL_AL_MAS


def test_preceding_to_following_spacing(small_run):
    win = concat(small_run, "products", "af_windows").select(
        ["window_id", "source_id", "fov", "ccd_strip"]
    )
    df = win.join(
        concat(small_run, "truth", "af_truth").select(["window_id", "transit_obmt_ns"]), "window_id"
    )
    p = df.filter(pc.equal(df["fov"], 0)).drop_columns(["fov", "window_id"])
    f = df.filter(pc.equal(df["fov"], 1)).drop_columns(["fov", "window_id"])
    pairs = columns(p.join(f, ["source_id", "ccd_strip"], left_suffix="_p", right_suffix="_f"))
    dt_s = (pairs["transit_obmt_ns_f"] - pairs["transit_obmt_ns_p"]) / 1e9
    pairs = dt_s[(dt_s > 0) & (dt_s < 3 * 3600)]
    assert pairs.size > 50
    expected = BASIC_ANGLE_RAD / (SPIN_RATE_ARCSEC_S * ARCSEC)  # 6393.8 s = 106.56 min
    assert expected / 60 == pytest.approx(106.5, abs=0.1)
    # Between the passes the precessing spin axis (0.17″/s) turns a star at |ζ| ≤ 0.35°
    # by up to 0.17″/s × tan ζ × 6394 s ≈ 7″ along scan (0.11 s), and the ≈ 1″ wobble
    # differs (≲ 0.07 s); nothing else may move the second transit.
    assert np.max(np.abs(pairs - expected)) < 0.25
    assert abs(np.mean(pairs) - expected) < 0.05
