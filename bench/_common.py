"""Shared by the benchmarks: argument parsing, the result table and the JSON line."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass


@dataclass
class Row:
    system: str
    case: str
    metric: str
    value: float
    unit: str


def noop_descriptor(name: str) -> str:
    """A workflow of no-op jobs, one per second of OBMT: the framework's cost alone."""
    return f"""
name = "{name}"
version = 1
data_type = "testing_counts"
[[steps]]
name = "noop"
task = "testing.noop"
partition = "1s"
"""


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, under ~2 minutes")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
    return p


def report(bench: str, rows: list[Row], as_json: bool) -> None:
    width = max(len(r.case) for r in rows) + 2
    print(f"\n{'system':<10}{'case':<{width}}{'metric':<24}{'value':>14}  unit")
    for r in rows:
        print(f"{r.system:<10}{r.case:<{width}}{r.metric:<24}{r.value:>14.4g}  {r.unit}")
    if as_json:
        print(json.dumps({"bench": bench, "rows": [asdict(r) for r in rows]}))
