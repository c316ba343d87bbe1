"""Batch decisions kept column by column: what the caller reads, what the store gets."""

from __future__ import annotations

from pathlib import Path

import orjson
from sqlalchemy import text

from engine.api import Engine
from engine.decision import Decision, Reason
from engine.store.decisions import Exposure, ExposureBatch
from tests.samples import AB_YAML, write_yaml

PARTIAL_AB = AB_YAML.replace("traffic: {coverage: 1.0}",
                             "traffic: {coverage: 0.6}\neligibility: {channels_from: opted_in}")
STORED = "arm, channel, bucket, propensity, reason, version, phase, context_json, converted, value"


def _partial(tmp_path: Path, db_url: str) -> Engine:
    e = Engine.open(db_url, seed=1)
    e.apply([write_yaml(tmp_path, "l.yaml", PARTIAL_AB)])
    return e


def test_a_batch_reads_as_a_list_of_plain_decisions(db_url: str, tmp_path: Path) -> None:
    with _partial(tmp_path, db_url) as e:
        batch = e.decide_many("landing", [f"u{i}" for i in range(60)], [None, {"opted_in": ["email"]}] * 30)
        decisions = list(batch)
        assert len(batch) == 60 and batch == decisions and decisions == batch
        assert [batch[i] for i in range(-60, 60)] == decisions * 2
        assert batch[5:40:3] == decisions[5:40:3] and batch[::-1] == decisions[::-1]
        inside = [d for d in decisions if d.in_experiment]
        outside = [d for d in decisions if not d.in_experiment]
        assert inside and outside
        for d in decisions:  # Python values, as `decide` gives: nothing numpy leaks out
            assert type(d) is Decision and type(d.bucket) is float and type(d.in_experiment) is bool
        assert all(type(d.propensity) is float and type(d.decision_id) is str and d.reason is Reason.SPLIT
                   for d in inside)
        assert all(d.propensity is None and d.decision_id is None and d.reason is Reason.DEFAULT for d in outside)
        batch[0].payload["changed"] = True  # each read builds its own decision
        assert "changed" not in batch[0].payload
        assert orjson.loads(orjson.dumps(decisions)) == [d.to_dict() for d in decisions]


def test_decision_ids_are_unique_and_sort_in_issue_order(engine: Engine) -> None:
    ids = [engine.decide("landing", "a").decision_id]
    ids += [d.decision_id for d in engine.decide_many("landing", [f"b{i}" for i in range(300)])]
    ids += [engine.decide("landing", "c").decision_id]
    ids += [d.decision_id for d in engine.decide_many("bundle", [f"d{i}" for i in range(5)])]
    assert len(set(ids)) == len(ids) == 307 and sorted(ids) == ids  # type: ignore[type-var]


def test_a_batch_stores_the_rows_single_decisions_store(db_url: str, tmp_path: Path) -> None:
    units = [f"u{i}" for i in range(200)]
    contexts = [None, {"opted_in": ["in_app"], "plan": "pro"}, {"opted_in": ["email"]}, {"segment": "art"}] * 50
    with _partial(tmp_path, db_url) as e:
        e.decide_many("landing", units, contexts)
        e.flush()
        with e.store.sa.connect() as conn:
            batch = conn.execute(text(f"SELECT unit, {STORED} FROM decisions ORDER BY unit")).all()
            conn.execute(text("DELETE FROM decisions"))
            conn.commit()
        for u, c in zip(units, contexts, strict=True):
            e.decide("landing", u, c)
        e.flush()
        with e.store.sa.connect() as conn:
            single = conn.execute(text(f"SELECT unit, {STORED} FROM decisions ORDER BY unit")).all()
    assert 60 < len(batch) < 140 and batch == single


def test_a_poison_row_among_batch_blocks_is_quarantined_alone(sqlite_url: str, tmp_path: Path) -> None:
    # Blocks of several calls are written as one; a row the database refuses is split out of it.
    with Engine.open(sqlite_url, seed=0) as e:
        e.apply([write_yaml(tmp_path, "l.yaml", AB_YAML)])
        e.decide_many("landing", [f"u{i}" for i in range(30)])
        good = e.writer.buffer[0]
        poison = good._replace(decision_id="poison", unit="bad\udcff")
        with e.writer._lock:
            e.writer.append(ExposureBatch.of([poison]), background=True)
        e.decide_many("landing", [f"v{i}" for i in range(30)])
        assert e.flush() == 60 and e.writer.buffer == []
        assert [r["record"]["decision_id"] for r in e.store.quarantined()] == ["poison"]
        assert e.store.counts()["decisions"] == 60


def test_an_exposure_batch_slices_and_joins_like_its_rows() -> None:
    rows = [Exposure(f"id{i}", "landing", 1, 1, f"u{i}", "control", "in_app", i / 10, 0.5, "SPLIT", None)  # type: ignore[arg-type]
            for i in range(10)]
    batch = ExposureBatch.concat([ExposureBatch.of(rows[:3]), ExposureBatch.of(rows[3:])])
    assert list(batch) == rows and batch[4] == rows[4] and batch[-1] == rows[-1]
    assert list(batch[2:7]) == rows[2:7] and list(batch.take([8, 1])) == [rows[8], rows[1]]
    assert len(ExposureBatch.of([])) == 0
