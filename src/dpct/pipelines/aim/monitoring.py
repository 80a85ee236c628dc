"""AIM monitoring: per CCD and day, the quantities that say the instrument is healthy.

``aim.monitor`` reads the day's image parameters, windows and LSF calibration (and the
previous calibration) and stores one row per CCD and quantity in ``aim_monitoring``,
with its limits; a value outside them raises an ``alarm.aim_limit`` event. Quantities
are relative to the other CCDs of the same hours where the sky or the star mix would
otherwise dominate (background, zero-point), and against the previous calibration for
the LSF width (in units of the two calibrations' combined formal error), so a clean day
sits near zero whatever the pointing and the number of windows.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray
from pydantic import BaseModel, Field

from dpct.datamodel import DataSpec, data_type
from dpct.pipelines.aim._image_params import BAD_FLAGS
from dpct.pipelines.aim._lsf_basis import DAY_NS, LsfCalibration, _monomials, sampled_basis
from dpct.tasks import JobContext, NoData, task

FULL_GATE_LINES = 4500
CCD_INTEGRATION_S = FULL_GATE_LINES * 982.8e-6
"""A full AF CCD transit: 4,500 TDI lines of 982.8 µs (docs/science.md)."""
BACKGROUND_BIN_NS = 2 * 3600 * 10**9
"""A CCD's background excess is its median per 2 h: enough windows to be steady."""
SKY_BIN_NS = 300 * 10**9
"""The sky reference of a field: all CCDs' windows of the same 5 minutes (1.5° of scan)."""

data_type(
    "aim_monitoring",
    1,
    [
        ("start_ns", "int64", "ns", "start of the day monitored"),
        ("ccd_index", "int16", "", "AF CCD"),
        ("quantity", "string", "", "what is monitored (docs/aim.md)"),
        ("value", "float64", "", "its value"),
        ("low", "float64", "", "lower limit (−inf: none)"),
        ("high", "float64", "", "upper limit (+inf: none)"),
        ("alarm", "bool", "", "value outside [low, high]"),
        ("unit", "string", "", "unit of value and limits"),
    ],
    description="AIM monitoring: per CCD and day, LSF, background, zero-point, residuals",
    time_column="start_ns",
    supersede=True,
)

UNITS = {
    "lsf_width_px": "px",
    "lsf_width_change": "",
    "lsf_width_change_sigma": "σ",
    "background_e": "e-",
    "background_excess": "",
    "zero_point_mag": "mag",
    "zero_point_offset_mag": "mag",
    "centroid_offset_px": "px",
    "centroid_scatter_px": "px",
    "chi2_dof": "",
    "rejected_fraction": "",
}


class MonitorConfig(BaseModel, extra="forbid"):
    limits: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "lsf_width_change_sigma": (-5.0, 5.0),
            "background_excess": (-0.3, 0.3),
            "zero_point_offset_mag": (-0.05, 0.05),
            "centroid_offset_px": (-0.1, 0.1),
            "centroid_scatter_px": (0.0, 0.6),
            "chi2_dof": (0.8, 1.5),
            "rejected_fraction": (0.0, 0.15),
        },
        description="quantity → (low, high); a value outside raises an alarm",
    )
    min_windows: int = Field(20, ge=1, description="fewer windows on a CCD: not monitored")


def lsf_width_px(
    calibration: LsfCalibration, ccd: int, colour: float, obmt_ns: int
) -> tuple[float, float]:
    """RMS width of the continuous LSF and its formal error.

    The width is the pixel-integrated profile's second moment minus the pixel's own
    1/12. The profile is linear in the basis coefficients, so are its moments, and the
    coefficients' covariance propagates to the width exactly to first order (error 0
    when the calibration has no covariance, e.g. the default LSF).
    """
    x = np.linspace(-10.0, 10.0, 801)
    basis = sampled_basis(x, calibration.basis)  # (x, j): P(x) = B₀(x) + Σ_j a_j B_j(x)
    row = int(calibration.rows_of(np.array([ccd]))[0])
    m = _monomials(
        np.array([colour - calibration.colour_ref_mag]),
        np.array([(obmt_ns - calibration.time_ref_obmt_ns) / DAY_NS]),
        calibration.colour_power,
        calibration.time_power,
    )[0]
    a = calibration.coefficients[row] @ m
    p = basis[:, 0] + basis[:, 1:] @ a
    s0, s1, s2 = p.sum(), (p * x).sum(), (p * x * x).sum()
    var = s2 / s0 - (s1 / s0) ** 2 - 1.0 / 12.0
    width = float(np.sqrt(max(var, 1e-12)))
    if calibration.covariance is None:
        return width, 0.0
    d0, d1, d2 = ((basis[:, 1:] * (x**k)[:, None]).sum(axis=0) for k in (0, 1, 2))
    grad_var = (d2 * s0 - s2 * d0) / s0**2 - 2 * (s1 / s0) * (d1 * s0 - s1 * d0) / s0**2
    nb, nt = calibration.coefficients.shape[1:]
    jac = np.zeros((nb, nb * nt))  # a_j = Σ_t C[j, t] m_t, C flattened as j·nt + t
    for j in range(nb):
        jac[j, j * nt : (j + 1) * nt] = m
    cov_a = jac @ calibration.covariance[row] @ jac.T
    err_var = float(np.sqrt(max(grad_var @ cov_a @ grad_var, 0.0)))
    return width, err_var / (2 * width)


def _median_by(
    keys: NDArray[np.int64], values: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
    """Median and count of ``values`` per distinct key (keys sorted): one sort, not one
    pass over a day's windows per key."""
    order = np.argsort(keys, kind="stable")
    k, v = keys[order], values[order]
    unique, first, counts = np.unique(k, return_index=True, return_counts=True)
    medians = np.array([np.median(v[a : a + n]) for a, n in zip(first, counts, strict=True)])
    return unique, medians, counts


def monitor_day(
    params: pa.Table,
    windows: pa.Table,
    calibration: LsfCalibration | None,
    reference: LsfCalibration | None,
    start_ns: int,
    config: MonitorConfig,
) -> pa.Table:
    """The monitoring rows of one day (see the module doc for what each quantity means)."""
    params = params.sort_by("window_id")
    windows = windows.sort_by("window_id")
    if not params.column("window_id").equals(windows.column("window_id")):
        both = np.intersect1d(params.column("window_id"), windows.column("window_id"))
        params = params.filter(pa.array(np.isin(params.column("window_id"), both)))
        windows = windows.filter(pa.array(np.isin(windows.column("window_id"), both)))
    col = {c: params.column(c).to_numpy() for c in params.column_names}
    ccd = col["ccd_index"].astype(np.int64)
    good = (col["flags"] & BAD_FLAGS) == 0
    gate = windows.column("gate_lines").to_numpy()
    n = windows.column("n_samples").to_numpy()
    truncated = windows.column("truncated").to_numpy(zero_copy_only=False)
    g = windows.column("g_mag").to_numpy().astype(np.float64)
    colour = windows.column("bp_rp_mag").to_numpy().astype(np.float64)
    t = col["obmt_ns"]
    rows: list[tuple[int, str, float]] = []

    # background: ungated windows against the sky of the same field and minutes on all
    # CCDs (the sky changes by factors along a scan), then per CCD and 2 h
    bg_use = good & (gate == FULL_GATE_LINES)
    background = col["background_e"].astype(np.float64)
    fov = windows.column("fov").to_numpy().astype(np.int64)
    sky_key = ((t - start_ns) // SKY_BIN_NS) * 2 + fov
    sky_keys, sky, _ = _median_by(sky_key[bg_use], background[bg_use])
    at = np.minimum(np.searchsorted(sky_keys, sky_key), max(sky_keys.size - 1, 0))
    sky_at = np.where(sky_keys[at] == sky_key, sky[at], np.nan) if sky_keys.size else np.nan
    bg_use &= sky_at > 0
    ratio = np.where(bg_use, background / np.where(sky_at > 0, sky_at, 1.0), np.nan)
    bins = (t - start_ns) // BACKGROUND_BIN_NS
    # zero-point: G + 2.5 log10(electrons per second of full integration), S/N ≥ 20
    snr = col["flux_e"] / np.maximum(col["flux_err_e"], 1e-30)
    zp_use = good & (snr >= 20) & (col["flux_e"] > 0)
    zp = np.full(t.size, np.nan)
    zp[zp_use] = g[zp_use] + 2.5 * np.log10(
        col["flux_e"][zp_use] / (CCD_INTEGRATION_S * gate[zp_use] / FULL_GATE_LINES)
    )
    zp_all = float(np.median(zp[zp_use])) if zp_use.any() else np.nan
    mid = start_ns + 12 * 3600 * 10**9
    ref_colour = float(np.median(colour)) if colour.size else 1.0
    for c in np.unique(ccd):
        on = ccd == c
        if on.sum() < config.min_windows:
            continue
        c = int(c)
        rows.append((c, "rejected_fraction", float(1 - good[on].mean())))
        use = on & good
        if use.sum() < config.min_windows:
            continue
        # pooled: Σχ² / Σdof is 1 for a right model (a median of χ²/dof is not, at 9 dof)
        chi2_dof = col["chi2"][use].sum(dtype=np.float64) / max(int(col["dof"][use].sum()), 1)
        rows.append((c, "chi2_dof", float(chi2_dof)))
        whole = use & ~truncated
        offset = col["centroid_px"][whole] - (n[whole] - 1) / 2.0
        if offset.size:
            rows.append((c, "centroid_offset_px", float(np.median(offset))))
            mad = np.median(np.abs(offset - np.median(offset)))
            rows.append((c, "centroid_scatter_px", float(1.4826 * mad)))
        b = on & bg_use
        if b.sum():
            rows.append((c, "background_e", float(np.median(col["background_e"][b]))))
            _, per_bin, counts = _median_by(bins[b], ratio[b])
            excess = list(per_bin[counts >= 10] - 1)
            if excess:
                rows.append((c, "background_excess", float(max(excess, key=abs))))
        z = on & zp_use
        if z.sum():
            value = float(np.median(zp[z]))
            rows.append((c, "zero_point_mag", value))
            rows.append((c, "zero_point_offset_mag", value - zp_all))
        if calibration is not None and c in set(calibration.ccd_index.tolist()):
            width, err = lsf_width_px(calibration, c, ref_colour, mid)
            rows.append((c, "lsf_width_px", width))
            if reference is not None and c in set(reference.ccd_index.tolist()):
                before, err_before = lsf_width_px(reference, c, ref_colour, mid)
                rows.append((c, "lsf_width_change", width / before - 1))
                sigma = float(np.hypot(err, err_before))
                if sigma > 0:
                    rows.append((c, "lsf_width_change_sigma", (width - before) / sigma))
    low = [config.limits.get(q, (-np.inf, np.inf))[0] for _, q, _ in rows]
    high = [config.limits.get(q, (-np.inf, np.inf))[1] for _, q, _ in rows]
    value = [v for _, _, v in rows]
    return pa.table(
        {
            "start_ns": pa.array([start_ns] * len(rows), pa.int64()),
            "ccd_index": pa.array([c for c, _, _ in rows], pa.int16()),
            "quantity": [q for _, q, _ in rows],
            "value": value,
            "low": low,
            "high": high,
            "alarm": [not (lo <= v <= hi) for v, lo, hi in zip(value, low, high, strict=True)],
            "unit": [UNITS[q] for _, q, _ in rows],
        }
    )


def _calibration_of(table: pa.Table) -> LsfCalibration | None:
    return LsfCalibration.from_table(table) if table.num_rows else None


@task(
    "aim.monitor",
    inputs={
        "params": "aim_image_params",
        "windows": "aim_windows",
        "calibration": "aim_lsf_calibration",
        "reference": "aim_lsf_calibration@before",
    },
    outputs={"monitoring": "aim_monitoring"},
    config=MonitorConfig,
)
def monitor(
    params: pa.Table,
    windows: pa.Table,
    calibration: pa.Table,
    reference: pa.Table,
    config: MonitorConfig,
    spec: DataSpec,
    log: logging.Logger,
    job: JobContext,
    alarms: list[tuple[str, str]],
) -> pa.Table:
    """The day's monitoring rows; alarms for values outside limits; PNG and HTML report."""
    if params.num_rows == 0:
        raise NoData(f"no image parameters in {spec}")
    table = monitor_day(
        params, windows, _calibration_of(calibration), _calibration_of(reference),
        spec.start_ns, config,
    )  # fmt: skip
    for r in table.filter(table.column("alarm")).to_pylist():
        alarms.append(
            (
                "aim_limit",
                f"{spec.text} CCD {r['ccd_index']}: {r['quantity']} = {r['value']:.4g} "
                f"{r['unit']} outside [{r['low']:g}, {r['high']:g}]",
            )
        )
    log.info("%d monitored values, %d outside limits", table.num_rows, len(alarms))
    figure = job.report_path("aim_report.png")
    write_figure(table, figure)
    page = job.report_path("aim_report.html")
    write_page(table, figure, page, f"AIM daily report {spec.text}")
    return table


def write_figure(table: pa.Table, path: Path) -> None:
    """One panel per limited quantity against CCD: values, limits, alarms in red."""
    from matplotlib.figure import Figure

    names = [q for q in UNITS if q in set(table.column("quantity").to_pylist())]
    cols = 3
    fig = Figure(figsize=(15, 3.2 * ((len(names) + cols - 1) // cols)), layout="constrained")
    axes = fig.subplots((len(names) + cols - 1) // cols, cols, squeeze=False).ravel()
    quantity = np.asarray(table.column("quantity").to_pylist())
    for ax, name in zip(axes, names, strict=False):
        part = table.filter(pa.array(quantity == name))
        ccd = part.column("ccd_index").to_numpy()
        value = part.column("value").to_numpy()
        alarm = part.column("alarm").to_numpy(zero_copy_only=False)
        ax.plot(ccd[~alarm], value[~alarm], "o", ms=3)
        ax.plot(ccd[alarm], value[alarm], "o", ms=5, color="red")
        for limit in (part.column("low")[0].as_py(), part.column("high")[0].as_py()):
            if np.isfinite(limit):
                ax.axhline(limit, color="grey", ls="--", lw=0.8)
        ax.set(xlabel="CCD", title=f"{name} ({UNITS[name]})" if UNITS[name] else name)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def write_page(table: pa.Table, figure: Path, path: Path, title: str) -> None:
    alarms = table.filter(table.column("alarm")).to_pylist()
    items = "".join(
        f"<tr><td>{r['ccd_index']}</td><td>{html.escape(r['quantity'])}</td>"
        f"<td>{r['value']:.4g}</td><td>[{r['low']:g}, {r['high']:g}]</td></tr>"
        for r in alarms
    )
    path.write_text(
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1><p>{table.num_rows} values, {len(alarms)} outside limits</p>"
        f"<table><tr><th>CCD</th><th>quantity</th><th>value</th><th>limits</th></tr>{items}"
        f"</table><img src='{html.escape(figure.name)}' alt='AIM report figure'>"
    )
