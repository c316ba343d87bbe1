"""The ship decision with guardrails, simulated at the planned sample of `plan_decision_sample_size`."""

from __future__ import annotations

import numpy as np
import pytest

from policies.simulation.decisions import DecisionScenario, GuardrailTruth, MetricTruth, simulate_decisions
from policies.stats.planning import GuardrailDesign, plan_decision_sample_size

PURCHASE = MetricTruth("purchase", 0.05, 1.15)  # planned for a 10% lift, truly +15%


def _scenario(unsubscribe_rate: float, ratio: float) -> DecisionScenario:
    """Purchase 5% (mde 10%), unsubscribe guardrail at `unsubscribe_rate` with a 20% margin."""
    plan = plan_decision_sample_size(0.05, 0.10, guardrails=[GuardrailDesign("unsubscribe", unsubscribe_rate, 0.2,
                                                                              "decrease")])
    return DecisionScenario(PURCHASE, (GuardrailTruth("unsubscribe", unsubscribe_rate, ratio),), plan.n_per_arm)


@pytest.mark.slow
@pytest.mark.parametrize("unsubscribe_rate", [0.01, 0.02])
def test_a_guardrail_degraded_by_twice_its_margin_stops_the_winner(unsubscribe_rate: float) -> None:
    rates = simulate_decisions(_scenario(unsubscribe_rate, 1.4), runs=800, rng=np.random.default_rng(4))
    assert rates.primary_wins >= 760 and rates.shipped == 0  # 800 and 797 wins
    assert rates.blocked_share is not None and rates.blocked_share >= 0.95  # 1.0
    assert rates.statuses.get("guardrail_failed", 0) > 600  # most show the harm outright; the rest keep running


@pytest.mark.slow
def test_a_guardrail_that_holds_blocks_few_winners_at_the_planned_sample() -> None:
    # The primary needs more units than the guardrail: the guardrail has power 0.96 there.
    loose = simulate_decisions(_scenario(0.02, 1.0), runs=1500, rng=np.random.default_rng(5))
    assert loose.blocked_share is not None and loose.blocked_share <= 0.10  # 0.033
    # The guardrail sets the sample: it blocks its planned type II error, beta / (G + 1) = 0.10.
    tight = simulate_decisions(_scenario(0.01, 1.0), runs=1500, rng=np.random.default_rng(6))
    assert tight.blocked_share is not None and abs(tight.blocked_share - 0.10) <= 0.025  # 0.097, sd 0.008
    assert tight.shipped / tight.runs >= 0.8 - 0.025  # 0.90: the decision keeps its power 0.8


def test_no_guardrails_leaves_the_primary_verdict() -> None:
    scenario = DecisionScenario(PURCHASE, (), plan_decision_sample_size(0.05, 0.10).n_per_arm)
    rates = simulate_decisions(scenario, runs=50, rng=np.random.default_rng(7))
    assert rates.shipped == rates.primary_wins and rates.runs == 50
    assert set(rates.statuses) <= {"winner", "no_difference"}


@pytest.mark.parametrize("call", [
    lambda: MetricTruth("m", 0.0),
    lambda: MetricTruth("m", 0.5, 3.0),
    lambda: GuardrailTruth("m", 0.1, margin=1.2, direction="increase"),
    lambda: simulate_decisions(DecisionScenario(PURCHASE, (), 0), runs=1, rng=np.random.default_rng(0)),
])
def test_bad_scenarios_raise(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]
