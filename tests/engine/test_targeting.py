"""Targeting in the engine: spec rules, TARGETED decisions with exact propensities, cold starts,
refits off the decide path, and the context column."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from engine.api import Engine
from engine.config import load_config
from engine.decision import Reason
from engine.loader import SpecError, parse_spec
from engine.store import Store
from tests.samples import AB_YAML, BANDIT_YAML, write_yaml

TARGETED_YAML = BANDIT_YAML.replace(
    "policy: {name: thompson, update: {every_outcomes: 50, every_seconds: 60}}",
    "policy: {name: thompson, min_weight: 0.05, update: {every_outcomes: 1000000, every_seconds: 1000}}",
) + ("targeting: {recommender: item_cf, strength: 0.6, segments_from: [interest], segments: 4,"
     " refit_every_seconds: 60}\n")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def open_engine(url: str, clock: Clock) -> Engine:
    return Engine(Store(url), load_config(), np.random.default_rng(0), clock=clock)


def train(engine: Engine, clock: Clock) -> None:
    """Painters convert only by email, gamers only by sms; then the model is due for a refit."""
    best = {"painting": "by-email", "gaming": "by-sms"}
    for i in range(600):
        interest = "painting" if i % 2 else "gaming"
        d = engine.decide("channels", f"old-{i}", {"interest": interest})
        if d.arm == best[interest]:
            engine.record({"event_id": f"c{i}", "experiment": "channels", "decision_id": d.decision_id})
    clock.now += 1001  # past the weights' and the recommender's cadence


@pytest.mark.parametrize(("yaml_text", "field", "message"), [
    (AB_YAML + "targeting: {recommender: hybrid}\n", "targeting", "applies to bandits"),
    (TARGETED_YAML.replace("strength: 0.6", "strength: 0.6, cf_weight: 0.3"), "targeting.cf_weight", "hybrid"),
    (TARGETED_YAML.replace("strength: 0.6", "strength: 1.5"), "targeting.strength", "less than or equal"),
    (TARGETED_YAML.replace("segments: 4", "segmnts: 4"), "targeting.segmnts", "unknown field"),
])
def test_targeting_declaration_errors_point_at_the_field(yaml_text: str, field: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(yaml_text, "x.yaml")
    assert any(p.field == field and message in p.message for p in info.value.problems), info.value


def test_targeted_decisions_have_exact_propensities(db_url: str, tmp_path: Path) -> None:
    clock = Clock()
    with open_engine(db_url, clock) as engine:
        engine.apply([write_yaml(tmp_path, "b.yaml", TARGETED_YAML)])
        train(engine, clock)
        painter = {"interest": "painting"}
        p = engine.probabilities("channels", "new-0", painter)
        assert p["by-email"] > 0.6 and p["by-email"] > 3 * p["by-sms"]
        n = 4000
        counts = dict.fromkeys(p, 0)
        for i in range(n):
            d = engine.decide("channels", f"new-{i}", painter)
            assert d.reason is Reason.TARGETED
            assert_allclose(d.propensity, p[d.arm], rtol=1e-12)
            counts[d.arm] += 1
        for arm, prob in p.items():
            assert abs(counts[arm] / n - prob) <= 4 * np.sqrt(prob * (1 - prob) / n)
        gamer = engine.probabilities("channels", "new-x", {"interest": "gaming"})
        assert gamer["by-sms"] > gamer["by-email"]


def test_cold_start_and_eligibility(db_url: str, tmp_path: Path) -> None:
    clock = Clock()
    with open_engine(db_url, clock) as engine:
        engine.apply([write_yaml(tmp_path, "b.yaml", TARGETED_YAML)])
        train(engine, clock)
        weights = dict(zip(("by-email", "by-push", "by-sms"), engine.weights("channels"), strict=True))
        d = engine.decide("channels", "stranger", {})
        assert d.reason is Reason.BANDIT
        assert_allclose(d.propensity, weights[d.arm], rtol=1e-12)
        for i in range(200):
            d = engine.decide("channels", f"p-{i}", {"interest": "painting", "opted_in": "email,push"})
            assert d.reason is Reason.TARGETED and d.arm in ("by-email", "by-push")
        # painters never converted by push or sms: scores that do not separate the eligible arms
        d = engine.decide("channels", "p-x", {"interest": "painting", "opted_in": "push,sms"})
        assert d.reason is Reason.BANDIT and d.arm in ("by-push", "by-sms")
        only = engine.decide("channels", "solo", {"interest": "painting", "opted_in": ["email"]})
        assert (only.arm, only.reason, only.propensity) == ("by-email", Reason.BANDIT, 1.0)


def test_background_refits_off_the_decide_path(sqlite_url: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    readers: list[str] = []
    with Engine.open(sqlite_url, seed=0) as engine:
        engine.apply([write_yaml(tmp_path, "b.yaml", TARGETED_YAML.replace("refit_every_seconds: 60",
                                                                         "refit_every_seconds: 0.1"))])
        real = engine.store.decision_history

        def spy(key: str, phase: int) -> list:
            readers.append(threading.current_thread().name)
            return real(key, phase)

        monkeypatch.setattr(engine.store, "decision_history", spy)
        engine.start_background(interval=0.05)
        reasons = set()
        deadline = time.monotonic() + 20
        i = 0
        while Reason.TARGETED not in reasons and time.monotonic() < deadline:
            d = engine.decide("channels", f"u{i}", {"interest": "painting" if i % 2 else "gaming"})
            reasons.add(d.reason)
            if d.arm == ("by-email" if i % 2 else "by-sms"):
                engine.record({"event_id": f"c{i}", "experiment": "channels", "decision_id": d.decision_id})
            i += 1
        assert Reason.TARGETED in reasons
    assert readers and set(readers) == {"crosspromo-maintenance"}


def test_contexts_are_stored(sqlite_url: str, tmp_path: Path) -> None:
    """(Stores made before the column existed gain it: tests/engine/test_migrations.py.)"""
    with Engine.open(sqlite_url) as engine:
        engine.apply([write_yaml(tmp_path, "b.yaml", BANDIT_YAML)])
        engine.decide("channels", "u1", {"opted_in": ["email"], "interest": "painting"})
        engine.flush()
        rows = engine.store.decision_history("channels", 1)
        assert rows[0].context_json == '{"opted_in":["email"],"interest":"painting"}'
