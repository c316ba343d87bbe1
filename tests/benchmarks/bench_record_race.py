"""The concurrent `record` race at the issue's volume: 8 threads x 5,000 calls, exact totals.

    python tests/benchmarks/bench_record_race.py [--threads T] [--calls N] [--postgres URL] [--out FILE.json]

tests/engine/test_store.py runs the same race (`record_race`) with 8 threads x 1,000 calls on
both stores: the race comes from the threads calling at once, which 1,000 calls each already
give. This script runs it at full volume, on a fresh SQLite file and, with --postgres (default:
CROSSPROMO_TEST_POSTGRES_URL; its tables are emptied first), on PostgreSQL. Each run first logs
T x N exposures (not timed), then times the T threads recording one conversion per call, every
tenth call a re-send of the thread's previous event; the totals are checked exact after the race
(the script fails otherwise). Reported: record calls/s across the threads, and the wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import sqlalchemy  # noqa: E402

from engine.api import Engine  # noqa: E402
from tests.benchmarks.harness import Row, print_table, write_report  # noqa: E402
from tests.conftest import _fresh_postgres  # noqa: E402
from tests.engine.test_store import record_race  # noqa: E402
from tests.samples import AB_YAML, write_yaml  # noqa: E402


def measure(url: str, label: str, threads: int, calls: int, work: Path) -> Row:
    experiments = work / "experiments"
    write_yaml(experiments, "landing.yaml", AB_YAML)
    with Engine.open(url, seed=0) as engine:
        engine.apply([experiments])
        timed: list[float] = []
        original = engine.record

        def first_call_starts_the_clock(event: dict) -> bool:  # the exposures before the race are not timed
            if not timed:
                timed.append(time.perf_counter())
            return original(event)

        engine.record = first_call_starts_the_clock  # type: ignore[method-assign]
        accepted, duplicates = record_race(engine, threads, calls)
        elapsed = time.perf_counter() - timed[0]
    total = threads * calls
    return Row(f"record, {threads} threads x {calls:,} calls, {label}", total / elapsed, "calls/s",
               note=f"{elapsed:.1f} s; {accepted:,} accepted, {duplicates:,} re-sends counted once; totals exact")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=5000, help="record calls per thread")
    parser.add_argument("--postgres", default=os.environ.get("CROSSPROMO_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL (tables are emptied) [default: CROSSPROMO_TEST_POSTGRES_URL]")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "bench_record_race.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(measure(f"sqlite:///{Path(tmp) / 'race.db'}", "SQLite", args.threads, args.calls,
                            Path(tmp) / "sqlite"))
        if args.postgres:
            rows.append(measure(_fresh_postgres(args.postgres), "PostgreSQL", args.threads, args.calls,
                                Path(tmp) / "postgres"))
    elapsed = time.perf_counter() - started
    print_table(rows)
    print(f"\nrun in {elapsed:.0f} s")
    command = f"python tests/benchmarks/bench_record_race.py --threads {args.threads} --calls {args.calls}" + (
        " --postgres URL" if args.postgres else "")
    write_report(args.out, "record_race", command, rows, ("sqlalchemy",), threads=args.threads, calls=args.calls,
                 sqlalchemy=sqlalchemy.__version__, elapsed_s=round(elapsed, 1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
