"""What every benchmark script shares: result rows, the printed table and the JSON report.

A row holds our figure, the peer's measured in the same run (or a reference), the ratio
ours / peer and the target from the issue, so each script prints and writes the same shape.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    measurement: str
    ours: float
    unit: str
    peer: float | None = None
    peer_name: str | None = None
    target: str | None = None
    passed: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if not self.peer else self.ours / self.peer  # a peer of 0 (a rate never hit) has no ratio


def versus(
    measurement: str,
    ours: float,
    peer: float,
    unit: str,
    peer_name: str,
    *,
    max_ratio: float | None = None,
    note: str = "",
) -> Row:
    """A row comparing with a peer; the target, if any, bounds ours / peer from above."""
    target = None if max_ratio is None else f"ratio <= {max_ratio:g}"
    passed = None if max_ratio is None else ours / peer <= max_ratio
    return Row(measurement, ours, unit, peer, peer_name, target, passed, note)


def format_number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def print_table(rows: list[Row]) -> None:
    header = ("measurement", "ours", "peer", "unit", "ratio", "target", "ok")
    lines = [
        (
            r.measurement,
            format_number(r.ours),
            format_number(r.peer),
            r.unit,
            format_number(r.ratio),
            r.target or "-",
            {True: "yes", False: "NO", None: "-"}[r.passed],
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    for line in (header, tuple("-" * w for w in widths), *lines):
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)))
    for r in rows:
        if r.note:
            print(f"- {r.measurement}: {r.note}" + (f"; peer = {r.peer_name}" if r.peer_name else ""))


def write_report(path: Path, name: str, command: str, rows: list[Row], packages: tuple[str, ...],
                 **extra: Any) -> None:
    """The JSON twin of the printed table, with the environment it was measured in."""
    report = {
        "benchmark": name,
        "command": command,
        **extra,
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            **{package: version(package) for package in packages},
        },
        "rows": [asdict(r) | {"ratio": r.ratio} for r in rows],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def run_measurements(measurements: Sequence[Callable[[Any], list[Row]]], config: Any) -> tuple[list[Row], float]:
    """Every measurement in order, with progress on stderr; the rows and the seconds it took."""
    started = time.perf_counter()
    rows: list[Row] = []
    for measure in measurements:
        print(f"running {measure.__name__} ...", file=sys.stderr, flush=True)
        rows.extend(measure(config))
    return rows, time.perf_counter() - started


def run_and_report(measurements: Sequence[Callable[[Any], list[Row]]], config: Any, *, name: str, script: str,
                   out: Path, packages: tuple[str, ...], **extra: Any) -> int:
    """Run every measurement, print the table and write the JSON (the shape every script shares).
    `config` is a dataclass with a `quick` flag, written with the figures."""
    rows, elapsed = run_measurements(measurements, config)
    print_table(rows)
    print(f"\n{'quick' if config.quick else 'full'} run in {elapsed:.0f} s")
    command = f"python tests/benchmarks/{script}" + (" --quick" if config.quick else "")
    write_report(out, name, command, rows, packages, config=asdict(config) | extra, elapsed_s=round(elapsed, 1))
    print(f"wrote {out}", file=sys.stderr)
    return 0
