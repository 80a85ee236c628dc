"""Physical and instrument constants of the simulated Gaia-like mission, with their sources.

Tags ``[S#]`` refer to ``shared/docs/science.md``. Values marked *placeholder* are not in
that sheet; they are plausible numbers chosen for the simulator and listed in
``docs/simulator.md``.
"""

from __future__ import annotations

import math

# --- time ------------------------------------------------------------------------------
NS_PER_S = 1_000_000_000
DAY_NS = 86_400 * NS_PER_S
REV_NS = 21_600 * NS_PER_S  # one OBMT revolution = 6 h [S18]
#: Julian date (TCB) of OBMT = 0, from TCB ≈ J2015.0 + (OBMT − 1717.6256 rev)/(1461 rev/yr)
#: [S18][S65]; 1461 rev/yr is exactly 4 rev/day, so OBMT runs at one day per TCB day.
OBMT_ZERO_JD_TCB = 2451545.0 + 15 * 365.25 - 1717.6256 / 4.0
#: Reference epoch of the catalogue astrometry (J2016.0, TCB), as in Gaia DR3.
CATALOGUE_EPOCH_JYEAR = 2016.0

# --- angles ----------------------------------------------------------------------------
ARCSEC = math.pi / 648_000.0  # rad
MAS = ARCSEC / 1e3
UAS = ARCSEC / 1e6
DEG = math.pi / 180.0

# --- scanning law [S1] -----------------------------------------------------------------
SPIN_RATE_ARCSEC_S = 59.9641857803  # inertial rate about the spin axis z [S1]
SPIN_RATE_RAD_S = SPIN_RATE_ARCSEC_S * ARCSEC
BASIC_ANGLE_DEG = 106.5  # [S3][S4]
BASIC_ANGLE_RAD = BASIC_ANGLE_DEG * DEG
SOLAR_ASPECT_DEG = 45.0  # ξ [S1]
PRECESSION_PERIOD_DAYS = 63.0  # mean period of the spin axis around the Sun [S1]
OBLIQUITY_J2000_ARCSEC = 84_381.406  # IAU 2006 mean obliquity at J2000 (placeholder source)
#: Start of the nominal scanning law, OBMT 1078.3795 rev (start of the DR1 span) [S42].
NSL_START_OBMT_NS = int(1078.3795 * REV_NS)

# --- focal plane [S7][S8][S21][S22][S29] -----------------------------------------------
#: TDI line period: 982.8 µs ≈ 59 mas ÷ 59.964″/s [derived]; an integer number of 50 ns
#: master-clock cycles [S30] so that OBMT line boundaries are exact integers.
TDI_PERIOD_NS = 982_800
#: Along-scan angular size of one TDI line: the TDI period times the spin rate (≈ 58.93 mas,
#: i.e. 10 µm at a 35 m focal length [S7]).
PIXEL_AL_MAS = TDI_PERIOD_NS * 1e-9 * SPIN_RATE_ARCSEC_S * 1e3
PIXEL_AC_MAS = 3.0 * PIXEL_AL_MAS  # 30 µm vs 10 µm [S7]
CCD_LINES = 4500  # TDI lines per CCD [S7]
CCD_COLUMNS = 1966  # AC pixel columns [S7]
AC_CENTRE_PX = 996.5  # μ runs 13.5 … 1979.5 over the image area [S22][S23]
AC_HALF_WIDTH_PX = 983.0
STRIP_PERIOD_NS = 4_850_000_000  # CCD-to-CCD crossing time T = 4.85 s [S29]
N_ROWS = 7
N_AF_STRIPS = 9
#: The one AF slot without a CCD (7 × 9 = 63 slots, 62 CCDs [S4][S19]); which slot is
#: empty is not in the sheet: placeholder row 4, AF9.
MISSING_AF_SLOT = (4, 9)
#: AC pitch of CCD rows: full FPA height ≈ 0.7° over 7 rows [S8] → 360″; the CCD image
#: area (1966 × 176.8 mas = 347.6″) leaves a 12.4″ gap between rows.
ROW_PITCH_ARCSEC = 360.0
#: Full (ungated) integration time of one CCD transit.
CCD_INTEGRATION_S = CCD_LINES * TDI_PERIOD_NS * 1e-9
#: Integrated TDI lines per gate: ungated 4500, first gate 2900 [S23], then halving [S21]
#: down to ≈ 0.5 % (placeholder: the sheet gives "~50 % down to a few %").
GATE_LINES = (4500, 2900, 1450, 725, 362, 181, 90, 45, 22)

# --- photometry (placeholder, Gaia EDR3 G-band zero point for e⁻/s, Riello et al. 2021) --
G_ZERO_POINT_MAG = 25.6874

# --- relativity and solar system -------------------------------------------------------
#: GM_sun / (c² · 1 au) in rad: the light-deflection scale at 1 au (2.036 mas).
SCHWARZSCHILD_HALF_AU_RAD = 1.32712440018e20 / (299_792_458.0**2 * 1.495978707e11)
#: Gaia's distance from the Sun in units of the Earth's (L2 is 1 % beyond the Earth).
L2_DISTANCE_FACTOR = 1.01
KM_S_PER_MAS_YR_KPC = 4.740470446  # v_t [km/s] = 4.74 · μ [mas/yr] / ϖ [mas]
JULIAN_YEAR_S = 365.25 * 86_400.0
