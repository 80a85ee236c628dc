"""The AIM line spread function (LSF): a nominal profile plus a linear basis of corrections.

The continuous AL profile is modelled as

    L(u) = H₀(u; s_c) + Σ_{j≥1} a_j b_j(u),

with H_n(u; s) = He_n(u/s) φ(u/s) / (s √n!) the Gauss–Hermite functions (He_n the
probabilists' Hermite polynomials) and the corrections

    b₁ = H₀(s_h) − H₀(s_c)                       halo weight
    b₂ = H₁(s_h)/s_h − H₁(s_c)/s_c               core–halo shift (asymmetry)
    b_j = H_n(s_c), n = 2 … core_order            core shape
    b_j = H_n(s_h), n = 2 … halo_order            halo shape

at a core scale s_c and a halo scale s_h. Every b_j has zero integral and zero first
moment, so for *any* coefficients the profile has unit flux and its centroid (first
moment) at u = 0: the fitted flux and centroid mean the same as the simulator's truth
(and as a photocentre), and no coefficient is degenerate with a shift of all centroids
or a change of all fluxes. A sample of one pixel centred x from the centroid receives

    P(x) = ∫_{x−½}^{x+½} L(u) du,

which is analytic because ∫ He_n(z) φ(z) dz = −He_{n−1}(z) φ(z) (n ≥ 1): each of the
n + 1 pixel edges of a window costs two ``exp`` and two ``erfc`` plus two Hermite
recurrences, whatever the number of basis functions.

Why this basis: the physical variations of the LSF are width changes (colour, ageing,
focus) and core/halo redistributions. A width change of a Gaussian is its H₂ term, its
second order H₄, and so on, so a short Hermite series at the core scale follows the
core; the halo is two to three times wider, which a core-scale series would need many
terms for, hence a second, halo-scale series. With the default orders (8 and 6, 14 free
coefficients) the simulator's core + halo profiles over colours −0.3 … 3 mag are
represented to 5·10⁻⁴ of the peak, i.e. χ² excess of 0.002 per sample for the brightest
unsaturated stars (5·10⁵ e⁻). Coefficients depend on CCD, colour and time through a
low-order polynomial per CCD (:class:`LsfCalibration`): a_j = Σ_t C[ccd, j, t] m_t with
monomials m_t = (colour − colour_ref)^p (time − time_ref)^q.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numba as nb
import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike, NDArray

from dpct.datamodel import Column

DAY_NS = 86_400 * 10**9
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)

NOMINAL_HALO_WEIGHT = 0.15
"""Halo fraction of the default (pre-calibration) LSF."""


@dataclass(frozen=True)
class LsfBasis:
    """Definition of the basis functions (scales in AL pixels, Hermite orders).

    The defaults are the nominal (design) widths of the core and the halo; they need not
    match any CCD exactly, the coefficients take up the difference.
    """

    core_scale_px: float = 0.85
    halo_scale_px: float = 2.2
    core_order: int = 8
    halo_order: int = 6

    def __post_init__(self) -> None:
        if not (self.core_scale_px > 0 and self.halo_scale_px > self.core_scale_px):
            raise ValueError(
                f"LSF basis scales must satisfy 0 < core ({self.core_scale_px}) "
                f"< halo ({self.halo_scale_px}) px"
            )
        if not (2 <= self.core_order <= 16 and 2 <= self.halo_order <= 16):
            raise ValueError(
                f"LSF basis Hermite orders must be 2 … 16, got core {self.core_order}, "
                f"halo {self.halo_order}"
            )

    @property
    def size(self) -> int:
        """Number of basis functions, the nominal H₀(s_c) included."""
        return 3 + (self.core_order - 1) + (self.halo_order - 1)

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the basis functions, index 0 the fixed nominal core."""
        return (
            "core",
            "halo",
            "asym",
            *(f"core_h{n}" for n in range(2, self.core_order + 1)),
            *(f"halo_h{n}" for n in range(2, self.halo_order + 1)),
        )

    def params(self) -> NDArray[np.float64]:
        """The basis as a small array for the Numba kernels: s_c, s_h, orders."""
        return np.array(
            [self.core_scale_px, self.halo_scale_px, self.core_order, self.halo_order], float
        )


# --------------------------------------------------------------------- Numba kernels ---
@nb.njit(cache=True, inline="always")
def _hermite_terms(z: float, order: int, he: np.ndarray) -> float:
    """Fill he[n] = He_n(z)/√n! for n ≤ order and return φ(z)."""
    he[0] = 1.0
    he[1] = z
    for n in range(1, order):
        # He_{n+1} = z He_n − n He_{n−1}, in the √n!-normalised form
        he[n + 1] = (z * he[n] - math.sqrt(n) * he[n - 1]) / math.sqrt(n + 1)
    return math.exp(-0.5 * z * z) * _INV_SQRT2PI


@nb.njit(cache=True)
def edge_basis(
    u: float, bp: np.ndarray, big_a: np.ndarray, g: np.ndarray, hc: np.ndarray, hh: np.ndarray
) -> None:
    """Antiderivatives A_j(u) and densities b_j(u) of every basis function at u (px);
    ``hc``, ``hh`` are scratch of core_order + 1 and halo_order + 1.

    The sample integral of b_j over [x − ½, x + ½] is A_j(x + ½) − A_j(x − ½).
    """
    sc, sh = bp[0], bp[1]
    nc, nh = int(bp[2]), int(bp[3])
    zc = u / sc
    zh = u / sh
    pc = _hermite_terms(zc, nc, hc)
    ph = _hermite_terms(zh, nh, hh)
    cc = 0.5 * math.erfc(-zc * _INV_SQRT2)
    ch = 0.5 * math.erfc(-zh * _INV_SQRT2)
    big_a[0] = cc
    g[0] = pc / sc
    big_a[1] = ch - cc
    g[1] = ph / sh - pc / sc
    big_a[2] = -ph / sh + pc / sc
    g[2] = zh * ph / (sh * sh) - zc * pc / (sc * sc)
    j = 3
    for n in range(2, nc + 1):
        # ∫ He_n φ = −He_{n−1} φ; the √n! normalisation: He_{n−1}/√n! = h_{n−1}/√n
        big_a[j] = -hc[n - 1] * pc / math.sqrt(n)
        g[j] = hc[n] * pc / sc
        j += 1
    for n in range(2, nh + 1):
        big_a[j] = -hh[n - 1] * ph / math.sqrt(n)
        g[j] = hh[n] * ph / sh
        j += 1


def _hermite_monomials(order: int) -> NDArray[np.float64]:
    """T[n, p]: h_n(z) = He_n(z)/√n! = Σ_p T[n, p] z^p, n, p ≤ order."""
    t = np.zeros((order + 1, order + 1))
    t[0, 0] = 1.0
    if order >= 1:
        t[1, 1] = 1.0
    for n in range(1, order):
        t[n + 1, 1:] += t[n, :-1] / math.sqrt(n + 1)
        t[n + 1] -= math.sqrt(n) * t[n - 1] / math.sqrt(n + 1)
    return t


HERMITE_MONOMIALS = _hermite_monomials(16)
"""Monomial coefficients of the normalised Hermite polynomials up to order 16."""

# layout of the per-window profile polynomials (see window_polynomials)
_POLY = 17


@nb.njit(cache=True)
def window_polynomials(a: np.ndarray, bp: np.ndarray, tm: np.ndarray, poly: np.ndarray) -> None:
    """Turn a window's coefficients a_j into the form the per-edge evaluation wants:

        A(u) = w_c Φ(z_c) + w_h Φ(z_h) + φ(z_c) Q_c(z_c) + φ(z_h) Q_h(z_h)
        L(u) = φ(z_c) R_c(z_c) + φ(z_h) R_h(z_h)

    with Q, R ordinary polynomials (Horner: no square roots or divisions per edge).
    ``poly`` rows: 0 Q_c, 1 R_c, 2 Q_h, 3 R_h (coefficients of z^p), and
    poly[4, 0:2] = w_c, w_h.
    """
    sc, sh = bp[0], bp[1]
    nc, nh = int(bp[2]), int(bp[3])
    for r in range(4):
        for p in range(poly.shape[1]):
            poly[r, p] = 0.0
    # Hermite-basis coefficients, then monomials
    qc = np.zeros(nc + 1)
    rc = np.zeros(nc + 1)
    qh = np.zeros(nh + 1)
    rh = np.zeros(nh + 1)
    qc[0] = a[2] / sc
    rc[0] = (a[0] - a[1]) / sc
    rc[1] = -a[2] / (sc * sc)
    qh[0] = -a[2] / sh
    rh[0] = a[1] / sh
    rh[1] = a[2] / (sh * sh)
    j = 3
    for n in range(2, nc + 1):
        qc[n - 1] -= a[j] / math.sqrt(n)
        rc[n] += a[j] / sc
        j += 1
    for n in range(2, nh + 1):
        qh[n - 1] -= a[j] / math.sqrt(n)
        rh[n] += a[j] / sh
        j += 1
    for n in range(nc + 1):
        for p in range(n + 1):
            poly[0, p] += qc[n] * tm[n, p]
            poly[1, p] += rc[n] * tm[n, p]
    for n in range(nh + 1):
        for p in range(n + 1):
            poly[2, p] += qh[n] * tm[n, p]
            poly[3, p] += rh[n] * tm[n, p]
    poly[4, 0] = a[0] - a[1]
    poly[4, 1] = a[1]


@nb.njit(cache=True, inline="always")
def edge_profile(u: float, poly: np.ndarray, bp: np.ndarray):
    """(A(u), L(u)) of a window's profile from :func:`window_polynomials`' output."""
    zc = u / bp[0]
    zh = u / bp[1]
    nc = int(bp[2])
    nh = int(bp[3])
    pc = math.exp(-0.5 * zc * zc) * _INV_SQRT2PI
    ph = math.exp(-0.5 * zh * zh) * _INV_SQRT2PI
    cc = 0.5 * math.erfc(-zc * _INV_SQRT2)
    ch = 0.5 * math.erfc(-zh * _INV_SQRT2)
    q = poly[0, nc]
    r = poly[1, nc]
    for p in range(nc - 1, -1, -1):
        q = q * zc + poly[0, p]
        r = r * zc + poly[1, p]
    qh = poly[2, nh]
    rh = poly[3, nh]
    for p in range(nh - 1, -1, -1):
        qh = qh * zh + poly[2, p]
        rh = rh * zh + poly[3, p]
    big_a = poly[4, 0] * cc + poly[4, 1] * ch + pc * q + ph * qh
    g = pc * r + ph * rh
    return big_a, g


@nb.njit(cache=True)
def window_coefficients(
    coef: np.ndarray,
    row: int,
    colour: float,
    t_days: float,
    cpow: np.ndarray,
    tpow: np.ndarray,
    out: np.ndarray,
) -> None:
    """out[j] = a_j of one window (out[0] = 1): Σ_t coef[row, j − 1, t] m_t."""
    out[0] = 1.0
    for j in range(coef.shape[1]):
        out[j + 1] = 0.0
    for t in range(cpow.size):
        m = 1.0
        for _ in range(cpow[t]):
            m *= colour
        for _ in range(tpow[t]):
            m *= t_days
        for j in range(coef.shape[1]):
            out[j + 1] += coef[row, j, t] * m


@nb.njit(cache=True)
def _profile_points(
    x: np.ndarray, a: np.ndarray, bp: np.ndarray, tm: np.ndarray, p_out: np.ndarray,
    d_out: np.ndarray,
) -> None:  # fmt: skip
    poly = np.empty((5, _POLY))
    for i in range(x.size):
        window_polynomials(a[i], bp, tm, poly)
        a_hi, g_hi = edge_profile(x[i] + 0.5, poly, bp)
        a_lo, g_lo = edge_profile(x[i] - 0.5, poly, bp)
        p_out[i] = a_hi - a_lo
        d_out[i] = g_hi - g_lo


@nb.njit(cache=True)
def _basis_points(x: np.ndarray, bp: np.ndarray, out: np.ndarray) -> None:
    k = out.shape[1]
    a_hi = np.empty(k)
    g_hi = np.empty(k)
    a_lo = np.empty(k)
    g_lo = np.empty(k)
    hc = np.empty(int(bp[2]) + 1)
    hh = np.empty(int(bp[3]) + 1)
    for i in range(x.size):
        edge_basis(x[i] + 0.5, bp, a_hi, g_hi, hc, hh)
        edge_basis(x[i] - 0.5, bp, a_lo, g_lo, hc, hh)
        for j in range(k):
            out[i, j] = a_hi[j] - a_lo[j]


def sampled_basis(x_px: ArrayLike, basis: LsfBasis) -> NDArray[np.float64]:
    """Pixel-integrated basis functions P_j(x), shape ``x.shape + (basis.size,)``."""
    x = np.asarray(x_px, dtype=np.float64)
    flat = np.ascontiguousarray(x.reshape(-1))
    out = np.empty((flat.size, basis.size))
    _basis_points(flat, basis.params(), out)
    return out.reshape((*x.shape, basis.size))


# --------------------------------------------------------------------- calibration ---
LSF_CALIBRATION_COLUMNS: list[tuple[str, str, str, str]] = [
    ("solution_id", "int64", "", "solution id of the calibration (0: the default LSF)"),
    ("ccd_index", "int16", "", "AF CCD 0 … 61"),
    ("basis_index", "int16", "", "basis function j ≥ 1 (0 is the fixed nominal core)"),
    ("basis_name", "string", "", "halo | asym | core_hN | halo_hN"),
    ("colour_power", "int8", "", "p of (colour − colour_ref)^p"),
    ("time_power", "int8", "", "q of ((t − time_ref)/1 d)^q"),
    ("param_index", "int16", "", "index of this coefficient within its CCD"),
    ("coefficient", "float64", "", "C[ccd, j, t]"),
    ("coefficient_err", "float64", "", "formal error of the coefficient"),
    (
        "covariance",
        "list<float64>",
        "",
        "row param_index of the CCD's coefficient covariance (empty: not estimated)",
    ),
    ("colour_ref_mag", "float64", "mag", "reference colour G_BP − G_RP"),
    ("time_ref_obmt_ns", "int64", "ns", "reference OBMT"),
    ("core_scale_px", "float64", "px", "basis core scale s_c"),
    ("halo_scale_px", "float64", "px", "basis halo scale s_h"),
    ("core_order", "int8", "", "highest core Hermite order"),
    ("halo_order", "int8", "", "highest halo Hermite order"),
    ("n_windows", "int64", "", "windows of this CCD used by the calibration"),
    ("chi2_dof", "float64", "", "χ²/dof of this CCD's calibration windows"),
]
"""Columns of the ``aim_lsf_calibration`` product: one row per CCD and coefficient."""

LSF_CALIBRATION_SCHEMA = pa.schema(
    [
        pa.field(name, Column(name, dtype).arrow_type)
        for name, dtype, _, _ in LSF_CALIBRATION_COLUMNS
    ]
)


@dataclass(frozen=True)
class LsfCalibration:
    """Per-CCD LSF coefficients C[ccd, j, t] (see the module doc) and their covariance.

    Attributes
    ----------
    ccd_index
        CCDs calibrated, shape (n_ccd,).
    coefficients
        C, shape (n_ccd, basis.size − 1, n_terms).
    colour_power, time_power
        Monomial exponents of the terms, shape (n_terms,).
    colour_ref_mag, time_ref_obmt_ns
        References of the colour and time polynomials (time in days).
    covariance
        Per-CCD covariance of the flattened C[ccd] (index j·n_terms + t), shape
        (n_ccd, n_par, n_par), or None (the default LSF has none).
    solution_id
        Solution id of the product (0 for the default LSF).
    basis
        The basis functions.
    n_windows, chi2_dof
        Per CCD: windows used and their χ²/dof (0 and NaN when not calibrated).
    """

    ccd_index: NDArray[np.int64]
    coefficients: NDArray[np.float64]
    colour_power: NDArray[np.int64]
    time_power: NDArray[np.int64]
    colour_ref_mag: float = 1.0
    time_ref_obmt_ns: int = 0
    covariance: NDArray[np.float64] | None = None
    solution_id: int = 0
    basis: LsfBasis = field(default_factory=LsfBasis)
    n_windows: NDArray[np.int64] | None = None
    chi2_dof: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        ccd = np.asarray(self.ccd_index, dtype=np.int64)
        coef = np.asarray(self.coefficients, dtype=np.float64)
        nt = len(self.colour_power)
        if len(self.time_power) != nt:
            raise ValueError("colour_power and time_power must have one entry per term")
        if coef.shape != (ccd.size, self.basis.size - 1, nt):
            raise ValueError(
                f"LSF coefficients have shape {coef.shape}, expected "
                f"({ccd.size}, {self.basis.size - 1}, {nt}) for {ccd.size} CCDs, "
                f"{self.basis.size - 1} basis functions and {nt} terms"
            )
        if ccd.size == 0 or np.unique(ccd).size != ccd.size or ccd.min() < 0:
            raise ValueError("an LSF calibration needs distinct, non-negative CCD indices")
        if not np.all(np.isfinite(coef)):
            raise ValueError("LSF calibration coefficients must be finite")
        object.__setattr__(self, "ccd_index", ccd)
        object.__setattr__(self, "coefficients", coef)
        object.__setattr__(self, "colour_power", np.asarray(self.colour_power, dtype=np.int64))
        object.__setattr__(self, "time_power", np.asarray(self.time_power, dtype=np.int64))
        n = ccd.size
        if self.n_windows is None:
            object.__setattr__(self, "n_windows", np.zeros(n, dtype=np.int64))
        if self.chi2_dof is None:
            object.__setattr__(self, "chi2_dof", np.full(n, np.nan))
        if self.covariance is not None:
            npar = coef.shape[1] * nt
            cov = np.asarray(self.covariance, dtype=np.float64)
            if cov.shape != (n, npar, npar):
                raise ValueError(f"covariance has shape {cov.shape}, expected {(n, npar, npar)}")
            object.__setattr__(self, "covariance", cov)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def default(
        cls,
        ccd_index: ArrayLike = range(62),
        *,
        halo_weight: float = NOMINAL_HALO_WEIGHT,
        basis: LsfBasis | None = None,
        colour_degree: int = 2,
        time_degree: int = 0,
        colour_ref_mag: float = 1.0,
        time_ref_obmt_ns: int = 0,
    ) -> LsfCalibration:
        """The uncalibrated LSF: the nominal core + halo at the basis scales, the same for
        every CCD, colour and time (solution id 0), with the term layout a calibration
        will fit (so it can serve as that calibration's start)."""
        basis = basis or LsfBasis()
        ccd = np.asarray(list(ccd_index) if not isinstance(ccd_index, np.ndarray) else ccd_index)
        cpow, tpow = term_powers(colour_degree, time_degree)
        coef = np.zeros((ccd.size, basis.size - 1, cpow.size))
        coef[:, 0, 0] = halo_weight  # b₁ = halo − core: (1 − w) core + w halo
        return cls(ccd, coef, cpow, tpow, colour_ref_mag, time_ref_obmt_ns, basis=basis)

    @classmethod
    def from_profiles(
        cls,
        profile: Callable[[NDArray[np.float64], int, float, int], NDArray[np.float64]],
        ccd_index: ArrayLike,
        *,
        colours_mag: Sequence[float] = tuple(np.linspace(-0.3, 3.0, 12)),
        times_obmt_ns: Sequence[int] = (0,),
        basis: LsfBasis | None = None,
        colour_degree: int = 2,
        time_degree: int = 0,
        colour_ref_mag: float = 1.0,
        time_ref_obmt_ns: int = 0,
        x_max_px: float = 7.0,
        peak_weight_e: float = 5.0e5,
        solution_id: int = 0,
    ) -> LsfCalibration:
        """Project known sampled profiles (an optical model, or a simulator's truth) onto
        the basis: per CCD, a weighted least-squares fit of C to ``profile(x, ccd,
        colour, obmt_ns)`` on a fine grid of |x| ≤ ``x_max_px`` over the given colours
        and times. Weights are those of a star of ``peak_weight_e`` electrons (Poisson),
        so the projection is best where bright-star data would constrain it."""
        basis = basis or LsfBasis()
        ccd = np.asarray(list(ccd_index) if not isinstance(ccd_index, np.ndarray) else ccd_index)
        cpow, tpow = term_powers(colour_degree, time_degree)
        x = np.linspace(-x_max_px, x_max_px, int(80 * x_max_px) + 1)
        pb = sampled_basis(x, basis)
        coef = np.empty((ccd.size, basis.size - 1, cpow.size))
        for i, c in enumerate(ccd.tolist()):
            rows, rhs, wts = [], [], []
            for col in colours_mag:
                for t in times_obmt_ns:
                    p = np.asarray(profile(x, c, float(col), int(t)), dtype=np.float64)
                    m = _monomials(
                        np.array([col - colour_ref_mag]),
                        np.array([(t - time_ref_obmt_ns) / DAY_NS]),
                        cpow,
                        tpow,
                    )[0]
                    rows.append((pb[:, 1:, None] * m[None, None, :]).reshape(x.size, -1))
                    rhs.append(p - pb[:, 0])
                    wts.append(1.0 / np.sqrt(peak_weight_e * np.maximum(p, 0) + 100.0))
            a = np.concatenate(rows)
            w = np.concatenate(wts)
            sol = np.linalg.lstsq(a * w[:, None], np.concatenate(rhs) * w, rcond=None)[0]
            coef[i] = sol.reshape(basis.size - 1, cpow.size)
        return cls(
            ccd, coef, cpow, tpow, colour_ref_mag, time_ref_obmt_ns,
            solution_id=solution_id, basis=basis,
        )  # fmt: skip

    # -- evaluation -----------------------------------------------------------------------
    def rows_of(self, ccd_index: ArrayLike) -> NDArray[np.int64]:
        """Row of each window's CCD in the coefficient arrays; ValueError if missing."""
        ccd = np.asarray(ccd_index, dtype=np.int64)
        lookup = np.full(max(int(self.ccd_index.max()), int(ccd.max(initial=0))) + 1, -1)
        lookup[self.ccd_index] = np.arange(self.ccd_index.size)
        rows = np.where(ccd >= 0, lookup[np.clip(ccd, 0, None)], -1)
        if np.any(rows < 0):
            missing = np.unique(ccd[rows < 0])
            raise ValueError(
                f"LSF calibration (solution {self.solution_id}) has no coefficients for "
                f"CCD(s) {missing[:10].tolist()}; calibrate them or use LsfCalibration.default()"
            )
        return rows

    def window_coefficients(
        self, ccd_index: ArrayLike, colour_mag: ArrayLike, obmt_ns: ArrayLike
    ) -> NDArray[np.float64]:
        """a_j per window, shape (n, basis.size), a[:, 0] = 1."""
        ccd, col, t = np.broadcast_arrays(
            np.asarray(ccd_index), np.asarray(colour_mag, float), np.asarray(obmt_ns)
        )
        rows = self.rows_of(ccd.reshape(-1))
        m = _monomials(
            col.reshape(-1) - self.colour_ref_mag,
            (t.reshape(-1).astype(np.int64) - self.time_ref_obmt_ns) / DAY_NS,
            self.colour_power,
            self.time_power,
        )
        a = np.einsum("njt,nt->nj", self.coefficients[rows], m)
        return np.concatenate([np.ones((a.shape[0], 1)), a], axis=1)

    def profile(
        self, x_px: ArrayLike, ccd_index: ArrayLike, colour_mag: ArrayLike, obmt_ns: ArrayLike
    ) -> NDArray[np.float64]:
        """Sampled profile P(x) (flux fraction in a one-pixel sample centred x from the
        centroid), broadcasting ``x_px`` with the window arguments."""
        p, _ = self.profile_and_derivative(x_px, ccd_index, colour_mag, obmt_ns)
        return p

    def profile_and_derivative(
        self, x_px: ArrayLike, ccd_index: ArrayLike, colour_mag: ArrayLike, obmt_ns: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """P(x) and dP/dx (∂λ_k/∂c = −F P'(k − c))."""
        x, ccd, col, t = np.broadcast_arrays(
            np.asarray(x_px, float), np.asarray(ccd_index), np.asarray(colour_mag, float),
            np.asarray(obmt_ns),
        )  # fmt: skip
        a = self.window_coefficients(ccd.reshape(-1), col.reshape(-1), t.reshape(-1))
        xf = np.ascontiguousarray(x.reshape(-1))
        p = np.empty(xf.size)
        d = np.empty(xf.size)
        _profile_points(xf, np.ascontiguousarray(a), self.basis.params(), HERMITE_MONOMIALS, p, d)
        return p.reshape(x.shape), d.reshape(x.shape)

    def profile_error(
        self, x_px: ArrayLike, ccd_index: int, colour_mag: float, obmt_ns: int
    ) -> NDArray[np.float64]:
        """Formal error of P(x) for one CCD, colour and time, from the covariance."""
        if self.covariance is None:
            raise ValueError(f"LSF calibration {self.solution_id} has no covariance")
        x = np.asarray(x_px, dtype=np.float64)
        row = int(self.rows_of(np.array([ccd_index]))[0])
        m = _monomials(
            np.array([colour_mag - self.colour_ref_mag]),
            np.array([(obmt_ns - self.time_ref_obmt_ns) / DAY_NS]),
            self.colour_power,
            self.time_power,
        )[0]
        pb = sampled_basis(x.reshape(-1), self.basis)[:, 1:]  # (n, K − 1)
        jac = (pb[:, :, None] * m[None, None, :]).reshape(pb.shape[0], -1)
        var = np.einsum("ni,ij,nj->n", jac, self.covariance[row], jac)
        return np.sqrt(np.maximum(var, 0.0)).reshape(x.shape)

    @property
    def n_terms(self) -> int:
        return int(self.colour_power.size)

    def with_solution_id(self, solution_id: int) -> LsfCalibration:
        """The same calibration under another solution id (when the product is stored)."""
        return replace(self, solution_id=int(solution_id))

    # -- pyarrow --------------------------------------------------------------------------
    def to_table(self) -> pa.Table:
        """One row per CCD and coefficient, columns :data:`LSF_CALIBRATION_COLUMNS`."""
        n_ccd, nb_, nt = self.coefficients.shape
        npar = nb_ * nt
        j = np.tile(np.repeat(np.arange(1, nb_ + 1), nt), n_ccd)
        t = np.tile(np.tile(np.arange(nt), nb_), n_ccd)
        ccd_rows = np.repeat(np.arange(n_ccd), npar)
        names = np.asarray(self.basis.names, dtype=object)
        if self.covariance is None:
            err = np.full(n_ccd * npar, np.nan)
            cov = pa.array([[] for _ in range(n_ccd * npar)], type=pa.list_(pa.float64()))
        else:
            err = np.sqrt(np.diagonal(self.covariance, axis1=1, axis2=2)).reshape(-1)
            flat = self.covariance.reshape(-1)
            offsets = np.arange(0, flat.size + 1, npar, dtype=np.int32)
            cov = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
        nrow = n_ccd * npar
        cols = {
            "solution_id": np.full(nrow, self.solution_id, np.int64),
            "ccd_index": self.ccd_index[ccd_rows].astype(np.int16),
            "basis_index": j.astype(np.int16),
            "basis_name": pa.array(names[j].tolist(), pa.string()),
            "colour_power": self.colour_power[t].astype(np.int8),
            "time_power": self.time_power[t].astype(np.int8),
            "param_index": np.tile(np.arange(npar), n_ccd).astype(np.int16),
            "coefficient": self.coefficients.reshape(-1),
            "coefficient_err": err,
            "covariance": cov,
            "colour_ref_mag": np.full(nrow, self.colour_ref_mag),
            "time_ref_obmt_ns": np.full(nrow, self.time_ref_obmt_ns, np.int64),
            "core_scale_px": np.full(nrow, self.basis.core_scale_px),
            "halo_scale_px": np.full(nrow, self.basis.halo_scale_px),
            "core_order": np.full(nrow, self.basis.core_order, np.int8),
            "halo_order": np.full(nrow, self.basis.halo_order, np.int8),
            "n_windows": self.n_windows[ccd_rows].astype(np.int64),
            "chi2_dof": self.chi2_dof[ccd_rows].astype(np.float64),
        }
        return pa.Table.from_pydict(cols, schema=LSF_CALIBRATION_SCHEMA)

    @classmethod
    def from_table(cls, table: pa.Table) -> LsfCalibration:
        """Rebuild a calibration from :meth:`to_table`'s rows (any row order)."""
        missing = [c for c in LSF_CALIBRATION_SCHEMA.names if c not in table.column_names]
        if missing:
            raise ValueError(f"aim_lsf_calibration table lacks column(s) {missing}")
        if table.num_rows == 0:
            raise ValueError("aim_lsf_calibration table is empty: no LSF to use")
        col = {c: table.column(c).to_numpy() for c in LSF_CALIBRATION_SCHEMA.names if c not in (
            "basis_name", "covariance")}  # fmt: skip
        for name in ("solution_id", "colour_ref_mag", "time_ref_obmt_ns", "core_scale_px",
                     "halo_scale_px", "core_order", "halo_order"):  # fmt: skip
            if np.unique(col[name]).size != 1:
                raise ValueError(f"aim_lsf_calibration rows disagree on {name}: one solution only")
        basis = LsfBasis(
            float(col["core_scale_px"][0]), float(col["halo_scale_px"][0]),
            int(col["core_order"][0]), int(col["halo_order"][0]),
        )  # fmt: skip
        ccds = np.unique(col["ccd_index"]).astype(np.int64)
        pairs = list(zip(col["colour_power"].tolist(), col["time_power"].tolist(), strict=True))
        terms = sorted(set(pairs), key=lambda pq: (pq[1], pq[0]))  # colour, then time
        tindex = {pq: i for i, pq in enumerate(terms)}
        nb_, nt = basis.size - 1, len(terms)
        npar = nb_ * nt
        if table.num_rows != ccds.size * npar:
            raise ValueError(
                f"aim_lsf_calibration has {table.num_rows} rows, expected {ccds.size * npar} "
                f"({ccds.size} CCDs × {nb_} basis functions × {nt} terms)"
            )
        ci = np.searchsorted(ccds, col["ccd_index"])
        ti = np.array([tindex[pq] for pq in pairs])
        ji = col["basis_index"].astype(np.int64) - 1
        if ji.min() < 0 or ji.max() >= nb_:
            raise ValueError("aim_lsf_calibration basis_index out of range for its basis")
        coef = np.full((ccds.size, nb_, nt), np.nan)
        coef[ci, ji, ti] = col["coefficient"]
        if not np.all(np.isfinite(coef)):
            raise ValueError("aim_lsf_calibration has missing or duplicate coefficients")
        pidx = ji * nt + ti
        if not np.array_equal(pidx, col["param_index"]):
            raise ValueError("aim_lsf_calibration param_index disagrees with basis/term layout")
        lens = pa.compute.list_value_length(table.column("covariance")).to_numpy(
            zero_copy_only=False
        )
        cov = None
        if np.all(lens == npar):
            flat = table.column("covariance").combine_chunks().flatten().to_numpy()
            rows = flat.reshape(-1, npar)
            cov = np.empty((ccds.size, npar, npar))
            cov[ci, pidx] = rows
        elif np.any(lens != 0):
            raise ValueError("aim_lsf_calibration covariance rows must all be empty or full")
        n_windows = np.zeros(ccds.size, np.int64)
        n_windows[ci] = col["n_windows"]
        chi2 = np.full(ccds.size, np.nan)
        chi2[ci] = col["chi2_dof"]
        cpow = np.array([p for p, _ in terms])
        tpow = np.array([q for _, q in terms])
        return cls(
            ccds, coef, cpow, tpow, float(col["colour_ref_mag"][0]),
            int(col["time_ref_obmt_ns"][0]), cov, int(col["solution_id"][0]), basis,
            n_windows, chi2,
        )  # fmt: skip


def term_powers(
    colour_degree: int, time_degree: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Exponents of the terms: colour powers 0 … colour_degree, then time powers 1 … q."""
    if not (0 <= colour_degree <= 4 and 0 <= time_degree <= 2):
        raise ValueError(
            f"colour_degree must be 0 … 4 and time_degree 0 … 2, got {colour_degree}, {time_degree}"
        )
    cpow = list(range(colour_degree + 1)) + [0] * time_degree
    tpow = [0] * (colour_degree + 1) + list(range(1, time_degree + 1))
    return np.array(cpow, np.int64), np.array(tpow, np.int64)


def _monomials(
    dcol: NDArray[np.float64], dt_days: NDArray[np.float64], cpow: NDArray, tpow: NDArray
) -> NDArray[np.float64]:
    return dcol[:, None] ** cpow[None, :] * dt_days[:, None] ** tpow[None, :]
