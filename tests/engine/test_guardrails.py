"""Guardrails through the engine: the report's verdict, a bandit taking a harmful arm out of
traffic for the phase, the weights history, and `winners --fail-on-guardrail`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from engine.api import Engine
from engine.cli import EXIT_GUARDRAIL, app
from tests.samples import write_yaml

AB_GUARDED = """\
schema: 1
key: promo
name: Promo with an unsubscribe guardrail
owner: growth@example.com
status: running
kind: ab_test
metrics:
  - {name: purchase, type: binary}
  - {name: unsubscribe, type: binary, role: guardrail, direction: decrease, margin: 1.0}
arms:
  - {key: control, campaign: c, partner: music, channel: email, weight: 0.5}
  - {key: loud, campaign: c, partner: music, channel: email, weight: 0.5}
analysis: {control: control, mde: 0.6}
"""

BANDIT_GUARDED = """\
schema: 1
key: channels
name: Channel bandit with an unsubscribe guardrail
owner: growth@example.com
status: running
kind: bandit
policy: {name: thompson, update: {every_outcomes: 100, every_seconds: 3600}}
metrics:
  - {name: purchase, type: binary}
  - {name: unsubscribe, type: binary, role: guardrail, direction: decrease, margin: 0.5}
arms:
  - {key: email, campaign: c, partner: music, channel: email}
  - {key: sms, campaign: c, partner: music, channel: sms}
  - {key: push, campaign: c, partner: music, channel: push}
analysis: {control: email}
"""


@pytest.fixture
def engine(db_url: str, tmp_path: Path) -> Iterator[Engine]:
    exp = tmp_path / "experiments"
    write_yaml(exp, "promo.yaml", AB_GUARDED)
    write_yaml(exp, "channels.yaml", BANDIT_GUARDED)
    with Engine.open(db_url, seed=0) as e:
        e.apply([exp])
        yield e


def _exposed(engine: Engine, key: str, arm: str, units: int, conversions: dict[str, int], batch: str = "") -> None:
    """`units` units exposed to `arm`; the first `conversions[metric]` of them convert on it."""
    name = f"{arm}{batch}"
    events = [{"event_id": f"{key}-{name}-x{u}", "type": "exposure", "experiment": key, "unit": f"{name}-{u}",
               "arm": arm} for u in range(units)]
    for metric, count in conversions.items():
        events += [{"event_id": f"{key}-{name}-{metric}-{u}", "experiment": key, "unit": f"{name}-{u}",
                    "metric": metric} for u in range(count)]
    assert engine.ingest(events).accepted == len(events)


@pytest.mark.parametrize(("loud_unsubscribes", "status", "named"), [
    (100, "winner", "guardrails held"),  # the same unsubscribe rate: shown non-inferior
    (400, "guardrail_failed", "'unsubscribe' of 'loud'"),  # 4x the control's rate; the margin is 2x
    (180, "keep_running", "not every guardrail is shown non-inferior"),  # +80%: cannot tell yet
])
def test_a_winner_needs_every_guardrail_shown_non_inferior(engine: Engine, loud_unsubscribes: int, status: str,
                                                           named: str) -> None:
    _exposed(engine, "promo", "control", 5000, {"purchase": 250, "unsubscribe": 100})
    _exposed(engine, "promo", "loud", 5000, {"purchase": 400, "unsubscribe": loud_unsubscribes})
    report = engine.report("promo").to_dict()
    assert report["verdict"]["status"] == status, report["verdict"]
    assert named in report["verdict"]["reason"]
    primary, guardrail = report["metrics"]
    assert primary["verdict"]["status"] == "winner"  # the primary alone would ship `loud`
    loud = guardrail["arms"][1]["guardrail"]
    assert loud["change"] == pytest.approx(loud_unsubscribes / 100 - 1)
    # The interval shown agrees with the guardrail's status.
    inside, beyond = loud["ci_high"] < 1.0, loud["ci_low"] > 1.0
    assert loud["status"] == ("non_inferior" if inside else "failed" if beyond else "inconclusive")


def test_winners_fail_on_guardrail_exits_4(engine: Engine, db_url: str) -> None:
    _exposed(engine, "promo", "control", 5000, {"purchase": 250, "unsubscribe": 100})
    _exposed(engine, "promo", "loud", 5000, {"purchase": 400, "unsubscribe": 400})
    engine.close()
    runner = CliRunner()
    plain = runner.invoke(app, ["winners", "promo", "--db", db_url])
    assert plain.exit_code == 0 and "promo: guardrail_failed" in plain.stdout
    failing = runner.invoke(app, ["winners", "promo", "--fail-on-guardrail", "--db", db_url])
    assert failing.exit_code == EXIT_GUARDRAIL == 4
    markdown = runner.invoke(app, ["report", "promo", "--format", "markdown", "--db", db_url])
    assert "GUARDRAIL unsubscribe" in markdown.stdout and "| FAILED |" in markdown.stdout


def test_a_bandit_takes_a_harmful_arm_out_of_traffic_for_the_phase(engine: Engine) -> None:
    _exposed(engine, "channels", "email", 3000, {"purchase": 60, "unsubscribe": 15})
    _exposed(engine, "channels", "sms", 3000, {"purchase": 150, "unsubscribe": 90})  # 6x the unsubscribes
    _exposed(engine, "channels", "push", 3000, {"purchase": 90, "unsubscribe": 15})
    live = engine.snapshot.get("channels")
    engine.upkeep.refresh_weights(live)
    weights = dict(zip(live.arms, live.weights, strict=True))
    assert weights["sms"] == 0.0 and weights["email"] + weights["push"] == pytest.approx(1.0)
    assert {engine.decide("channels", f"later-{i}").arm for i in range(300)} <= {"email", "push"}
    batch = engine.decide_many("channels", [f"batch-{i}" for i in range(2000)])
    assert "sms" not in {d.arm for d in batch}
    assert engine.decider.probabilities(live, "u", {})["sms"] == 0.0

    # Harm shown once stays: sms stays out even if later data looks better.
    _exposed(engine, "channels", "sms", 20000, {"purchase": 2000}, batch="-later")
    engine.upkeep.refresh_weights(live)
    assert live.weights is not None and live.weights[live.arms.index("sms")] == 0.0

    spec = live.spec
    history = engine.store.weights_history(spec.key, spec.traffic.phase)
    assert [h.reason for h in history][0].startswith("'sms' taken out of traffic: guardrail 'unsubscribe'")
    assert all(h.weights["sms"] == 0.0 for h in history)
    report = engine.report("channels").to_dict()
    sms = next(a for a in report["arms"] if a["arm"] == "sms")
    assert sms["weight"] == 0.0 and "guardrail 'unsubscribe'" in sms["excluded"]
    # Judged among the arms still in traffic: sms (the best converter) can no longer win.
    assert sms["prob_best"] is None
    assert sum(a["prob_best"] for a in report["arms"] if a["arm"] != "sms") == pytest.approx(1.0)
    assert report["verdict"]["winner"] != "sms" and "taken out of traffic" in report["verdict"]["reason"]


def test_a_bandit_without_harm_keeps_every_arm(engine: Engine) -> None:
    for arm in ("email", "sms", "push"):
        _exposed(engine, "channels", arm, 2000, {"purchase": 60, "unsubscribe": 20})
    live = engine.snapshot.get("channels")
    engine.upkeep.refresh_weights(live)
    assert live.weights is not None and np.all(live.weights > 0) and live.allowed is None
    assert engine.store.exclusions("channels", 1) == []
