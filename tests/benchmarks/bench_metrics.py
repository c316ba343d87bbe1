"""Per-unit accounting benchmark: event intake and report time with users, windows and 3 metrics.

    python tests/benchmarks/bench_metrics.py [--quick] [--postgres URL] [--out FILE.json]

1. Intake: the same decisions and conversions ingested into two experiments of one store,
   measured in the same run: ours is per-user accounting with three metrics (binary primary
   with a window, revenue, a guardrail), events spread over the metrics; the peer is the
   per-decision path with one metric (`analysis.unit: decision`), what every experiment used
   before per-unit accounting. Target: ours >= 0.8x the peer's events per second, on SQLite
   and (with --postgres or CROSSPROMO_TEST_POSTGRES_URL) on PostgreSQL.
2. Report: `report --format json` time on a store with 1,000,000 units x 3 metrics against
   the same report on 1,000 units. Target: <= 1.5x (the report reads O(arms x metrics) sums,
   never the events).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script: make `tests` importable

from engine.api import Engine  # noqa: E402
from engine.config import EngineConfig  # noqa: E402
from tests.benchmarks.harness import Row, print_table, write_report  # noqa: E402
from tests.samples import write_yaml  # noqa: E402

T0 = datetime(2026, 11, 2, tzinfo=UTC)

EXPERIMENT = """\
schema: 1
key: {key}
name: Intake benchmark
owner: growth@example.com
status: running
kind: ab_test
{metrics}
arms:
  - {{key: email, campaign: c, partner: music, channel: email, weight: 0.5}}
  - {{key: sms, campaign: c, partner: music, channel: sms, weight: 0.5}}
analysis: {{control: email{unit}}}
"""
THREE_METRICS = """metrics:
  - {name: purchase, type: binary, role: primary, window: 7d}
  - {name: revenue, type: revenue, role: secondary, window: 7d, net: true}
  - {name: unsubscribe, type: binary, role: guardrail, direction: decrease, margin: 0.2, window: 3d}"""
ONE_METRIC = "metric: {name: purchase, type: binary}"


def _store(directory: Path, url: str | None) -> Engine:
    exp = directory / "experiments"
    write_yaml(exp, "users.yaml", EXPERIMENT.format(key="users", metrics=THREE_METRICS, unit=""))
    write_yaml(exp, "decisions.yaml", EXPERIMENT.format(key="decisions", metrics=ONE_METRIC,
                                                         unit=", unit: decision"))
    engine = Engine.open(url or f"sqlite:///{directory / 'bench.db'}",
                         config=EngineConfig(channel_costs={"sms": 0.05}, exposure_batch_size=5000))
    engine.apply([exp])
    return engine


def _events(key: str, units: int, per_unit: int, metrics: tuple[str | None, ...]) -> list[dict]:
    """Units exposed in turn over two arms, then `per_unit` conversions each, cycling the metrics."""
    out: list[dict] = [{"event_id": f"{key}-x{u}", "type": "exposure", "experiment": key, "unit": f"u{u}",
                        "arm": ("email", "sms")[u % 2], "ts": T0.isoformat()} for u in range(units)]
    for k in range(per_unit):
        metric = metrics[k % len(metrics)]
        for u in range(units):
            ev = {"event_id": f"{key}-c{u}-{k}", "experiment": key, "unit": f"u{u}",
                  "ts": (T0 + timedelta(hours=k + 1)).isoformat()}
            if metric is not None:
                ev["metric"] = metric
            if metric == "revenue":
                ev["value"] = float(1 + u % 7)
            out.append(ev)
    return out


def intake_rates(url: str | None, units: int, per_unit: int, repeats: int) -> tuple[float, float]:
    """Events per second (median of `repeats`) of ours and of the per-decision peer, interleaved."""
    ours, peer = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            engine = _store(Path(tmp), url)
            try:
                if url:
                    _empty(engine)
                for key, metrics, out in (("decisions", (None,), peer),
                                          ("users", (None, "revenue", "unsubscribe"), ours)):
                    events = _events(key, units, per_unit, metrics)
                    started = time.perf_counter()
                    summary = engine.ingest(events)
                    elapsed = time.perf_counter() - started
                    assert summary.accepted == len(events), summary.rejected[:3]
                    out.append(len(events) / elapsed)
            finally:
                engine.close()
    return statistics.median(ours), statistics.median(peer)


def _empty(engine: Engine) -> None:
    """A PostgreSQL store is shared between runs: start each from no decisions or events."""
    from sqlalchemy import delete

    from engine.db import write
    from engine.tables import ARM_STATS, DECISIONS, EVENTS, METRIC_STATS, UNIT_STATS, UNIT_VALUES, UNITS

    with write(engine.store.sa) as conn:
        for table in (DECISIONS, EVENTS, UNITS, UNIT_VALUES, UNIT_STATS, METRIC_STATS):
            conn.execute(delete(table))
        conn.execute(ARM_STATS.update().values(exposures=0, conversions=0, total=0.0, total_sq=0.0))


def _report_store(directory: Path, units: int) -> Engine:
    """A store whose 3-metric experiment holds `units` units: each decided once (the columnar
    batch path), one in ten converting on each metric."""
    engine = _store(directory, None)
    names = [f"u{u}" for u in range(units)]
    for start in range(0, units, 100_000):
        engine.decide_many("users", names[start:start + 100_000])
    engine.flush()
    events = [{"event_id": f"c{u}-{metric}", "experiment": "users", "unit": names[u], "metric": metric,
               **({"value": 5.0} if metric == "revenue" else {})}
              for metric in ("purchase", "revenue", "unsubscribe") for u in range(0, units, 10)]
    for start in range(0, len(events), 100_000):
        engine.ingest(events[start:start + 100_000])
    assert sum(a["exposures"] for a in engine.report("users").to_dict()["arms"]) == units
    return engine


def report_seconds(small: int, large: int, repeats: int) -> tuple[float, float]:
    """Median times of the JSON report on a store of `small` units and one of `large` units,
    timed in turn so that both see the same machine."""
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        engines = (_report_store(Path(a), small), _report_store(Path(b), large))
        try:
            times: tuple[list[float], list[float]] = ([], [])
            for _ in range(repeats):
                for engine, out in zip(engines, times, strict=True):
                    started = time.perf_counter()
                    engine.report("users").to_json()
                    out.append(time.perf_counter() - started)
            return statistics.median(times[0]), statistics.median(times[1])
        finally:
            for engine in engines:
                engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller stores (a smoke run, not the figures)")
    parser.add_argument("--postgres", default=os.environ.get("CROSSPROMO_TEST_POSTGRES_URL"))
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "bench_metrics.json")
    args = parser.parse_args()
    units, per_unit, repeats = (2_000, 3, 3) if args.quick else (20_000, 3, 3)
    big = 50_000 if args.quick else 1_000_000
    rows = []
    for name, url in (("SQLite", None), ("PostgreSQL", args.postgres)):
        if name == "PostgreSQL" and not url:
            print("PostgreSQL: skipped (no --postgres URL)")
            continue
        ours, peer = intake_rates(url, units, per_unit, repeats)
        rows.append(Row(f"intake, users x 3 metrics vs per-decision, {name}", ours, "events/s", peer,
                        "per-decision path, 1 metric", "ratio >= 0.8", ours / peer >= 0.8,
                        f"{units:,} units x {per_unit + 1} events, median of {repeats}"))
    small, large = report_seconds(1_000, big, 15)
    rows.append(Row(f"report json, {big:,} units x 3 metrics", large * 1000, "ms", small * 1000,
                    "same report on 1,000 units", "ratio <= 1.5", large / small <= 1.5,
                    "median of 15, the two stores timed in turn"))
    print_table(rows)
    write_report(args.out, "bench_metrics", " ".join(["python", *sys.argv]), rows, ("sqlalchemy", "psycopg"),
                 quick=args.quick, units=units, report_units=big)


if __name__ == "__main__":
    main()
