"""The basic-angle variation: the series from fringe phases, its model and its jumps.

ΔΓ(t) is the difference of the two fields' pattern shifts. Its model is a sum of spin
harmonics ``C_k cos kΩ + S_k sin kΩ`` (Ω the heliotropic spin phase), a polynomial in time
for the slow drift, and steps at the jumps; a weighted linear least-squares fit gives
every coefficient with its formal error. Jumps are found one at a time where a step
best explains the residuals (a weighted two-segment t statistic from cumulative sums,
O(n)), placed at the sample that minimises the residual sum of squares nearby, added to
the model, and the model is refitted until no step stands out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

PIXEL_AL_UAS = 58_933.0
"""Along-scan pixel size on the sky (µas): a pattern shift s adds 2π s / (P · this) to φ."""

NS_PER_DAY = 86_400 * 10**9


def shift_uas(
    phase_rad: NDArray[np.float64], period_px: NDArray[np.float64]
) -> NDArray[np.float64]:
    return phase_rad * period_px * PIXEL_AL_UAS / (2 * np.pi)


@dataclass(frozen=True)
class BavSeries:
    obmt_ns: NDArray[np.int64]
    bav_uas: NDArray[np.float64]
    err_uas: NDArray[np.float64]
    image_id: NDArray[np.int64]


def bav_series(
    image_id: NDArray[np.int64],
    obmt_ns: NDArray[np.int64],
    fov: NDArray[np.integer],
    phase_rad: NDArray[np.float64],
    phase_err_rad: NDArray[np.float64],
    period_px: NDArray[np.float64],
    good: NDArray[np.bool_],
) -> BavSeries:
    """ΔΓ = shift(preceding) − shift(following) for images whose two fields are both good.

    A phase is known modulo 2π, and the two fields' periods differ, so each field's
    phases are unwrapped on their own, to within π of the field's median (a pattern
    moves by a few hundredths of a period in a day), before they become shifts.
    """
    keep = good & np.isfinite(phase_rad)
    p = keep & (fov == 0)
    f = keep & (fov == 1)
    ids, ip, jf = np.intersect1d(image_id[p], image_id[f], return_indices=True)
    sp, sf = np.flatnonzero(p)[ip], np.flatnonzero(f)[jf]
    s_p = shift_uas(_unwrap(phase_rad[sp]), period_px[sp])
    s_f = shift_uas(_unwrap(phase_rad[sf]), period_px[sf])
    bav = s_p - s_f
    err = np.hypot(
        shift_uas(phase_err_rad[sp], period_px[sp]), shift_uas(phase_err_rad[sf], period_px[sf])
    )
    order = np.argsort(obmt_ns[sp], kind="stable")
    return BavSeries(obmt_ns[sp][order], bav[order], err[order], ids[order])


def _unwrap(phase: NDArray[np.float64]) -> NDArray[np.float64]:
    if phase.size == 0:
        return phase
    centre = np.angle(np.mean(np.exp(1j * phase)))  # a circular mean: safe across ±π
    return centre + np.angle(np.exp(1j * (phase - centre)))


@dataclass(frozen=True)
class BavFit:
    """A fitted BAV model; coefficients in µas.

    ``drift`` holds, per segment, the polynomial coefficients in days since the segment's
    start (one segment unless the fit was given several). The harmonic coefficients are
    those at ``harmonic_ref_ns``; with ``harmonic_degree`` 1 they change linearly in time
    at the ``*_rate_uas_per_day`` (zero otherwise).
    """

    harmonics: int
    cos_uas: NDArray[np.float64]
    sin_uas: NDArray[np.float64]
    cos_err_uas: NDArray[np.float64]
    sin_err_uas: NDArray[np.float64]
    drift: NDArray[np.float64]
    jump_obmt_ns: NDArray[np.int64]
    jump_uas: NDArray[np.float64]
    jump_err_uas: NDArray[np.float64]
    t0_ns: int
    residual_uas: NDArray[np.float64]
    chi2: float
    dof: int
    harmonic_ref_ns: int = 0
    cos_rate_uas_per_day: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    sin_rate_uas_per_day: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    cos_rate_err_uas_per_day: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    sin_rate_err_uas_per_day: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    @property
    def amplitude_uas(self) -> NDArray[np.float64]:
        return np.hypot(self.cos_uas, self.sin_uas)

    @property
    def phase_rad(self) -> NDArray[np.float64]:
        return np.arctan2(self.sin_uas, self.cos_uas)


def _segment_of(t_ns: NDArray[np.int64], starts_ns: NDArray[np.int64]) -> NDArray[np.int64]:
    """Segment index of each time (times before the first start join the first segment)."""
    return np.maximum(np.searchsorted(starts_ns, t_ns, side="right") - 1, 0)


def _populated(
    t_ns: NDArray[np.int64], starts_ns: NDArray[np.int64], least: int
) -> NDArray[np.int64]:
    """Segment starts keeping only segments with ≥ ``least`` samples (the first always):
    a sparse segment's samples join the one before, so its own polynomial cannot make
    the system singular."""
    keep = [int(starts_ns[0])]
    counts = np.bincount(_segment_of(t_ns, starts_ns), minlength=starts_ns.size)
    keep += [int(s) for s, n in zip(starts_ns[1:], counts[1:], strict=True) if n >= least]
    return np.asarray(keep, dtype=np.int64)


def _design(
    t_ns: NDArray[np.int64],
    omega: NDArray[np.float64],
    harmonics: int,
    drift_degree: int,
    jumps_ns: NDArray[np.int64],
    starts_ns: NDArray[np.int64],
    harmonic_degree: int,
    ref_ns: int,
) -> NDArray[np.float64]:
    segment = _segment_of(t_ns, starts_ns)
    days = (t_ns - starts_ns[segment]) / NS_PER_DAY
    cols = []
    for i in range(starts_ns.size):
        inside = (segment == i).astype(np.float64)
        cols += [inside * days**d for d in range(drift_degree + 1)]
    cols += [(t_ns >= tj).astype(np.float64) for tj in jumps_ns]
    tau = (t_ns - ref_ns) / NS_PER_DAY
    for k in range(1, harmonics + 1):
        c, s = np.cos(k * omega), np.sin(k * omega)
        for d in range(harmonic_degree + 1):
            cols += [c * tau**d, s * tau**d]
    return np.stack(cols, axis=1)


def fit_bav(
    series: BavSeries,
    omega: NDArray[np.float64],
    *,
    harmonics: int = 8,
    drift_degree: int = 2,
    jumps_ns: NDArray[np.int64] | None = None,
    segments_ns: NDArray[np.int64] | None = None,
    harmonic_degree: int = 0,
) -> BavFit:
    """Weighted least squares of harmonics + drift polynomial + steps at ``jumps_ns``.

    ``segments_ns`` (start times) gives each segment its own drift polynomial: days
    processed separately each have their own zero point, so a week's fit must not
    assume one curve through all of them. ``harmonic_degree`` 1 lets the harmonic
    coefficients vary linearly over the span (referred to its middle, where the
    constant terms and the rates are nearly uncorrelated for evenly spread samples).
    """
    if harmonic_degree not in (0, 1):
        raise ValueError(f"harmonic_degree must be 0 or 1, not {harmonic_degree}")
    jumps = np.sort(np.asarray([] if jumps_ns is None else jumps_ns, dtype=np.int64))
    t = series.obmt_ns
    if t.size == 0:
        raise ValueError("no BAV samples to fit (every image flagged?)")
    t0 = int(t[0])
    starts = np.sort(np.asarray([t0] if segments_ns is None else segments_ns, dtype=np.int64))
    starts = _populated(t, starts, drift_degree + 2)
    ref = (int(t[0]) + int(t[-1])) // 2 if harmonic_degree else t0
    a = _design(t, omega, harmonics, drift_degree, jumps, starts, harmonic_degree, ref)
    w = 1.0 / series.err_uas
    aw = a * w[:, None]
    coef, *_ = np.linalg.lstsq(aw, series.bav_uas * w, rcond=None)
    cov = np.linalg.inv(aw.T @ aw)
    err = np.sqrt(np.diag(cov))
    resid = series.bav_uas - a @ coef
    nd = starts.size * (drift_degree + 1)
    nj = jumps.size
    h = coef[nd + nj :].reshape(harmonics, harmonic_degree + 1, 2)
    he = err[nd + nj :].reshape(harmonics, harmonic_degree + 1, 2)
    rates = (h[:, 1], he[:, 1]) if harmonic_degree else (np.zeros((harmonics, 2)),) * 2
    return BavFit(
        harmonics=harmonics,
        cos_uas=h[:, 0, 0],
        sin_uas=h[:, 0, 1],
        cos_err_uas=he[:, 0, 0],
        sin_err_uas=he[:, 0, 1],
        drift=coef[:nd],
        jump_obmt_ns=jumps,
        jump_uas=coef[nd : nd + nj],
        jump_err_uas=err[nd : nd + nj],
        t0_ns=t0,
        residual_uas=resid,
        chi2=float(((resid * w) ** 2).sum()),
        dof=int(t.size - a.shape[1]),
        harmonic_ref_ns=ref,
        cos_rate_uas_per_day=rates[0][:, 0],
        sin_rate_uas_per_day=rates[0][:, 1],
        cos_rate_err_uas_per_day=rates[1][:, 0],
        sin_rate_err_uas_per_day=rates[1][:, 1],
    )


def step_statistic(resid: NDArray[np.float64], err: NDArray[np.float64]) -> NDArray[np.float64]:
    """For a step before sample j (j = 1 … n−1): the weighted difference of the means
    after and before, in units of its error."""
    w = 1.0 / err**2
    cw = np.cumsum(w)[:-1]
    cr = np.cumsum(w * resid)[:-1]
    total_w, total_r = cw[-1] + w[-1], cr[-1] + w[-1] * resid[-1]
    left_mean = cr / cw
    right_w = total_w - cw
    right_mean = (total_r - cr) / right_w
    return (right_mean - left_mean) / np.sqrt(1.0 / cw + 1.0 / right_w)


def _best_position(resid: NDArray[np.float64], err: NDArray[np.float64], j: int, span: int) -> int:
    """The step position near ``j`` with the smallest weighted residual sum of squares."""
    lo, hi = max(1, j - span), min(resid.size - 1, j + span)
    seg_r, seg_e = resid[lo - 1 : hi + 1], err[lo - 1 : hi + 1]
    best, best_cost = j, np.inf
    for c in range(lo, hi + 1):
        k = c - (lo - 1)
        left, right = slice(0, k), slice(k, None)
        cost = 0.0
        for part in (left, right):
            ww = 1.0 / seg_e[part] ** 2
            if ww.size:
                mean = (ww * seg_r[part]).sum() / ww.sum()
                cost += (ww * (seg_r[part] - mean) ** 2).sum()
        if cost < best_cost:
            best, best_cost = c, cost
    return best


def detect_jumps(
    series: BavSeries,
    omega: NDArray[np.float64],
    *,
    harmonics: int = 8,
    drift_degree: int = 2,
    threshold: float = 8.0,
    max_jumps: int = 50,
    refine_span: int = 50,
    segments_ns: NDArray[np.int64] | None = None,
    harmonic_degree: int = 0,
) -> BavFit:
    """Fit the model, adding jumps while a step stands out by more than ``threshold`` σ.

    The default threshold keeps false alarms away over a week of data (the largest
    step statistic of pure noise over 5·10⁵ samples is about 5), while a jump of 5
    per-sample σ sits hundreds of σ above it.
    """
    model = {
        "harmonics": harmonics,
        "drift_degree": drift_degree,
        "segments_ns": segments_ns,
        "harmonic_degree": harmonic_degree,
    }
    jumps: list[int] = []
    fit = fit_bav(series, omega, **model)
    t = series.obmt_ns
    # a step at a segment's first sample is that segment's own zero point already
    boundary = np.zeros(max(t.size - 1, 0), dtype=bool)
    if segments_ns is not None and t.size > 1:
        first = np.searchsorted(t, np.asarray(segments_ns, dtype=np.int64), side="left")
        first = first[(first >= 1) & (first < t.size)]
        boundary[first - 1] = True
    for _ in range(max_jumps):
        stat = np.abs(step_statistic(fit.residual_uas, series.err_uas))
        if stat.size == 0:
            break
        stat[boundary] = 0.0
        j = int(np.argmax(stat)) + 1
        if stat[j - 1] < threshold:
            break
        refined = _best_position(fit.residual_uas, series.err_uas, j, refine_span)
        j = j if boundary[refined - 1] else refined
        if int(t[j]) in jumps:
            break
        jumps.append(int(t[j]))
        fit = fit_bav(series, omega, jumps_ns=np.array(jumps, dtype=np.int64), **model)
    return fit
