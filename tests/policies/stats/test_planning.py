"""Sample-size planning: reference values and power at the planned sample, by simulation."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from numpy.testing import assert_allclose

from policies.stats.corrections import adjust_p_values
from policies.stats.frequentist import proportions_z_test, welch_test
from policies.stats.planning import PlanningError, alpha_per_test, plan_binary_sample_size, plan_mean_sample_size
from policies.sufficient import MeanStats


def test_binary_reference() -> None:
    # h = statsmodels.stats.proportion.proportion_effectsize(0.055, 0.05)
    # statsmodels.stats.power.NormalIndPower().solve_power(effect_size=abs(h), alpha=0.05,
    #     power=0.8, ratio=1.0) == 31217.423430777748
    plan = plan_binary_sample_size(0.05, 0.10, relative=True)
    assert_allclose(plan.effect_size, 0.022424345475803797, rtol=1e-9)
    assert (plan.n_per_arm, plan.total, plan.arms) == (31218, 62436, 2)
    assert plan.alpha_per_test == 0.05
    assert_allclose(plan.target, 0.055, rtol=1e-12)


def test_binary_reference_three_arms_plans_at_bonferroni_level() -> None:
    # NormalIndPower().solve_power(effect_size=abs(h), alpha=0.025, power=0.8, ratio=1.0)
    #     == 37804.5605007239 (h as above)
    plan = plan_binary_sample_size(0.05, 0.10, arms=3, correction="holm")
    assert plan.alpha_per_test == 0.025
    assert (plan.n_per_arm, plan.total) == (37805, 113415)
    assert plan_binary_sample_size(0.05, 0.10, arms=3, correction="none").n_per_arm == 31218


def test_absolute_and_relative_mde_agree() -> None:
    assert (
        plan_binary_sample_size(0.05, 0.005, relative=False).n_per_arm == plan_binary_sample_size(0.05, 0.10).n_per_arm
    )


def test_revenue_reference() -> None:
    # statsmodels.stats.power.TTestIndPower().solve_power(effect_size=0.25 / 5.0, alpha=0.05,
    #     power=0.8, ratio=1.0) == 6280.048916291407
    plan = plan_mean_sample_size(2.5, 5.0, 0.10)
    assert plan.n_per_arm == 6281
    assert_allclose(plan.effect_size, 0.05, rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"baseline": 0.0, "mde": 0.1},
        {"baseline": 0.95, "mde": 0.1},  # target 1.045
        {"baseline": 0.05, "mde": 0.0},
        {"baseline": 0.05, "mde": 0.1, "power": 1.0},
        {"baseline": 0.05, "mde": 0.1, "alpha": 0.0},
        {"baseline": 0.05, "mde": 0.1, "arms": 1},
    ],
)
def test_impossible_plans_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        plan_binary_sample_size(**kwargs)  # type: ignore[arg-type]


def test_alpha_per_test() -> None:
    assert alpha_per_test(0.05, 5, "bh") == 0.0125
    assert alpha_per_test(0.05, 5, "none") == 0.05


def test_power_at_planned_sample_binary() -> None:
    plan = plan_binary_sample_size(0.05, 0.10, power=0.8)
    rng = np.random.default_rng(5)
    n = plan.n_per_arm
    _, p = proportions_z_test(rng.binomial(n, 0.055, 2000), n, rng.binomial(n, 0.05, 2000), n)
    assert abs(np.mean(p < 0.05) - 0.8) <= 0.04


def test_power_at_planned_sample_three_arms_bonferroni() -> None:
    """Each variant reaches the target power after the correction across both comparisons."""
    plan = plan_binary_sample_size(0.10, 0.08, arms=3, correction="bonferroni", power=0.8)
    rng = np.random.default_rng(6)
    n = plan.n_per_arm
    control = rng.binomial(n, 0.10, 2000)
    _, p_b = proportions_z_test(rng.binomial(n, 0.108, 2000), n, control, n)
    _, p_c = proportions_z_test(rng.binomial(n, 0.10, 2000), n, control, n)
    adjusted = np.array([adjust_p_values([b, c], "bonferroni") for b, c in zip(p_b, p_c, strict=True)])
    assert abs(np.mean(adjusted[:, 0] < 0.05) - 0.8) <= 0.04


def test_power_at_planned_sample_revenue() -> None:
    """Normal outcomes: sample mean and variance are drawn from their exact distributions."""
    mean, std, mde = 2.5, 5.0, 0.10
    plan = plan_mean_sample_size(mean, std, mde, power=0.8)
    rng = np.random.default_rng(7)
    n, reps = plan.n_per_arm, 2000

    def arm(mu: float) -> list[MeanStats]:
        means = rng.normal(mu, std / np.sqrt(n), reps)
        variances = std**2 * rng.chisquare(n - 1, reps) / (n - 1)
        return [MeanStats(n, m * n, (n - 1) * v + n * m * m) for m, v in zip(means, variances, strict=True)]

    treated, control = arm(mean * (1 + mde)), arm(mean)
    p = np.array([welch_test(t, c).p_value for t, c in zip(treated, control, strict=True)])
    assert abs(np.mean(p < 0.05) - 0.8) <= 0.04


@pytest.mark.parametrize(("call", "field"), [
    (lambda: plan_binary_sample_size(0.1, 1e-12), "mde"),  # the solver cannot converge: was NaN -> int
    (lambda: plan_binary_sample_size(0.1, float("nan")), "mde"),
    (lambda: plan_binary_sample_size(1.5, 0.1), "baseline"),
    (lambda: plan_binary_sample_size(0.1, 0.1, alpha=0.0), "alpha"),
    (lambda: plan_binary_sample_size(0.1, 0.1, power=1.0), "power"),
    (lambda: plan_binary_sample_size(0.1, 0.1, arms=1), "arms"),
    (lambda: plan_mean_sample_size(10.0, 5.0, 1e-12), "mde"),
    (lambda: plan_mean_sample_size(10.0, 1e-15, 0.05), "std"),  # a near-zero-variance arm
    (lambda: plan_mean_sample_size(float("inf"), 5.0, 0.05), "baseline"),
    (lambda: plan_binary_sample_size(0.1, 1e-300, relative=False), "mde"),  # target == baseline: h is 0
], ids=["tiny-mde", "nan-mde", "rate-above-1", "alpha-0", "power-1", "one-arm", "tiny-mean-mde", "tiny-std",
        "infinite-baseline", "mde-below-precision"])
def test_inputs_without_a_plan_raise_naming_the_input_and_warn_nothing(call: Any, field: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(PlanningError) as raised:
            call()
    assert raised.value.field == field and isinstance(raised.value, ValueError)
    assert caught == []
