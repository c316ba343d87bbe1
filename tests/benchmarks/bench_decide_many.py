"""Batch decisions against the database's own insert rate, on SQLite, in one run.

    python tests/benchmarks/bench_decide_many.py [--units N] [--repeat K] [--out FILE.json]

Measured, each on a fresh SQLite file (best of `--repeat` runs):

- ours: `Engine.decide_many` of N units (default 100,000) for an A/B test and for a plain
  bandit (no stickiness, no targeting), logging included: the clock stops once `flush()` has
  written every exposure to the store;
- the peer: the same N rows (read back from the engine's store, outside the timed region)
  inserted by a plain `sqlite3` `executemany` in one transaction into the same `decisions`
  table (created from the engine's SQLModel metadata, indexes included), on a connection with
  the engine's pragmas (WAL, synchronous=NORMAL).

Target from the issue: decide_many at >= 0.5x the peer's rows/s.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine  # noqa: E402
from sqlmodel import SQLModel  # noqa: E402

from engine.api import Engine  # noqa: E402
from engine.tables import DECISIONS  # noqa: E402
from tests.benchmarks.harness import Row, print_table, write_report  # noqa: E402

TARGET_RATIO = 0.5
EXPERIMENTS = {"A/B test": "art-collection-landing", "plain bandit": "music-course-channels"}


def decide_many_rate(path: Path, key: str, units: int) -> tuple[float, list[tuple]]:
    """decide_many's decisions/s with logging, and the rows it wrote (for the peer)."""
    with Engine.open(f"sqlite:///{path}", seed=0) as engine:
        engine.apply([REPO / "experiments" / f"{key}.yaml"])
        engine.weights(key)  # the first weights and snapshot are read before the clock starts
        names = [f"unit-{i}" for i in range(units)]
        started = time.perf_counter()
        decisions = engine.decide_many(key, names)
        engine.flush()
        elapsed = time.perf_counter() - started
        assert len(decisions) == units and engine.store.counts()["decisions"] == units
    columns = ", ".join(c.name for c in DECISIONS.columns)
    with sqlite3.connect(path) as conn:
        rows = conn.execute(f"SELECT {columns} FROM decisions").fetchall()
    return units / elapsed, rows


def executemany_rate(path: Path, rows: list[tuple]) -> float:
    """A plain sqlite3 executemany of `rows` into a fresh, indexed `decisions` table."""
    sa = create_engine(f"sqlite:///{path}")
    SQLModel.metadata.create_all(sa, tables=[DECISIONS])
    sa.dispose()
    columns = [c.name for c in DECISIONS.columns]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        statement = f"INSERT INTO decisions ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(statement, rows)
        conn.execute("COMMIT")
        return len(rows) / (time.perf_counter() - started)
    finally:
        conn.close()


def measure(label: str, key: str, units: int, repeat: int, work: Path) -> Row:
    ours, peer = 0.0, 0.0
    for run in range(repeat):
        rate, rows = decide_many_rate(work / f"{key}-{run}.db", key, units)
        ours = max(ours, rate)
        peer = max(peer, executemany_rate(work / f"{key}-{run}-peer.db", rows))
    passed = ours / peer >= TARGET_RATIO
    return Row(f"decide_many, {label}, logged", ours, "decisions/s", peer, "sqlite3 executemany of the same rows",
               f"ratio >= {TARGET_RATIO:g}", passed, note=f"{units:,} units, best of {repeat}, SQLite")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=100_000, help="units per decide_many call")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (the best counts)")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "bench_decide_many.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(label, key, args.units, args.repeat, Path(tmp)) for label, key in EXPERIMENTS.items()]
    elapsed = time.perf_counter() - started
    print_table(rows)
    print(f"\nrun in {elapsed:.0f} s")
    command = f"python tests/benchmarks/bench_decide_many.py --units {args.units} --repeat {args.repeat}"
    write_report(args.out, "decide_many", command, rows, ("numpy", "sqlalchemy"), units=args.units,
                 sqlite=sqlite3.sqlite_version, elapsed_s=round(elapsed, 1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
