"""Dashboard render benchmark: the overview of 50 experiments, and an experiment page on a
store of 10M events, against the same `report --format json` work measured in the same run.

    python tests/benchmarks/bench_dashboard.py [--quick] [--events N] [--runs N] [--out FILE.json]

Ours is the server-side render of the page: a GET handed to the ASGI app in process (middleware,
routing, the worker thread, the report, the chart data, the templates), with no HTTP client.
The peer is what `crosspromo report --format json` does for the same experiments:
`build_report(...).to_dict()` of each and `json.dumps(indent=2)`.
Target (the dashboard issue): ours <= 1.5x the peer, because chart data comes from the O(arms)
report, the O(refreshes) weights history and a bounded timeline, never from a scan of events.

The stores are built with bulk SQL (sequential ids and times, so inserts append): decisions and
conversion events in the proportions of a live bandit (9 exposures to 1 conversion event), the
aggregate tables filled from them by GROUP BY, and 500 weight refreshes; `--events` sets the
total (default 10,000,000; --quick 1,000,000).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script: make `tests` importable

from tests.benchmarks.harness import Row, print_table, versus, write_report  # noqa: E402

MAX_RATIO = 1.5
START = datetime(2026, 1, 1, tzinfo=UTC)


def _times(seconds: np.ndarray) -> list[str]:
    """Times as the store keeps them (SQLite text, `YYYY-MM-DD HH:MM:SS.ffffff`), `seconds` after START."""
    stamps = np.datetime64(START.replace(tzinfo=None), "us") + (seconds * 1e6).astype("timedelta64[us]")
    return np.char.replace(np.datetime_as_string(stamps, unit="us"), "T", " ").tolist()


def fill(db: Path, key: str, arms: list[tuple[str, str]], revenue: bool, metric: str, decisions: int,
         conversions: int, seed: int) -> None:
    """`decisions` exposures and `conversions` conversion events of experiment `key`, and its
    aggregates (arm_stats, unit_stats, metric_stats) summed from them; one unit per decision."""
    rng = np.random.default_rng(seed)
    prefix = f"{seed:04x}"
    converted = np.zeros(decisions, dtype=bool)
    converted[rng.choice(decisions, size=min(conversions, decisions), replace=False)] = True
    arm_of = rng.integers(0, len(arms), decisions)
    values = np.where(converted, rng.lognormal(3.0, 0.5, decisions) if revenue else 1.0, 0.0)

    # Columns as Python lists made by numpy in one pass each: per-row work stays in the driver.
    ids = [f"{prefix}{i:012d}" for i in range(decisions)]
    times = _times(np.arange(decisions) * 0.01)
    arm_keys, channels = (np.array(c)[arm_of].tolist() for c in zip(*arms, strict=True))
    decision_rows = zip(ids, repeat(key), repeat(1), repeat(1), (f"u{i}" for i in range(decisions)), arm_keys,
                        channels, repeat(0.5), repeat(1.0 / len(arms)), repeat("BANDIT"), times,
                        converted.astype(int).tolist(), values.tolist(), repeat(None))
    hit = np.flatnonzero(converted)
    later = _times(hit * 0.01 + 5)
    event_rows = zip((f"{ids[i]}:conv" for i in hit), repeat("conversion"), repeat(key), (f"u{i}" for i in hit),
                     (ids[i] for i in hit), repeat(None), values[hit].tolist() if revenue else repeat(None), later,
                     later, repeat(metric), repeat(1))

    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous = OFF")  # a throw-away store: durability buys nothing here
    conn.execute("PRAGMA cache_size = -1000000")
    with conn:
        conn.executemany("INSERT INTO decisions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", decision_rows)
        conn.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?)", event_rows)
        conn.execute("""INSERT OR REPLACE INTO arm_stats SELECT experiment, phase, arm, count(*), sum(converted),
                        sum(value), sum(value * value) FROM decisions WHERE experiment = ?
                        GROUP BY experiment, phase, arm""", (key,))
        conn.execute("""INSERT OR REPLACE INTO unit_stats SELECT experiment, phase, arm, count(*), count(*), count(*), 0
                        FROM decisions WHERE experiment = ? GROUP BY experiment, phase, arm""", (key,))
        conn.execute("""INSERT OR REPLACE INTO metric_stats SELECT experiment, phase, ?, arm, sum(converted),
                        sum(value), sum(value * value), 0 FROM decisions WHERE experiment = ?
                        GROUP BY experiment, phase, arm""", (metric, key))
        step = max(decisions // 500, 1) * 0.01
        w = rng.dirichlet(np.ones(len(arms)), 500)
        shares = [json.dumps({a: float(x) for (a, _), x in zip(arms, w[j], strict=True)}) for j in range(500)]
        conn.executemany("INSERT INTO weights_history (experiment, phase, ts, weights_json, reason) VALUES (?,?,?,?,?)",
                         list(zip(repeat(key), repeat(1), _times(np.arange(500) * step), shares, repeat("refresh"))))
    conn.close()


def build_store(db: Path, specs: list[object], events: int) -> None:
    """Apply `specs` to a new store and give each its share of `events` (9 exposures : 1 conversion)."""
    from engine.api import Engine

    with Engine.open(f"sqlite:///{db}") as engine:
        engine.apply(specs)  # type: ignore[arg-type]
    share = events // len(specs)
    for n, spec in enumerate(specs):
        arms = [(a.key, a.channel.value) for a in spec.arms]  # type: ignore[attr-defined]
        primary = spec.primary  # type: ignore[attr-defined]
        fill(db, spec.key, arms, primary.type.value == "revenue", primary.name,  # type: ignore[attr-defined]
             decisions=share * 9 // 10, conversions=share // 10, seed=n + 1)


def paired(ours: Callable[[], object], peer: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median ms of each, run alternately (so load from other processes hits both alike), after
    one warm-up of each (caches, template compilation)."""
    ours(), peer()
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for fn, out in ((ours, samples[0]), (peer, samples[1])):
            started = time.perf_counter()
            fn()
            out.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples[0]), statistics.median(samples[1])


def asgi_get(app: Any, loop: asyncio.AbstractEventLoop, path: str) -> bytes:
    """GET `path` from the ASGI app directly (the server side only: no HTTP client or socket)."""
    body = bytearray()
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": [],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    loop.run_until_complete(app(scope, receive, send))
    if status != 200:
        raise RuntimeError(f"GET {path} answered {status}: {bytes(body[:300])!r}")
    return bytes(body)


def compare(url: str, path: str, keys: list[str], runs: int) -> tuple[float, float]:
    """Median ms of the page's render and of `report --format json` for `keys`, in the same process."""
    from engine.api import Engine
    from engine.dashboard_app import create_dashboard_app
    from engine.report import build_report
    from engine.server import ApiKeys

    with Engine.open(url) as engine:
        app = create_dashboard_app(engine, ApiKeys(None, None, None), auth=False)
        loop = asyncio.new_event_loop()

        def page() -> None:
            asgi_get(app, loop, path)

        def report_json() -> None:
            json.dumps([build_report(engine, k).to_dict() for k in keys], indent=2, allow_nan=False)

        try:
            return paired(page, report_json, runs)
        finally:
            loop.close()


def load_demo_specs(copies: int) -> list[object]:
    from engine.loader import load_specs

    base = load_specs([REPO / "experiments"])
    return [s.model_copy(update={"key": f"{s.key}-{i:02d}"}) for i in range(copies // len(base) + 1)
            for s in base][:copies]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1M events, 3 runs")
    parser.add_argument("--events", type=int, default=None, help="events in the big store (default 10M)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per page (default 9, --quick 3)")
    parser.add_argument("--stores", type=Path, default=None,
                        help="keep the stores in DIR and reuse those already there (default: a temporary dir)")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "bench_dashboard.json")
    args = parser.parse_args(argv)
    events = args.events or (1_000_000 if args.quick else 10_000_000)
    runs = args.runs or (3 if args.quick else 9)
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        where = args.stores or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        many = where / "fifty.db"
        specs = load_demo_specs(50)
        if not many.exists():
            print("building the 50-experiment store ...", file=sys.stderr, flush=True)
            build_store(many, specs, 50 * 20_000)
        ours, peer = compare(f"sqlite:///{many}", "/ui/", [s.key for s in specs], runs)  # type: ignore[attr-defined]
        rows.append(versus("overview, 50 experiments (1M events)", ours, peer, "ms",
                           "report --format json of the 50", max_ratio=MAX_RATIO))

        built = time.perf_counter()
        big = where / f"big-{events}.db"
        spec = next(s for s in load_demo_specs(4) if s.key.startswith("art-training"))  # type: ignore[attr-defined]
        if not big.exists():
            print(f"building the {events:,}-event store ...", file=sys.stderr, flush=True)
            build_store(big, [spec], events)
        build_s = time.perf_counter() - built
        key = spec.key  # type: ignore[attr-defined]
        ours, peer = compare(f"sqlite:///{big}", f"/ui/experiments/{key}", [key], runs)
        rows.append(versus(f"experiment page, {events:,} events", ours, peer, "ms",
                           "report --format json of it", max_ratio=MAX_RATIO,
                           note=f"store built in {build_s:.0f} s by bulk SQL" if build_s > 1 else "store reused"))
        ours, peer = compare(f"sqlite:///{big}", f"/ui/experiments/{key}/data.json", [key], runs)
        rows.append(versus(f"experiment refresh (data.json), {events:,} events", ours, peer, "ms",
                           "report --format json of it", max_ratio=MAX_RATIO))
    elapsed = time.perf_counter() - started
    print_table(rows)
    print(f"\n{runs} runs per page in {elapsed:.0f} s")
    command = "python tests/benchmarks/bench_dashboard.py" + (" --quick" if args.quick else "") + (
        f" --events {args.events}" if args.events else "") + (f" --stores {args.stores}" if args.stores else "")
    write_report(args.out, "dashboard", command, rows, ("fastapi", "jinja2", "plotly", "sqlalchemy"),
                 config={"events": events, "runs": runs}, elapsed_s=round(elapsed, 1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
