"""Units that decide several times: the generator, the two ways of counting, and A/A error rates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from policies.simulation.units import (
    RepeatUnits,
    aa_false_positive_rates,
    decision_level_counts,
    draw_unit_outcomes,
    run_stats,
    user_level_counts,
)
from policies.stats.frequentist import proportions_z_test, two_proportion_test


def test_design_effect_of_kish() -> None:
    # d = 1 + Poisson(4): E[d] = 5, E[d^2] = 4 + 25; ICC = 1 / (2 + 1): 1 + (29 / 5 - 1) / 3 = 2.6
    assert RepeatUnits(concentration=2.0, mean_decisions=5.0).design_effect == pytest.approx(2.6)
    assert RepeatUnits(mean_decisions=1.0).design_effect == pytest.approx(1.0)  # one decision each: no clustering


def test_draws_are_reproducible_and_plausible() -> None:
    model = RepeatUnits(rate=0.2, concentration=3.0, mean_decisions=4.0)
    first = draw_unit_outcomes(model, units=5000, runs=2, rng=np.random.default_rng(0))
    again = draw_unit_outcomes(model, units=5000, runs=2, rng=np.random.default_rng(0))
    assert_array_equal(first.conversions, again.conversions)
    assert first.decisions.min() >= 1 and np.all(first.conversions <= first.decisions)
    assert abs(first.decisions.mean() - 4.0) < 0.1
    assert abs(first.conversions.sum() / first.decisions.sum() - 0.2) < 0.01
    assert set(np.unique(first.arm)) == {0, 1}


def test_the_two_counts_by_hand() -> None:
    outcomes = draw_unit_outcomes(RepeatUnits(rate=0.3), units=50, runs=3, rng=np.random.default_rng(1),
                                  lifts=(1.0, 1.5, 0.5))
    users, converted = user_level_counts(outcomes)
    decisions, conversions = decision_level_counts(outcomes)
    for run in range(3):
        for arm in range(3):
            mine = outcomes.arm[run] == arm
            assert users[run, arm] == mine.sum()
            assert converted[run, arm] == (outcomes.conversions[run][mine] > 0).sum()
            assert decisions[run, arm] == outcomes.decisions[run][mine].sum()
            assert conversions[run, arm] == outcomes.conversions[run][mine].sum()
    assert users.sum() == 150


def test_vectorised_test_is_the_report_test() -> None:
    outcomes = draw_unit_outcomes(RepeatUnits(), units=4000, runs=1, rng=np.random.default_rng(2))
    n, x = user_level_counts(outcomes)
    control, variant = run_stats((n, x), 0)
    _, p = proportions_z_test(x[:, 1], n[:, 1], x[:, 0], n[:, 0])
    assert two_proportion_test(variant, control).p_value == pytest.approx(float(p[0]), rel=1e-12)


@pytest.mark.slow
def test_user_level_keeps_alpha_and_per_decision_does_not() -> None:
    """2,000 A/A experiments of 2,000 units deciding 5 times on average (ICC 1/3)."""
    model = RepeatUnits(rate=0.05, concentration=2.0, mean_decisions=5.0)
    rates = aa_false_positive_rates(model, units=2000, runs=2000, rng=np.random.default_rng(3))
    assert 0.035 <= rates.user_level <= 0.065  # 0.050
    # anti-conservative as the design effect predicts: 2 Phi(-1.96 / sqrt(2.6)) = 0.224
    predicted = math.erfc(1.959963984540054 / math.sqrt(2 * model.design_effect))
    assert rates.per_decision > 0.15 and abs(rates.per_decision - predicted) < 0.03  # 0.214


@pytest.mark.parametrize("kwargs", [{"rate": 0.0}, {"rate": 1.0}, {"concentration": 0.0}, {"mean_decisions": 0.5}])
def test_bad_models_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RepeatUnits(**kwargs)


@pytest.mark.parametrize("kwargs", [{"units": 1}, {"runs": 0}, {"lifts": (1.0,)}, {"lifts": (1.0, -1.0)}])
def test_bad_draws_raise(kwargs: dict[str, object]) -> None:
    options: dict[str, object] = {"units": 10, "runs": 1} | kwargs
    with pytest.raises(ValueError):
        draw_unit_outcomes(RepeatUnits(), rng=np.random.default_rng(0), **options)  # type: ignore[arg-type]
