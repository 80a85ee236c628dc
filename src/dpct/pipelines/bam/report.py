"""BAM daily and weekly reports: series an analyst reads (and tests assert), PNG and HTML.

The numbers go into the ``bam_report`` product (one row per point of each series), so
the report is queryable and comparable from day to day; the figure and the page are
written next to the job's log for people.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

BIN_NS = 3600 * 10**9
"""Series binned per hour of OBMT: ~3,300 images a bin at full rate."""

REPORT_COLUMNS = [
    ("series", "string", "", "which series the point belongs to"),
    ("x", "float64", "", "abscissa (OBMT ns, harmonic k or temperature K: see note)"),
    ("y", "float64", "uas", "value"),
    ("y_err", "float64", "uas", "its error (0 when none)"),
    ("note", "string", "", "units of x and y"),
]
"""Columns of the daily and weekly report products: one row per point of a series."""
COLUMNS = tuple(c[0] for c in REPORT_COLUMNS)


def binned(
    t: NDArray[np.int64], y: NDArray[np.float64], w: NDArray[np.float64], bin_ns: int = BIN_NS
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Weighted means per bin (bin centre, mean, its error)."""
    if t.size == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    b = (t - t.min()) // bin_ns
    sw = np.bincount(b, weights=w)
    keep = sw > 0
    mean = np.bincount(b, weights=w * y)[keep] / sw[keep]
    centre = t.min() + np.flatnonzero(keep) * bin_ns + bin_ns // 2
    return centre.astype(np.int64), mean, 1.0 / np.sqrt(sw[keep])


Row = tuple[str, float, float, float, str]


def as_table(rows: list[Row]) -> pa.Table:
    return pa.table({c: [r[k] for r in rows] for k, c in enumerate(COLUMNS)})


def make_report(
    bav: pa.Table,
    harmonics: pa.Table,
    jumps: pa.Table,
    hk: pa.Table,
    *,
    bin_ns: int = BIN_NS,
    label: str = "hourly",
) -> tuple[list[Row], dict[str, object]]:
    """The report rows (series averaged per ``bin_ns``, named ``label``), and a summary
    dict for the page and the log."""
    rows: list[Row] = []
    t = bav.column("obmt_ns").to_numpy()
    err = bav.column("err_uas").to_numpy()
    w = 1.0 / err**2
    for name in ("bav_uas", "model_uas", "residual_uas"):
        centre, mean, mean_err = binned(t, bav.column(name).to_numpy(), w, bin_ns)
        rows += [(f"{label} {name}", float(c), float(m), float(e), "OBMT ns")
                 for c, m, e in zip(centre, mean, mean_err, strict=True)]  # fmt: skip
    for k, amp, ce, se in zip(
        *(harmonics.column(c).to_pylist() for c in ("k", "amplitude_uas", "cos_err_uas",
                                                      "sin_err_uas")),
        strict=True,
    ):  # fmt: skip
        rows.append(("harmonic amplitude", float(k), amp, float(np.hypot(ce, se)), "µas"))
    for tj, size, e in zip(
        *(jumps.column(c).to_pylist() for c in ("obmt_ns", "jump_uas", "err_uas")), strict=True
    ):
        rows.append(("jump", float(tj), size, e, "OBMT ns, µas"))
    resid = bav.column("residual_uas").to_numpy() / err
    summary: dict[str, object] = {
        "images": int(t.size),
        "normalised residual std": float(np.std(resid)) if resid.size else float("nan"),
        "jumps": int(jumps.num_rows),
    }
    if hk.num_rows and t.size:
        # BAV against the BAM bench temperature: hourly means side by side
        hk_t = hk.column("obmt_ns").to_numpy()
        temp = hk.column("bam_bench_temp_k").to_numpy()
        centre, mean_bav, _ = binned(t, bav.column("bav_uas").to_numpy(), w, bin_ns)
        temp_at = np.interp(centre, hk_t, temp)
        rows += [("bav vs bam bench temperature", float(k), float(b), 0.0, "K, µas")
                 for k, b in zip(temp_at, mean_bav, strict=True)]  # fmt: skip
        if centre.size > 2 and np.std(temp_at) > 0:
            summary["bav–temperature correlation"] = float(np.corrcoef(temp_at, mean_bav)[0, 1])
    return rows, summary


def write_figure(
    report: pa.Table, path: Path, *, bin_ns: int = BIN_NS, label: str = "hourly"
) -> None:
    """BAV and model per bin, residuals, harmonic amplitudes, BAV against temperature."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    def series(name: str) -> tuple[NDArray, NDArray, NDArray]:
        part = report.filter(pc.equal(report.column("series"), name))
        return tuple(part.column(c).to_numpy() for c in ("x", "y", "y_err"))  # type: ignore[return-value]

    fig = Figure(figsize=(14, 8), layout="constrained")
    axes = fig.subplots(2, 2)
    x, y, _ = series(f"{label} bav_uas")
    _, ym, _ = series(f"{label} model_uas")
    origin = x.min() - bin_ns / 2 if x.size else 0.0  # the start of the first bin
    hours = (x - origin) / 3.6e12
    axes[0, 0].plot(hours, y, "o", ms=3, label=f"ΔΓ ({label} mean)")
    axes[0, 0].plot(hours, ym, "-", label="model")
    for tj in series("jump")[0]:
        axes[0, 0].axvline((tj - origin) / 3.6e12, color="red", ls=":")
    axes[0, 0].set(xlabel="hours", ylabel="µas", title="basic-angle variation (red: jumps)")
    axes[0, 0].legend()
    x, y, e = series(f"{label} residual_uas")
    axes[0, 1].errorbar((x - origin) / 3.6e12, y, e, fmt="o", ms=3)
    axes[0, 1].set(xlabel="hours", ylabel="µas", title=f"residuals ({label} mean)")
    k, amp, e = series("harmonic amplitude")
    axes[1, 0].bar(k, amp, yerr=e)
    axes[1, 0].set(xlabel="k", ylabel="µas", yscale="log", title="spin harmonic amplitudes")
    temp, b, _ = series("bav vs bam bench temperature")
    axes[1, 1].plot(temp, b, "o", ms=3)
    axes[1, 1].set(xlabel="BAM bench temperature (K)", ylabel="µas", title="ΔΓ vs temperature")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def write_page(summary: dict[str, object], figure: Path, path: Path, title: str) -> None:
    items = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in summary.items()
    )
    path.write_text(
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1><table>{items}</table>"
        f"<img src='{html.escape(figure.name)}' alt='BAM report figure'>"
    )
