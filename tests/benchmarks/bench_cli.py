"""CLI start-up benchmark: wall time of everyday commands, with the interpreter and Typer
measured in the same run as peers.

    python tests/benchmarks/bench_cli.py [--quick] [--runs N] [--out FILE.json]

Prints a table and writes JSON (default `bench-results/bench_cli.json`). Each figure is the
median wall time of N fresh processes (`python -m engine.cli ...`, the code behind the
`crosspromo` script), so it includes the interpreter's own start. Peers: the bare interpreter
(`python -c pass`) and `python -c "import typer"`, the floor for any Typer CLI; a ratio near
1 against `import typer` means the command costs little beyond its framework. `winners` runs
on a demo store (`crosspromo demo --users 2000`, built once before the timings); it needs the
store and the analysis, so it is expected to cost more than `--help` and `validate`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script: make `tests` importable

from tests.benchmarks.harness import Row, print_table, versus, write_report  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO), "CROSSPROMO_DATABASE_URL": ""}


@dataclass(frozen=True)
class Config:
    quick: bool
    runs: int


def wall_ms(argv: list[str], runs: int) -> float:
    """Median wall time of `runs` fresh processes, after one warm-up (disk cache, .pyc files)."""
    def once() -> float:
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=REPO, env=ENV, capture_output=True, timeout=300)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.decode(errors='replace')[-500:]}")
        return elapsed * 1000

    once()
    return statistics.median(once() for _ in range(runs))


def measure(config: Config, store: Path) -> list[Row]:
    python = [sys.executable]
    cli = [sys.executable, "-m", "engine.cli"]
    runs = config.runs
    bare = wall_ms([*python, "-c", "pass"], runs)
    typer = wall_ms([*python, "-c", "import typer"], runs)
    rows = [
        Row("interpreter start (python -c pass)", bare, "ms", note="reference for every row below"),
        versus("python -c 'import typer'", typer, bare, "ms", "python -c pass"),
    ]
    commands = [
        ("python -c 'import engine.cli'", [*python, "-c", "import engine.cli"]),
        ("crosspromo --help", [*cli, "--help"]),
        ("crosspromo validate experiments/", [*cli, "validate", "experiments"]),
        ("crosspromo winners --db demo store", [*cli, "winners", "--db", f"sqlite:///{store}"]),
    ]
    for name, argv in commands:
        print(f"timing {name} ...", file=sys.stderr, flush=True)
        ours = wall_ms(argv, runs)
        rows.append(versus(name, ours, typer, "ms", "python -c 'import typer'",
                           note=f"{ours - bare:.0f} ms beyond the bare interpreter"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 runs per command")
    parser.add_argument("--runs", type=int, default=None, help="runs per command (default 11, --quick 3)")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "bench_cli.json", help="JSON output")
    args = parser.parse_args(argv)
    config = Config(quick=args.quick, runs=args.runs or (3 if args.quick else 11))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "demo.db"
        print("building the demo store ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--users", "2000", "--out", str(store)],
                       cwd=REPO, env=ENV, check=True, capture_output=True, timeout=600)
        rows = measure(config, store)
    elapsed = time.perf_counter() - started
    print_table(rows)
    print(f"\n{config.runs} runs per command in {elapsed:.0f} s")
    command = "python tests/benchmarks/bench_cli.py" + (" --quick" if config.quick else "")
    write_report(args.out, "cli", command, rows, ("typer", "numpy", "scipy", "sqlalchemy"),
                 config={"quick": config.quick, "runs": config.runs}, elapsed_s=round(elapsed, 1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
