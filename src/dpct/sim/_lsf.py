"""The true line spread function (LSF): an evaluable, pixel-integrated double Gaussian.

The continuous AL profile of a star image (optics, TDI smearing and charge diffusion
together) is a core plus a halo Gaussian,

    L(u) = (1 − a) N(u; −a d, σ_c) + a N(u; (1 − a) d, σ_h),   σ_h = r σ_c,

whose first moment is zero for every parameter value, so the *centroid* — the truth the
AIM fit is compared with — is unambiguous. ``d`` shifts the halo against the core and
makes the profile asymmetric (chromaticity). A window sample of width one pixel centred
``x`` pixels from the centroid receives the fraction

    P(x) = ∫_{x−½}^{x+½} L(u) du

of the star's flux, so sample k of a window with centroid c expects
λ_k = F·P(k − c) + B electrons. P is exposed (:func:`lsf_sampled`) with its derivative
(:func:`lsf_sampled_derivative`) so that tests can compute Cramér–Rao bounds
(:func:`cramer_rao_centroid`).

Per CCD the parameters are drawn once from the instrument seed stream; they depend on
colour (redder → wider core, larger d), grow slowly with time (contamination ageing) and
can be broadened further by an injected anomaly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from scipy.special import ndtr

from dpct.mission.constants import JULIAN_YEAR_S, NS_PER_S, NSL_START_OBMT_NS
from dpct.mission.focalplane import AF_CCDS, N_AF_CCDS
from dpct.sim._anomalies import lsf_broadening_factor
from dpct.sim._config import SimConfig
from dpct.sim._rng import Stream, generator

_SQRT2PI = math.sqrt(2 * math.pi)
COLOUR_REF_MAG = 1.0


@dataclass(frozen=True)
class LsfParams:
    """Parameters of the true LSF (scalars or broadcastable arrays).

    Attributes
    ----------
    sigma_core_px
        Core Gaussian σ_c, AL pixels.
    sigma_halo_px
        Halo Gaussian σ_h, AL pixels.
    halo_weight
        Halo fraction a of the flux, 0 … 1.
    asym_px
        Core–halo separation d, AL pixels (the profile's mean stays at 0).
    """

    sigma_core_px: np.ndarray | float
    sigma_halo_px: np.ndarray | float
    halo_weight: np.ndarray | float
    asym_px: np.ndarray | float

    def take(self, index: np.ndarray) -> LsfParams:
        """Parameters of a subset (for array-valued parameters)."""
        return LsfParams(
            *(
                np.asarray(v)[index]
                for v in (self.sigma_core_px, self.sigma_halo_px, self.halo_weight, self.asym_px)
            )
        )


def _parts(x: np.ndarray, p: LsfParams) -> tuple:
    a = np.asarray(p.halo_weight)
    d = np.asarray(p.asym_px)
    return a, -a * d, (1 - a) * d, np.asarray(p.sigma_core_px), np.asarray(p.sigma_halo_px)


def lsf_sampled(x_px: np.ndarray, params: LsfParams) -> np.ndarray:
    """Fraction of the flux in a one-pixel sample centred ``x_px`` pixels from the centroid.

    Parameters
    ----------
    x_px
        Sample centre minus image centroid, AL pixels (any shape broadcasting with the
        parameters).
    params
        True LSF parameters.

    Returns
    -------
    numpy.ndarray
        P(x); Σ_k P(k − c) → 1 over an infinite window.
    """
    x = np.asarray(x_px, dtype=np.float64)
    a, m1, m2, sc, sh = _parts(x, params)
    core = ndtr((x + 0.5 - m1) / sc) - ndtr((x - 0.5 - m1) / sc)
    halo = ndtr((x + 0.5 - m2) / sh) - ndtr((x - 0.5 - m2) / sh)
    return (1 - a) * core + a * halo


def lsf_sampled_derivative(x_px: np.ndarray, params: LsfParams) -> np.ndarray:
    """dP/dx of :func:`lsf_sampled`, per pixel (∂λ_k/∂c = −F·P'(k − c))."""
    x = np.asarray(x_px, dtype=np.float64)
    a, m1, m2, sc, sh = _parts(x, params)

    def phi(z: np.ndarray) -> np.ndarray:
        return np.exp(-0.5 * z * z) / _SQRT2PI

    core = (phi((x + 0.5 - m1) / sc) - phi((x - 0.5 - m1) / sc)) / sc
    halo = (phi((x + 0.5 - m2) / sh) - phi((x - 0.5 - m2) / sh)) / sh
    return (1 - a) * core + a * halo


def cramer_rao_centroid(
    flux_e: np.ndarray | float,
    background_e: np.ndarray | float,
    ron_e: np.ndarray | float,
    params: LsfParams,
    n_samples: int,
    centroid_px: np.ndarray | float | None = None,
    *,
    joint: bool = True,
) -> np.ndarray:
    """Cramér–Rao bound on the AL centroid of one window, pixels.

    Parameters
    ----------
    flux_e, background_e, ron_e
        Star flux in the window, background per sample and read-out noise, e⁻.
    params
        True LSF parameters.
    n_samples
        Window length.
    centroid_px
        Centroid in sample units from sample 0 (default: window centre).
    joint
        True: centroid, flux and background estimated together (3 × 3 Fisher matrix);
        False: flux and background known.

    Returns
    -------
    numpy.ndarray
        σ_c ≥ √(I⁻¹)₀₀ with I_ij = Σ_k ∂_iλ_k ∂_jλ_k / (λ_k + RON²) (Gaussian approximation
        of Poisson + read-out noise; see science.md §2.4).
    """
    c = (n_samples - 1) / 2 if centroid_px is None else np.asarray(centroid_px, dtype=float)
    k = np.arange(n_samples, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)[..., None]
    ex = lambda v: np.asarray(v, dtype=np.float64)[..., None]  # noqa: E731
    p = LsfParams(
        *(
            ex(v)
            for v in (
                params.sigma_core_px,
                params.sigma_halo_px,
                params.halo_weight,
                params.asym_px,
            )
        )
    )
    x = k - c
    f = ex(flux_e)
    var = f * lsf_sampled(x, p) + ex(background_e) + ex(ron_e) ** 2
    dc = -f * lsf_sampled_derivative(x, p)
    i_cc = (dc * dc / var).sum(-1)
    if not joint:
        return 1.0 / np.sqrt(i_cc)
    dfl = lsf_sampled(x, p)
    dfl, dbg = np.broadcast_arrays(dfl, np.ones_like(var))
    jac = np.stack(np.broadcast_arrays(dc, dfl, dbg), axis=-1)  # (..., n, 3)
    fisher = np.einsum("...ki,...kj->...ij", jac / var[..., None], jac)
    return np.sqrt(np.linalg.inv(fisher)[..., 0, 0])


class LsfModel:
    """True LSF parameters per CCD, colour and time (drawn once from the seed).

    Parameters
    ----------
    config
        Seed, ``af.lsf_ageing_per_year`` and the injected anomalies.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        rng = generator(config.seed, Stream.INSTRUMENT, 1)
        n = N_AF_CCDS
        self.sigma_core_px = 0.85 * (1 + 0.05 * rng.standard_normal(n))
        self.halo_ratio = 2.6 + 0.2 * rng.standard_normal(n)
        self.halo_weight = np.clip(0.15 + 0.03 * rng.standard_normal(n), 0.05, 0.3)
        self.asym_px = 0.03 * rng.standard_normal(n)
        self.sigma_colour = 0.06 + 0.01 * rng.standard_normal(n)
        self.asym_colour = 0.02 + 0.005 * rng.standard_normal(n)
        self.ageing = config.af.lsf_ageing_per_year

    def params(
        self, ccd_index: np.ndarray, bp_rp_mag: np.ndarray, obmt_ns: np.ndarray
    ) -> LsfParams:
        """True LSF parameters for windows on ``ccd_index`` of colour ``bp_rp_mag`` at time
        ``obmt_ns`` (arrays broadcasting together)."""
        ccd = np.asarray(ccd_index, dtype=np.int64)
        col = np.asarray(bp_rp_mag, dtype=np.float64) - COLOUR_REF_MAG
        t = np.asarray(obmt_ns, dtype=np.int64)
        years = (t - NSL_START_OBMT_NS) / NS_PER_S / JULIAN_YEAR_S
        grow = (1 + self.ageing * years) * lsf_broadening_factor(
            self.config.anomalies, *np.broadcast_arrays(t, ccd)
        )
        sc = self.sigma_core_px[ccd] * (1 + self.sigma_colour[ccd] * col) * grow
        return LsfParams(
            sigma_core_px=sc,
            sigma_halo_px=sc * self.halo_ratio[ccd],
            halo_weight=self.halo_weight[ccd] + 0 * sc,
            asym_px=self.asym_px[ccd] + self.asym_colour[ccd] * col + 0 * sc,
        )

    def lsf(self, x_px: np.ndarray, ccd_index: int, bp_rp_mag: float, obmt_ns: int) -> np.ndarray:
        """The true sampled LSF P(x) of one CCD, colour and time (see :func:`lsf_sampled`)."""
        return lsf_sampled(x_px, self.params(ccd_index, bp_rp_mag, obmt_ns))

    def ccd_table_columns(self) -> dict[str, np.ndarray]:
        """Per-CCD parameters for the ``lsf_ccd`` truth table."""
        return {
            "ccd_index": np.arange(N_AF_CCDS),
            "ccd_row": AF_CCDS[:, 0],
            "ccd_strip": AF_CCDS[:, 1],
            "sigma_core_px": self.sigma_core_px,
            "halo_ratio": self.halo_ratio,
            "halo_weight": self.halo_weight,
            "asym_px": self.asym_px,
            "sigma_colour_per_mag": self.sigma_colour,
            "asym_colour_px_per_mag": self.asym_colour,
            "ageing_per_year": np.full(N_AF_CCDS, self.ageing),
        }


@numba.njit(cache=True)
def _ndtr(z: float) -> float:
    return 0.5 * math.erfc(-z * 0.7071067811865476)


@numba.njit(cache=True)
def sampled_profile(
    c: float, sc: float, sh: float, a: float, d: float, n: int, first: int, out: np.ndarray
) -> None:
    """Numba twin of :func:`lsf_sampled`: out[k] = P(first + k − c), k < n.

    Pixel edges are shared by neighbouring samples, so only n + 1 CDF pairs are needed.
    """
    m1 = -a * d
    m2 = (1.0 - a) * d
    x = first - c - 0.5
    prev_c = _ndtr((x - m1) / sc)
    prev_h = _ndtr((x - m2) / sh)
    for k in range(n):
        x += 1.0
        cc = _ndtr((x - m1) / sc)
        ch = _ndtr((x - m2) / sh)
        out[k] = (1.0 - a) * (cc - prev_c) + a * (ch - prev_h)
        prev_c = cc
        prev_h = ch
