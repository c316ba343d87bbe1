"""The store's propensity sums of a bandit: kept by increments, equal to a recount, and read
by the report (corrected estimates, the Horvitz-Thompson SRM check)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from engine.api import Engine
from engine.db import read, write
from engine.store.ledger import rebuild
from engine.tables import DECISIONS
from policies.stats.bandit_inference import PropensitySums, propensity_sums
from tests.samples import write_yaml

BANDIT = """\
schema: 1
key: promo
name: Bandit read through its propensities
owner: growth@example.com
status: running
kind: bandit
policy: {{name: thompson, min_weight: 0.1, update: {{every_outcomes: 20, every_seconds: 60}}}}
metric: {{name: purchase, type: binary}}
traffic: {{sticky: {sticky}}}
arms:
  - {{key: a, campaign: c, partner: music, channel: email}}
  - {{key: b, campaign: c, partner: music, channel: push}}
  - {{key: c, campaign: c, partner: music, channel: sms}}
"""
RATES = {"a": 0.1, "b": 0.3, "c": 0.5}


@pytest.fixture(params=[False, True], ids=["per_decision", "per_user"])
def promo(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Iterator[Engine]:
    write_yaml(tmp_path / "experiments", "promo.yaml", BANDIT.format(sticky=str(request.param).lower()))
    with Engine.open(db_url, seed=0) as e:
        e.apply([tmp_path / "experiments"])
        rng = np.random.default_rng(1)
        for i in range(400):
            unit = f"u{i % 250}"  # per user: 150 units decide twice
            d = e.decide("promo", unit)
            if rng.random() < RATES[d.arm]:
                e.record({"event_id": f"c{i}", "type": "conversion", "experiment": "promo", "unit": unit,
                          "decision_id": d.decision_id})
        e.flush()
        yield e


def as_arrays(sums: tuple[PropensitySums, ...]) -> np.ndarray:
    return np.array([[s.units, s.weight, s.weight_sq, s.weight_y, s.weight_sq_y, s.weight_sq_y_sq] for s in sums])


def _sums(engine: Engine) -> np.ndarray:
    stored, tally = engine.tally("promo")
    sums = tally.propensity_sums(stored.spec.primary)
    assert sums is not None
    return as_arrays(sums)


def test_sums_equal_those_of_the_first_decision_of_each_unit(promo: Engine) -> None:
    spec = promo.experiment("promo").spec
    d = DECISIONS.c
    with read(promo.store.sa) as conn:
        rows = conn.execute(select(d.unit, d.decision_id, d.arm, d.propensity, d.converted)
                            .where(d.experiment == "promo").order_by(d.ts, d.decision_id)).all()
    first: dict[str, tuple] = {}
    for unit, decision_id, arm, p, converted in rows:
        key = unit if spec.traffic.sticky else decision_id
        first.setdefault(key, (arm, p, False))
        if converted and first[key][0] == arm:
            first[key] = (arm, p, True)
    arms = [spec.arm_keys.index(a) for a, _, _ in first.values()]
    expected = propensity_sums(arms, [p for _, p, _ in first.values()], [float(c) for *_, c in first.values()], 3)
    np.testing.assert_allclose(_sums(promo), as_arrays(expected), rtol=1e-9)


def test_a_recount_gives_the_same_sums(promo: Engine) -> None:
    before = _sums(promo)
    with write(promo.store.sa) as conn:
        rebuild(conn, promo.experiment("promo").spec, 1)
    np.testing.assert_allclose(_sums(promo), before, rtol=1e-9)


def test_the_report_reads_the_corrected_estimates_and_checks_srm(promo: Engine) -> None:
    data = promo.report("promo").to_dict()
    assert data["test"]["method"] == "ipw_partial_pooling"
    assert data["srm"] is not None and data["srm"]["flagged"] is False
    assert data["verdict"]["status"] in ("winner", "keep_running")


def test_a_bandit_without_a_floor_is_read_on_pooled_counts(db_url: str, tmp_path: Path) -> None:
    """Without a propensity floor a starved arm's weights 1/p explode (positivity fails), so the
    report reads pooled counts and runs no Horvitz-Thompson check."""
    write_yaml(tmp_path / "experiments", "promo.yaml",
               BANDIT.format(sticky="false").replace("min_weight: 0.1, ", ""))
    with Engine.open(db_url, seed=0) as e:
        e.apply([tmp_path / "experiments"])
        for i in range(200):
            d = e.decide("promo", f"u{i}")
            if i % 4 == 0:
                e.record({"event_id": f"c{i}", "type": "conversion", "experiment": "promo", "unit": f"u{i}",
                          "decision_id": d.decision_id})
        e.flush()
        data = e.report("promo").to_dict()
    assert data["test"]["method"] == "partial_pooling" and data["srm"] is None
