"""The GSR report: numbers an operator checks after a solve, and one figure.

Convergence (did LSQR stop on its tolerances, was it resumed), post-fit residuals (are
the observation errors right: the unit-weight error and the normalised residuals'
spread should be about 1) and, for simulated data, the comparison with the truth.

The truth is compared in the solution's gauge: the solution satisfies "no net rotation
and no net spin" with respect to the reference catalogue, while the simulated truth
carries whatever rotation its random offsets sum to, which no data can see. The best-fit
rotation (positions) and spin (proper motions) of solution − truth are removed first,
using the catalogue positions, as in Gaia's own frame alignments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

ASTRO_COLUMNS = ("ra_cosdec_mas", "dec_mas", "parallax_mas", "pmra_masyr", "pmdec_masyr")
ASTRO_UNITS = ("mas", "mas", "mas", "mas/yr", "mas/yr")
ASTRO_DOC = ("Δα* = Δα cos δ", "Δδ", "Δϖ", "Δμα*", "Δμδ")


def latest(table: pa.Table, job: int) -> pa.Table:
    """The rows a given solve wrote: a range may hold the products of several reruns."""
    if table.num_rows == 0:
        return table
    return table.filter(pc.equal(table.column("solve_job"), job))


def remove_frame(
    diff: NDArray[np.float64], ra: NDArray[np.float64], dec: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``diff`` (n, 5) less its best-fit rotation (columns 0-1) and spin (columns 3-4).

    Returns the corrected differences and the removed (rotation, spin) vectors (mas,
    mas/yr). A rotation ω moves a star by Δα* = ω·e_δ, Δδ = −ω·e_α.
    """
    out = diff.copy()
    sa, ca, sd, cd = np.sin(ra), np.cos(ra), np.sin(dec), np.cos(dec)
    e_ra = np.stack([-sa, ca, np.zeros_like(ra)], axis=1)
    e_dec = np.stack([-sd * ca, -sd * sa, cd], axis=1)
    design = np.concatenate([e_dec, -e_ra])
    found = np.zeros((2, 3))
    for k, off in enumerate((0, 3)):
        data = np.concatenate([diff[:, off], diff[:, off + 1]])
        omega = np.linalg.lstsq(design, data, rcond=None)[0]
        out[:, off] -= e_dec @ omega
        out[:, off + 1] += e_ra @ omega
        found[k] = omega
    return out, found


def _column(table: pa.Table, name: str) -> NDArray[np.float64]:
    return table.column(name).to_numpy().astype(np.float64)


def _summary_value(summary: pa.Table, name: str) -> tuple[float, str]:
    names = summary.column("name").to_pylist()
    if name not in names:
        return math.nan, ""
    k = names.index(name)
    return float(summary.column("value")[k].as_py()), summary.column("text")[k].as_py()


def make_report(
    summary: pa.Table,
    convergence: pa.Table,
    astrometric: pa.Table,
    residuals: pa.Table,
    catalogue: pa.Table,
    truth: pa.Table,
    *,
    max_unit_weight_error: float = 1.2,
    plot_path: Path | None = None,
    previous: pa.Table | None = None,
) -> pa.Table:
    """The ``gsr_report`` rows of one solve's products (and the figure, if asked)."""
    rows: list[tuple[str, str, float, str, str]] = []

    def add(section: str, quantity: str, value: float, unit: str = "", note: str = "") -> None:
        rows.append((section, quantity, float(value), unit, note))

    # convergence
    itn, reason = _summary_value(summary, "istop")
    add("convergence", "stopping reason", itn, "", reason)
    for name in ("iterations", "r1norm", "arnorm", "acond", "seconds"):
        add("convergence", name, _summary_value(summary, name)[0], "s" if name == "seconds" else "")
    starts: list[int] = []
    if convergence.num_rows:
        conv = convergence.sort_by("iteration")
        starts = sorted({int(s) for s in conv.column("attempt_start").to_numpy() if s > 0})
    add(
        "convergence",
        "resumed at",
        starts[-1] if starts else 0,
        "iteration",
        ", ".join(map(str, starts)) or "not resumed",
    )

    # residuals
    uwe = _summary_value(summary, "unit_weight_error")[0]
    flag = "above the limit: check the observation errors" if uwe > max_unit_weight_error else ""
    add("residuals", "unit-weight error", uwe, "", flag)
    z = _column(residuals, "normalised") if residuals.num_rows else np.zeros(0)
    if z.size:
        add("residuals", "observations", z.size)
        add("residuals", "normalised mean", z.mean())
        rows_used = _summary_value(summary, "rows")[0]
        dof = rows_used - _summary_value(summary, "unknowns")[0]
        expected = math.sqrt(dof / rows_used) if rows_used > 0 and dof > 0 else math.nan
        add("residuals", "normalised std", z.std(), "", f"expected {expected:.4f}: sqrt(dof/rows)")
        add("residuals", "fraction |z| > 3", np.mean(np.abs(z) > 3), "", "Gaussian: 0.0027")
        add("residuals", "rms", np.sqrt(np.mean(_column(residuals, "residual_mas") ** 2)), "mas")

    # solution
    add("solution", "stars", astrometric.num_rows)
    for name, unit in zip(ASTRO_COLUMNS, ASTRO_UNITS, strict=True):
        if astrometric.num_rows:
            sigma = np.median(_column(astrometric, f"sigma_{name}"))
            add("solution", f"median sigma {name}", sigma, unit)

    # the previous solution of the range (an earlier solve job), if any
    if previous is not None and previous.num_rows and astrometric.num_rows:
        _previous(astrometric, previous, add)

    # truth
    pulls = _truth(astrometric, catalogue, truth, add)

    if plot_path is not None:
        _plot(convergence, z, pulls, starts, plot_path)
        add("plot", "figure", math.nan, "", str(plot_path))
    names = ("section", "quantity", "value", "unit", "note")
    return pa.table({n: [r[k] for r in rows] for k, n in enumerate(names)})


def _previous(astrometric: pa.Table, previous: pa.Table, add: Callable[..., None]) -> None:
    """How far the solution moved from the previous one, in mas and in its own sigmas."""
    job = int(previous.column("solve_job")[0].as_py())
    ids, here, there = np.intersect1d(
        astrometric.column("source_id").to_numpy(),
        previous.column("source_id").to_numpy(),
        return_indices=True,
    )
    add("previous", "previous solve job", job, "", "the latest earlier solve of this range")
    add("previous", "stars in common", ids.size)
    if not ids.size:
        return
    for name, unit in zip(ASTRO_COLUMNS, ASTRO_UNITS, strict=True):
        diff = (
            _column(astrometric, f"delta_{name}")[here] - _column(previous, f"delta_{name}")[there]
        )
        sigma = _column(astrometric, f"sigma_{name}")[here]
        add("previous", f"rms change {name}", np.sqrt(np.mean(diff**2)), unit)
        with np.errstate(invalid="ignore", divide="ignore"):
            add("previous", f"rms change / sigma {name}", np.sqrt(np.nanmean((diff / sigma) ** 2)))


def _truth(
    astrometric: pa.Table, catalogue: pa.Table, truth: pa.Table, add: Callable[..., None]
) -> NDArray | None:
    """Rows of the truth section; the pulls, or None without a usable truth."""
    if truth.num_rows == 0 or astrometric.num_rows == 0:
        return None
    sol_id = astrometric.column("source_id").to_numpy()
    t_id, first = np.unique(truth.column("source_id").to_numpy(), return_index=True)
    pos = np.minimum(np.searchsorted(t_id, sol_id), t_id.size - 1)
    hit = t_id[pos] == sol_id
    if not hit.any():
        add("truth", "stars compared", 0, "", "the truth holds none of the solved stars")
        return None
    rows = first[pos[hit]]
    x = np.stack([_column(astrometric, f"delta_{n}")[hit] for n in ASTRO_COLUMNS], axis=1)
    s = np.stack([_column(astrometric, f"sigma_{n}")[hit] for n in ASTRO_COLUMNS], axis=1)
    t = np.stack([_column(truth, f"delta_{n}")[rows] for n in ASTRO_COLUMNS], axis=1)
    diff = x - t
    note = "frame rotation and spin not removed (no catalogue)"
    if catalogue.num_rows:
        c_id, c_first = np.unique(catalogue.column("source_id").to_numpy(), return_index=True)
        cpos = np.minimum(np.searchsorted(c_id, sol_id[hit]), c_id.size - 1)
        if np.all(c_id[cpos] == sol_id[hit]):
            k = c_first[cpos]
            ra = np.deg2rad(_column(catalogue, "ra_deg")[k])
            dec = np.deg2rad(_column(catalogue, "dec_deg")[k])
            diff, frame = remove_frame(diff, ra, dec)
            note = "after removing the best-fit frame rotation and spin"
            add("truth", "frame rotation removed", np.linalg.norm(frame[0]), "mas")
            add("truth", "frame spin removed", np.linalg.norm(frame[1]), "mas/yr")
    pulls = diff / s
    add("truth", "stars compared", int(hit.sum()), "", note)
    for k, (name, unit) in enumerate(zip(ASTRO_COLUMNS, ASTRO_UNITS, strict=True)):
        add("truth", f"rms difference {name}", np.sqrt(np.mean(diff[:, k] ** 2)), unit)
        add("truth", f"pull std {name}", pulls[:, k].std())
        add("truth", f"pull mean {name}", pulls[:, k].mean())
    add("truth", "pull std (all astrometric)", pulls.std())
    return pulls


def _plot(
    convergence: pa.Table,
    z: NDArray[np.float64],
    pulls: NDArray[np.float64] | None,
    starts: list[int],
    path: Path,
) -> None:
    """Three panels: residual norms per iteration, normalised residuals, pulls."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    panels = 3 if pulls is not None else 2
    fig = Figure(figsize=(5 * panels, 4), layout="constrained")
    axes = fig.subplots(1, panels)
    ax = axes[0]
    if convergence.num_rows:
        conv = convergence.sort_by("iteration")
        it = conv.column("iteration").to_numpy()
        ax.semilogy(it, conv.column("r1norm").to_numpy(), label="‖r‖")
        ax.semilogy(it, conv.column("arnorm").to_numpy(), label="‖Aᵀr‖")
        for s in starts:
            ax.axvline(s, color="grey", ls=":", lw=1)
        ax.legend()
    ax.set(xlabel="LSQR iteration", title="convergence (dotted: resumed)")
    gauss = np.linspace(-5, 5, 201)
    ax = axes[1]
    if z.size:
        ax.hist(np.clip(z, -6, 6), bins=60, density=True, alpha=0.7)
    ax.plot(gauss, np.exp(-0.5 * gauss**2) / math.sqrt(2 * math.pi), "k-", lw=1)
    ax.set(xlabel="residual / σ", title=f"normalised residuals (n = {z.size})")
    if pulls is not None:
        ax = axes[2]
        for k, name in enumerate(ASTRO_COLUMNS):
            ax.hist(np.clip(pulls[:, k], -6, 6), bins=40, density=True, histtype="step",
                    label=name)  # fmt: skip
        ax.plot(gauss, np.exp(-0.5 * gauss**2) / math.sqrt(2 * math.pi), "k-", lw=1)
        ax.legend(fontsize="small")
        ax.set(xlabel="(solution − truth) / σ", title="astrometric pulls")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
