from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import create_engine, text

from engine.api import Engine


def _exposed(engine: Engine, n: int, prefix: str = "u") -> list[str]:
    decisions = engine.decide_many("landing", [f"{prefix}{i}" for i in range(n)])
    engine.flush()
    return [d.decision_id for d in decisions if d.decision_id]


def _totals(engine: Engine, key: str = "landing") -> tuple[int, int]:
    _, aggs = engine.aggregates(key)
    return sum(a.exposures for a in aggs), sum(a.conversions for a in aggs)


RACE_THREADS, RACE_CALLS_PER_THREAD = 8, 1000


def record_race(engine: Engine, threads: int, per_thread: int) -> tuple[int, int]:
    """`threads` threads each `record` their own `per_thread` conversions at once, every tenth call
    re-sending the thread's previous event; the (accepted, duplicate) counts of the calls, after
    checking that every total is exact. tests/benchmarks/bench_record_race.py times the same race."""
    ids = _exposed(engine, threads * per_thread)
    assert len(ids) == threads * per_thread
    errors: list[BaseException] = []
    results = [[0, 0] for _ in range(threads)]
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        try:
            mine = ids[t * per_thread:(t + 1) * per_thread]
            start.wait()  # every thread is ready: the calls overlap from the first one
            for i, decision_id in enumerate(mine):
                # Every tenth call re-sends an earlier event of this thread: it must count once.
                target = mine[i - 1] if i % 10 == 9 else decision_id
                new = engine.record({"event_id": f"c-{target}", "experiment": "landing", "decision_id": target})
                results[t][0 if new else 1] += 1
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    accepted = sum(r[0] for r in results)
    duplicates = sum(r[1] for r in results)
    assert accepted + duplicates == threads * per_thread
    assert duplicates == threads * (per_thread // 10)
    exposures, conversions = _totals(engine)
    assert exposures == threads * per_thread
    assert conversions == accepted
    assert engine.store.counts()["events"] == accepted
    return accepted, duplicates


def test_concurrent_record_calls_give_exact_totals(engine: Engine) -> None:
    # The race comes from 8 threads calling at once, not from volume: 1,000 calls each on both
    # stores here; the 8 x 5,000 runs in tests/benchmarks/bench_record_race.py.
    record_race(engine, RACE_THREADS, RACE_CALLS_PER_THREAD)


def _conversions_file(path: Path, ids: list[str]) -> None:
    with path.open("w") as fh:
        for decision_id in ids:
            fh.write(json.dumps({"event_id": f"c-{decision_id}", "type": "conversion",
                                 "experiment": "landing", "decision_id": decision_id}) + "\n")


def test_the_same_file_twice_gives_the_same_totals(engine: Engine, tmp_path: Path) -> None:
    ids = _exposed(engine, 1200)
    path = tmp_path / "events.jsonl"
    _conversions_file(path, ids[:700])
    first = engine.ingest_file(path)
    assert (first.accepted, first.duplicates, first.rejected) == (700, 0, [])
    second = engine.ingest_file(path)
    assert (second.accepted, second.duplicates, second.rejected) == (0, 700, [])
    assert _totals(engine) == (1200, 700)


def test_ingest_killed_mid_file_then_rerun_loses_and_doubles_nothing(engine: Engine, tmp_path: Path,
                                                                     db_url: str) -> None:
    # 24 chunks of INGEST_CHUNK (500) events: the kill after the 4th committed chunk leaves 20 to
    # go, far more than one poll of the watcher, so the ingest is always killed mid-file.
    total = 12_000
    ids = _exposed(engine, total)
    path = tmp_path / "events.jsonl"
    _conversions_file(path, ids)
    engine.close()
    cmd = [sys.executable, "-m", "engine.cli", "ingest", str(path), "--db", db_url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    watcher = create_engine(db_url)
    committed = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            with watcher.connect() as conn:
                committed = conn.execute(text("SELECT count(*) FROM events")).scalar_one()
            if committed >= 2000:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        proc.wait()
        watcher.dispose()
    assert proc.returncode == -signal.SIGKILL, "the ingest finished before it could be killed"
    assert 0 < committed < len(ids)

    rerun = subprocess.run([*cmd, "--format", "json"], capture_output=True, text=True, check=True)
    summary = json.loads(rerun.stdout)
    assert summary["rejected"] == []
    assert summary["accepted"] + summary["duplicates"] == len(ids)
    assert summary["duplicates"] >= committed
    with Engine.open(db_url) as again:
        assert _totals(again) == (total, total)
        assert again.store.counts()["events"] == total


def test_replayed_exposures_are_stored_once(engine: Engine) -> None:
    # A spool replay may carry exposures already stored, and one id more than once.
    decisions = engine.decide_many("landing", [f"u{i}" for i in range(50)])
    batch = list(engine.writer.buffer)
    engine.flush()
    assert engine.store.log_exposures(batch[:20] + batch[:5]) == 0
    assert engine.store.log_exposures(batch[:10]) == 0
    again = engine.store.log_exposures([*batch[:3], *batch])
    assert again == 0 and _totals(engine) == (len([d for d in decisions if d.in_experiment]), 0)


def test_event_times_are_stored_in_utc(engine: Engine) -> None:
    engine.record({"event_id": "x1", "type": "exposure", "experiment": "landing", "unit": "u1", "arm": "control",
                   "ts": "2026-03-01T12:00:00+02:00"})
    with engine.store.sa.connect() as conn:
        stored = conn.execute(text("SELECT ts FROM decisions WHERE unit = 'u1'")).scalar_one()
        received = conn.execute(text("SELECT ts FROM events WHERE event_id = 'x1'")).scalar_one()
    for value in (stored, received):
        value = value if not isinstance(value, str) else datetime.fromisoformat(value)
        assert value.replace(tzinfo=None) == datetime(2026, 3, 1, 10, 0)


def test_conversions_by_unit_find_the_units_newest_exposure(engine: Engine) -> None:
    # Two imported exposures of one unit, then conversions naming the unit only, or the unit
    # and an arm: the first goes to the newest exposure, the second to that arm's newest.
    def exposure(event_id: str, arm: str, ts: str) -> dict:
        return {"event_id": event_id, "type": "exposure", "experiment": "landing", "unit": "u1", "arm": arm, "ts": ts}

    engine.ingest([exposure("x1", "control", "2026-01-01T10:00:00Z"),
                   exposure("x2", "curated", "2026-01-02T10:00:00Z")])
    summary = engine.ingest([{"event_id": "c1", "experiment": "landing", "unit": "u1"},
                             {"event_id": "c2", "experiment": "landing", "unit": "u1", "arm": "control"},
                             {"event_id": "c3", "experiment": "landing", "unit": "nobody"}])
    assert (summary.accepted, [line for line, _ in summary.rejected]) == (2, [3])
    _, aggs = engine.aggregates("landing")
    assert {a.arm: (a.exposures, a.conversions) for a in aggs} == {"control": (1, 1), "curated": (1, 1)}
