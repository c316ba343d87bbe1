"""Service benchmark: `crosspromo serve` under bounded load on loopback, SQLite and PostgreSQL.

    python tests/benchmarks/bench_service.py [--quick] [--out FILE.json] [--postgres URL]

The load comes from wrk (Debian package `wrk`: `apt-get install wrk`), a separate C process,
so the Python server is measured rather than a Python client. Each run is bounded (`--quick`:
4 s per measurement, otherwise 10 s) and sends requests to 127.0.0.1 only. Measured:

- single decisions (`POST /v1/experiments/{key}/decisions`, a new unit per request): requests/s
  and p50 / p99 latency, with 1 and 2 uvicorn workers, on SQLite and PostgreSQL;
- the batch endpoint (`decisions:batch`, 1,000 units a request): decisions/s, counted as logged:
  exposures written to the store, from the first request until the last row is written; its
  peer is the database's own ceiling, the same rows bulk-inserted by one client with no service;
- event intake (`POST /v1/events`, 500 imported exposures a request, all new): events/s.

Targets from the service issue (2 cores shared by server, database and load generator):
>= 3,000 single decisions/s with p99 <= 25 ms, >= 100,000 decisions/s through the batch
endpoint, >= 20,000 events/s through batched posts. PostgreSQL runs when `--postgres URL`
or CROSSPROMO_TEST_POSTGRES_URL names a server (its tables are emptied first).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from engine.api import Engine  # noqa: E402
from engine.db import bulk_insert, write  # noqa: E402
from engine.events import utcnow  # noqa: E402
from engine.store import DECISIONS, Exposure  # noqa: E402
from tests.benchmarks.harness import Row, print_table, write_report  # noqa: E402
from tests.conftest import _fresh_postgres  # noqa: E402
from tests.service_support import DECIDE_KEY, Replica  # noqa: E402

EXPERIMENT = "art-collection-landing"
BATCH_UNITS = 1000
BATCH_EVENTS = 500
WRITE_SETTLE_SECONDS = 1.0  # the exposure count is final once it has not moved for this long

# wrk scripts: every request gets fresh unit ids / event ids (a counter per wrk thread).
DECIDE_LUA = """
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", nil, nil, '{"unit":"u-' .. id .. '-' .. n .. '"}')
end
"""
BATCH_LUA = """
local n = 0
request = function()
  n = n + 1
  local units = {}
  for i = 1, %(size)d do units[i] = '{"unit":"b-' .. id .. '-' .. n .. '-' .. i .. '"}' end
  return wrk.format("POST", nil, nil, '{"units":[' .. table.concat(units, ",") .. ']}')
end
"""
EVENTS_LUA = """
local n = 0
request = function()
  n = n + 1
  local events = {}
  for i = 1, %(size)d do
    local key = id .. '-' .. n .. '-' .. i
    events[i] = '{"event_id":"x-' .. key .. '","type":"exposure","experiment":"%(experiment)s",' ..
                '"unit":"e-' .. key .. '","arm":"catalogue-grid"}'
  end
  return wrk.format("POST", nil, nil, '{"events":[' .. table.concat(events, ",") .. ']}')
end
"""
SETUP_LUA = """
id = 0
local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("id", counter .. "-" .. math.random(1, 1000000000))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(url: str, script: str, seconds: int, connections: int) -> WrkResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(SETUP_LUA + script + f'\nwrk.headers["Authorization"] = "Bearer {DECIDE_KEY}"\n'
                 'wrk.headers["Content-Type"] = "application/json"\n')
    try:
        out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency",
                              "-s", fh.name, url], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(fh.name)
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+(?:us|ms|s))\s*$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        requests_per_s=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(latency["50"]) if "50" in latency else float("nan"),
        p99_ms=_ms(latency["99"]) if "99" in latency else float("nan"),
        errors=(int(errors.group(1)) if errors else 0)
        + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
    )


def until_written(db_url: str, run: Callable[[], WrkResult]) -> tuple[WrkResult, int, float]:
    """Run the load, then wait until the service has written every exposure it buffered: returns
    the load's result, the exposures written and the seconds from the start to the last write.
    Decisions count only once logged, so a service cannot look fast by falling behind."""
    with Engine.open(db_url) as probe:
        before = probe.store.counts()["decisions"]
        started = time.perf_counter()
        result = run()
        count, last_change = probe.store.counts()["decisions"], time.perf_counter()
        while time.perf_counter() - last_change < WRITE_SETTLE_SECONDS:
            time.sleep(0.05)
            now = probe.store.counts()["decisions"]
            if now != count:
                count, last_change = now, time.perf_counter()
    return result, count - before, last_change - started


def insert_rate(db_url: str, seconds: float) -> float:
    """The database's own ceiling for the batch endpoint: exposure rows/s written by one client
    in transactions of BATCH_UNITS rows through the driver's bulk path alone (no service)."""
    with Engine.open(db_url) as engine:
        now, written, started = utcnow(), 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            rows = [Exposure(f"raw-{written + i}", EXPERIMENT, 1, 1, f"raw-unit-{written + i}", "catalogue-grid",
                             "in_app", 0.5, 0.34, "SPLIT", now) for i in range(BATCH_UNITS)]
            with write(engine.store.sa) as conn:
                bulk_insert(conn, DECISIONS, Exposure._fields, rows)
            written += BATCH_UNITS
        return written / (time.perf_counter() - started)


def measure(db_url: str, label: str, workdir: Path, seconds: int) -> list[Row]:
    with Engine.open(db_url) as engine:
        engine.apply([REPO / "experiments" / f"{EXPERIMENT}.yaml"])
    ceiling = insert_rate(db_url, seconds / 2)
    rows = []
    for workers in (1, 2):
        replica = Replica(db_url, workdir / f"{label}-{workers}", workers=workers).start()
        try:
            url = f"{replica.url}/v1/experiments/{EXPERIMENT}/decisions"
            single = wrk(url, DECIDE_LUA, seconds, connections=16)
            note = f"16 connections, {single.errors} errors"
            rows.append(Row(f"single decisions/s, {label}, {workers} worker(s)", single.requests_per_s, "req/s",
                            target=">= 3,000", passed=single.requests_per_s >= 3000, note=note))
            rows.append(Row(f"single decision p50, {label}, {workers} worker(s)", single.p50_ms, "ms"))
            rows.append(Row(f"single decision p99, {label}, {workers} worker(s)", single.p99_ms, "ms",
                            target="<= 25", passed=single.p99_ms <= 25))
            # Intake before the batch endpoint: a flood of batch decisions leaves seconds of exposures
            # to write, which the next measurement would pay for.
            events = wrk(f"{replica.url}/v1/events",
                         EVENTS_LUA % {"size": BATCH_EVENTS, "experiment": EXPERIMENT}, seconds, connections=4)
            rate = events.requests_per_s * BATCH_EVENTS
            rows.append(Row(f"event intake/s, {label}, {workers} worker(s)", rate, "events/s", target=">= 20,000",
                            passed=rate >= 20_000,
                            note=f"{BATCH_EVENTS} events a request, 4 connections, {events.errors} errors"))
            batch, written, elapsed = until_written(
                db_url, partial(wrk, url + ":batch", BATCH_LUA % {"size": BATCH_UNITS}, seconds, connections=4))
            rate = written / elapsed
            rows.append(Row(f"batch endpoint decisions/s, {label}, {workers} worker(s)", rate, "decisions/s",
                            peer=ceiling, peer_name="bulk insert of the rows alone, 1 client",
                            target=">= 100,000", passed=rate >= 100_000,
                            note=f"{BATCH_UNITS} units a request, 4 connections, {batch.errors} errors; "
                                 f"answered {batch.requests_per_s * BATCH_UNITS:,.0f}/s, counted as logged "
                                 f"(all {written:,} exposures written in {elapsed:.1f} s)"))
        finally:
            replica.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 s per measurement instead of 10 s")
    parser.add_argument("--postgres", default=os.environ.get("CROSSPROMO_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL (tables are emptied) [default: CROSSPROMO_TEST_POSTGRES_URL]")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "bench_service.json")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk is not installed\nhint: apt-get install wrk", file=sys.stderr)
        return 2
    seconds = 4 if args.quick else 10
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("measuring on SQLite ...", file=sys.stderr, flush=True)
        rows += measure(f"sqlite:///{work / 'bench.db'}", "SQLite", work, seconds)
        if args.postgres:
            print("measuring on PostgreSQL ...", file=sys.stderr, flush=True)
            rows += measure(_fresh_postgres(args.postgres), "PostgreSQL", work, seconds)
        else:
            print("PostgreSQL skipped: pass --postgres URL", file=sys.stderr)
    elapsed = time.perf_counter() - started
    print_table(rows)
    print(f"\n{'quick' if args.quick else 'full'} run in {elapsed:.0f} s")
    command = "python tests/benchmarks/bench_service.py" + (" --quick" if args.quick else "")
    write_report(args.out, "service", command, rows, ("fastapi", "uvicorn", "sqlalchemy"),
                 seconds_per_measurement=seconds, elapsed_s=round(elapsed, 1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
