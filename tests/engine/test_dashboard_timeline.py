"""The dashboard's bounded readers: the recent timeline is exact over its window, and the
thinned weights history keeps the newest refresh and every refresh with a reason of its own."""

from __future__ import annotations

from datetime import UTC

import numpy as np
import pytest
from sqlalchemy import select

from engine.api import Engine
from engine.db import read
from engine.tables import DECISIONS
from engine.timeline import newest, recent_timeline, weights_over_time
from tests.samples import AB_YAML, write_yaml


@pytest.fixture
def filled(tmp_path, db_url: str):  # type: ignore[no-untyped-def]
    engine = Engine.open(db_url, seed=0)
    engine.apply([write_yaml(tmp_path, "ab.yaml", AB_YAML)])
    rng = np.random.default_rng(3)
    for i in range(300):
        d = engine.decide("landing", f"u{i}")
        if rng.random() < 0.3:
            engine.record({"event_id": f"e{i}", "experiment": "landing", "decision_id": d.decision_id})
    engine.flush()
    yield engine
    engine.close()


def _brute_force(engine: Engine) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every decision of the phase in time order: its arm and whether it converted."""
    d = DECISIONS.c
    with read(engine.store.sa) as conn:
        rows = conn.execute(select(d.arm, d.converted, d.ts).where(d.experiment == "landing", d.phase == 1)
                            .order_by(d.ts, d.decision_id)).all()
    return [r.arm for r in rows], np.array([r.converted for r in rows], dtype=int), np.array([r.ts for r in rows])


@pytest.mark.parametrize("limit", [1000, 120, 7])
def test_recent_timeline_is_exact_over_its_window(filled: Engine, limit: int) -> None:
    arms = list(filled.experiment("landing").spec.arm_keys)
    aggregates = filled.store.arm_aggregates("landing", 1, arms)
    totals = {a.arm: (a.exposures, a.conversions, a.total) for a in aggregates}
    timeline = recent_timeline(filled.store.sa, "landing", 1, totals, limit=limit, points=10)
    order, converted, _ = _brute_force(filled)
    n = len(order)
    for arm in arms:
        t = timeline.arms[arm]
        assert t.exposures[-1] == totals[arm][0] and t.conversions[-1] == totals[arm][1]
        mine = np.array([a == arm for a in order])
        # Each checkpoint holds the totals of the rows up to it: a prefix of the time order.
        prefixes = {(int(mine[:k].sum()), int((mine[:k] * converted[:k]).sum())) for k in range(n + 1)}
        assert all((int(e), int(c)) in prefixes for e, c in zip(t.exposures, t.conversions, strict=True))
    span = sum(int(t.exposures[-1] - t.exposures[0]) for t in timeline.arms.values())
    assert span == min(limit, n)
    assert len(timeline.ts) <= 11 and np.all(np.diff(timeline.ts.astype("int64")) >= 0)
    latest = max(_brute_force(filled)[2])
    assert newest(timeline) == (latest if latest.tzinfo else latest.replace(tzinfo=UTC))


def test_recent_timeline_of_an_empty_phase(filled: Engine) -> None:
    timeline = recent_timeline(filled.store.sa, "landing", 2, {"control": (0, 0, 0.0), "curated": (0, 0, 0.0)})
    assert len(timeline.ts) == 0
    with pytest.raises(ValueError, match="limit"):
        recent_timeline(filled.store.sa, "landing", 1, {}, limit=0)


def test_weights_over_time_thins_but_keeps_the_newest_and_the_notable(filled: Engine) -> None:
    for i in range(500):
        reason = "'curated' taken out of traffic: guardrail" if i == 123 else "refresh"
        filled.store.record_weights("landing", 1, {"control": i / 1000, "curated": 1 - i / 1000}, reason)
    kept = weights_over_time(filled.store.sa, "landing", 1, points=50)
    assert 45 <= len(kept) <= 52
    assert kept[-1].weights["control"] == pytest.approx(0.499)  # the newest refresh
    assert any(k.reason != "refresh" and k.weights["control"] == pytest.approx(0.123) for k in kept)
    assert [k.ts for k in kept] == sorted(k.ts for k in kept)
    everything = weights_over_time(filled.store.sa, "landing", 1, points=10_000)
    assert len(everything) == len(filled.store.weights_history("landing", 1))
