"""``dpct sim``: simulated Gaia telemetry, written as upstream deliveries."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dpct.cli._options import at_least
from dpct.cli._render import console, emit_json, table
from dpct.errors import BadInput
from dpct.sim import PRODUCTS, SimConfig, Simulator
from dpct.sim.delivery import write_days

sim_app = typer.Typer(help="The Gaia-like simulator: telemetry deliveries with truth.")


def _config(seed: int, scale: float, products: str | None) -> SimConfig:
    fields: dict[str, object] = {"seed": seed, "scale": scale}
    if products:
        fields["products"] = tuple(p.strip() for p in products.split(",") if p.strip())
    try:
        return SimConfig(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        where = f"simulator setting {first['loc'][0]!r}" if first["loc"] else "simulator settings"
        raise BadInput(f"{where}: {first['msg'].removeprefix('Value error, ')}") from err


@sim_app.command("run")
def sim_run(
    day: Annotated[
        int,
        typer.Option(help="First OBMT day (days of 86400 s since OBMT 0).", callback=at_least(0)),
    ],
    out: Annotated[Path, typer.Option(help="Folder that receives one delivery per day.")],
    days: Annotated[int, typer.Option(help="Number of days.", callback=at_least(1))] = 1,
    hours: Annotated[
        float | None,
        typer.Option(help="Only the first H hours of each day.", callback=at_least(0.25, 24)),
    ] = None,
    seed: Annotated[int, typer.Option(callback=at_least(0))] = 0,
    scale: Annotated[
        float, typer.Option(help="Volume scale: 1 is a full day (1.5e7 AF windows).")
    ] = 0.01,
    products: Annotated[
        str | None, typer.Option(help=f"Comma-separated subset of {', '.join(PRODUCTS)}.")
    ] = None,
    workers: Annotated[int, typer.Option(callback=at_least(1))] = max(
        1, min(4, os.cpu_count() or 1)
    ),
    truth: Annotated[bool, typer.Option(help="Also write truth beside each delivery.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Simulate days of telemetry into delivery folders (files + manifest.json).

    Pull them into the DPC with ``dpct transfer pull OUT/<delivery>``. A day whose
    delivery is already sealed is skipped, so an interrupted run can be restarted.
    """
    simulator = Simulator(_config(seed, scale, products))
    chunks_per_day = round((hours or 24) * 3600 / simulator.config.chunk_s)
    columns = (TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=as_json) as progress:
        bar = progress.add_task("chunks", total=chunks_per_day * days)
        results = write_days(
            simulator,
            day,
            days,
            out,
            hours=hours,
            workers=workers,
            truth=truth,
            progress=lambda _chunk: progress.advance(bar),
        )
    if as_json:
        emit_json(
            [
                {
                    "day": r.day,
                    "delivery": str(r.folder),
                    "truth": str(r.truth_folder) if r.truth_folder else None,
                    "skipped": r.skipped,
                    "bytes": r.manifest.total_bytes,
                    "rows": r.rows,
                }
                for r in results
            ]
        )
        return
    names = sorted({p for r in results for p in r.rows})
    table(
        f"deliveries in {out}",
        ["day", "delivery", "MB", *names],
        [
            [
                r.day,
                r.folder.name + (" (already there)" if r.skipped else ""),
                f"{r.manifest.total_bytes / 1e6:.1f}",
                *(r.rows.get(n, 0) for n in names),
            ]
            for r in results
        ],
    )
