"""Writes of exposures and events: poison rows refused at the edge or quarantined, outages ridden out,
and flushes the caller may defer."""

from __future__ import annotations

import dataclasses
import fcntl
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from engine.api import Engine
from engine.cli import app
from engine.config import load_config
from engine.db import StoreError
from engine.events import Event, parse_event
from engine.store import Store
from engine.text import BadTextError
from tests.samples import AB_YAML, write_yaml

POISON_UNITS = {"sqlite": ["bad\udcff"], "postgres": ["evil\x00", "bad\udcff"]}


def _backend(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgres"


@pytest.mark.parametrize("unit", ["evil\x00", "u\udcff"])
def test_units_no_store_can_hold_are_refused_before_anything_is_logged(engine: Engine, unit: str) -> None:
    with pytest.raises(BadTextError, match="^unit: "):
        engine.decide("landing", unit)
    with pytest.raises(BadTextError, match=r"^unit: "):
        engine.decide_many("landing", ["ok", unit])
    with pytest.raises(BadTextError, match=r"^context\.plan: "):
        engine.decide("landing", "ok", {"plan": unit})
    assert engine.writer.buffer == [] and engine.flush() == 0


def _buffer_with_poison(engine: Engine, poison: str, name: str) -> None:
    """Nine decisions in the buffer, and a tenth row no edge check saw (as if from an old client)."""
    for i in range(9):
        engine.decide("landing", f"{name}-u{i}")
    good = engine.writer.buffer
    engine.writer.buffer = [*good[:4], good[4]._replace(decision_id=name, unit=poison), *good[4:]]


def test_a_poison_row_is_quarantined_and_the_rest_written(engine: Engine) -> None:
    poisons = POISON_UNITS[_backend(engine.store.url)]
    for n, poison in enumerate(poisons):
        _buffer_with_poison(engine, poison, f"poison-{n}")
        assert engine.flush() == 9  # the good rows, in spite of the bad one
        assert engine.writer.buffer == []  # nothing re-queued: later rows are not blocked
        engine.decide("landing", f"later-{n}")
        assert engine.flush() == 1
    rows = engine.store.quarantined()
    assert [r["kind"] for r in rows] == ["exposure"] * len(poisons)
    assert [r["record"]["unit"] for r in rows] == poisons
    assert [r["record"]["decision_id"] for r in rows] == [f"poison-{n}" for n in range(len(poisons))]
    _, aggregates = engine.aggregates("landing")
    assert sum(a.exposures for a in aggregates) == engine.store.counts()["decisions"] == 10 * len(poisons)


def test_the_quarantine_command_reads_the_rows_back(engine: Engine) -> None:
    poison = POISON_UNITS[_backend(engine.store.url)][-1]
    _buffer_with_poison(engine, poison, "poison")
    engine.flush()
    result = CliRunner().invoke(app, ["quarantine", "--format", "json", "--db", engine.store.url])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 1 and rows[0]["kind"] == "exposure" and rows[0]["record"]["unit"] == poison
    assert rows[0]["reason"]


def test_an_event_the_database_refuses_is_quarantined_and_its_chunk_applied(engine: Engine) -> None:
    poison = POISON_UNITS[_backend(engine.store.url)][-1]
    for i in range(4):
        engine.decide("landing", f"u{i}")
    engine.flush()
    good = [parse_event({"event_id": f"c{i}", "experiment": "landing", "unit": f"u{i}"}) for i in range(4)]
    # An imported exposure no edge check saw (as if from an old client).
    bad = Event.model_construct(event_id="x1", type="exposure", experiment="landing", unit=poison, arm="control",
                                decision_id=None, value=None, ts=None)
    events = list(enumerate([*good[:2], bad, *good[2:]], start=1))
    outcome = engine.store.apply_events(events, {k: v.stored for k, v in engine.snapshot.load().items()})
    assert outcome.accepted == 4 and outcome.duplicates == 0
    assert [(i, r.split(":")[0]) for i, r in outcome.rejected] == [(3, "the database refused it (quarantined)")]
    assert [r["record"]["event_id"] for r in engine.store.quarantined()] == ["x1"]
    _, aggregates = engine.aggregates("landing")
    assert sum(a.conversions for a in aggregates) == 4


def test_a_locked_store_is_an_outage_not_a_poison_row(sqlite_url: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer holding the store past the busy timeout: nothing is quarantined, the
    decisions stand (no error a client would retry, logging the unit twice), and every
    exposure is written once the lock is released."""
    monkeypatch.setenv("CROSSPROMO_STORE_BUSY_TIMEOUT", "0.2")
    write_yaml(tmp_path / "exp", "landing.yaml", AB_YAML)
    with Engine.open(sqlite_url, seed=0) as engine:
        engine.apply([tmp_path / "exp"])
        with open(f"{sqlite_url.removeprefix('sqlite:///')}.write-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # as another process writing would
            try:
                decisions = [engine.decide("landing", f"u{i}") for i in range(600)]  # past the batch size
                assert engine.stale and all(d.in_experiment for d in decisions)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        assert engine.flush() == 600
        assert engine.store.quarantined() == []
        assert engine.store.counts()["decisions"] == 600


def test_decisions_are_refused_before_logging_once_the_waiting_buffer_is_full(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSPROMO_STORE_BUSY_TIMEOUT", "0.1")
    write_yaml(tmp_path / "exp", "landing.yaml", AB_YAML)
    config = dataclasses.replace(load_config(), exposure_max_buffered=5, exposure_batch_size=2)
    with Engine(Store(sqlite_url), config, np.random.default_rng(0)) as engine:
        engine.apply([tmp_path / "exp"])
        with open(f"{sqlite_url.removeprefix('sqlite:///')}.write-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                for i in range(10):
                    engine.decide("landing", f"u{i}")
                with pytest.raises(StoreError, match="no room for more"):
                    engine.decide("landing", "one-too-many")
                assert len(engine.writer.buffer) == 10  # the refused one was never logged
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        assert engine.flush() == 10


def test_deferred_decisions_leave_the_flush_to_the_caller(sqlite_url: str, tmp_path: Path) -> None:
    """What the HTTP service's event loop relies on: inside `flush_deferred` a full buffer is
    reported (`flush_due`), never written by the deciding thread."""
    write_yaml(tmp_path / "exp", "landing.yaml", AB_YAML)
    config = dataclasses.replace(load_config(), exposure_max_buffered=5)
    with Engine(Store(sqlite_url), config, np.random.default_rng(0)) as engine:
        engine.apply([tmp_path / "exp"])
        assert not engine.decides_in_memory("landing")  # no background thread: upkeep runs inline
        engine.start_background(interval=3600)
        assert engine.decides_in_memory("landing")
        with engine.flush_deferred():
            for i in range(8):
                engine.decide("landing", f"u{i}")
            engine.decide_many("landing", [f"v{i}" for i in range(4)])
        assert engine.flush_due and engine.store.counts()["decisions"] == 0
        assert engine.flush() == 12 and not engine.flush_due
