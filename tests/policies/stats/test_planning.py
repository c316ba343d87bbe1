"""Sample-size planning: reference values and power at the planned sample, by simulation."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from numpy.testing import assert_allclose

from policies.stats.corrections import adjust_p_values
from policies.stats.frequentist import proportions_z_test, welch_test
from policies.stats.guardrails import guardrail_test
from policies.stats.planning import (
    GuardrailDesign,
    PlanningError,
    alpha_per_test,
    decision_power,
    plan_binary_sample_size,
    plan_decision_sample_size,
    plan_mean_sample_size,
    plan_non_inferiority_sample_size,
    success_alpha,
)
from policies.sufficient import BinaryStats, MeanStats


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


UNSUBSCRIBE = GuardrailDesign("unsubscribe", 0.01, 0.2, "decrease")


def test_decision_levels_follow_the_paper() -> None:
    # Schultzberg, Ankargren & Frånberg (2024): beta / (G + 1) per test, alpha / S for success metrics
    assert decision_power(0.8, 0) == 0.8
    assert_allclose([decision_power(0.8, 1), decision_power(0.8, 3)], [0.9, 0.95], rtol=1e-12)
    assert success_alpha(0.05) == 0.05 and success_alpha(0.05, 2) == 0.025


def test_non_inferiority_reference_binary() -> None:
    # d = log(1.2) / sqrt(0.99 / 0.01) = 0.018324005911485447
    # statsmodels.stats.power.NormalIndPower().solve_power(effect_size=d, alpha=0.025, power=0.9,
    #     ratio=1.0, alternative="larger") == 62587.17769015833, as is
    # statsmodels.stats.power.zt_ind_solve_power(...same...); closed form
    # 2 * (norm.ppf(0.975) + norm.ppf(0.9))**2 / d**2 == 62587.177690100536
    plan = plan_non_inferiority_sample_size(UNSUBSCRIBE, alpha=0.05, power=0.9)
    assert_allclose(plan.effect_size, 0.018324005911485447, rtol=1e-12)
    assert (plan.n_per_arm, plan.alpha_one_sided, plan.power) == (62588, 0.025, 0.9)


def test_non_inferiority_reference_mean_harm_is_a_decrease() -> None:
    # d = |log(0.9)| / (6 / 2.5) = 0.04390021485742762
    # NormalIndPower().solve_power(effect_size=d, alpha=0.025, power=0.9, ratio=1.0,
    #     alternative="larger") == 10904.177759874508
    plan = plan_non_inferiority_sample_size(GuardrailDesign("revenue", 2.5, 0.1, "increase", std=6.0), power=0.9)
    assert_allclose(plan.effect_size, 0.04390021485742762, rtol=1e-12)
    assert plan.n_per_arm == 10905


def test_decision_plan_is_the_largest_need_at_the_corrected_power() -> None:
    plan = plan_decision_sample_size(0.05, 0.10, guardrails=[UNSUBSCRIBE], power=0.8)
    assert plan.power_per_test == pytest.approx(0.9)
    assert plan.primary == plan_binary_sample_size(0.05, 0.10, power=plan.power_per_test)
    assert plan.primary.n_per_arm == 41792  # NormalIndPower at power 0.9 (h as in test_binary_reference)
    assert (plan.n_per_arm, plan.total, plan.binding) == (62588, 125176, "unsubscribe")
    common = plan_decision_sample_size(0.05, 0.10, guardrails=[replace(UNSUBSCRIBE, baseline=0.02)],
                                       primary_metric="purchase")
    assert (common.n_per_arm, common.binding) == (41792, "purchase")
    assert plan_decision_sample_size(0.05, 0.10).n_per_arm == plan_binary_sample_size(0.05, 0.10).n_per_arm
    two_success = plan_decision_sample_size(0.05, 0.10, success_metrics=2)
    assert two_success.primary.alpha == 0.025


def test_mean_primary_in_the_decision_plan() -> None:
    plan = plan_decision_sample_size(2.5, 0.10, std=5.0, guardrails=[UNSUBSCRIBE, UNSUBSCRIBE])
    assert plan.primary == plan_mean_sample_size(2.5, 5.0, 0.10, power=1 - 0.2 / 3)
    assert len(plan.guardrails) == 2 and plan.guardrails[0].power == pytest.approx(1 - 0.2 / 3)


def test_guardrail_power_at_planned_sample() -> None:
    """No true change: the guardrail is shown non-inferior in about 90% of experiments at its plan."""
    n = plan_non_inferiority_sample_size(GuardrailDesign("unsubscribe", 0.02, 0.2, "decrease"), power=0.9).n_per_arm
    rng = np.random.default_rng(8)
    shown = [
        guardrail_test(BinaryStats(n, int(t)), BinaryStats(n, int(c)), metric="unsubscribe", arm="b", margin=0.2,
                       direction="decrease").non_inferior
        for t, c in zip(rng.binomial(n, 0.02, 3000), rng.binomial(n, 0.02, 3000), strict=True)
    ]
    assert abs(np.mean(shown) - 0.9) <= 0.02  # binomial sd 0.0055


@pytest.mark.parametrize(("design", "field"), [
    (replace(UNSUBSCRIBE, margin=0.0), "margin"),
    (replace(UNSUBSCRIBE, margin=1.0, direction="increase"), "margin"),
    (replace(UNSUBSCRIBE, margin=1e-300), "margin"),  # log1p(margin) underflows the solver
    (replace(UNSUBSCRIBE, baseline=0.0), "baseline"),
    (replace(UNSUBSCRIBE, baseline=1.0), "baseline"),
    (replace(UNSUBSCRIBE, baseline=-2.0, std=1.0), "baseline"),
    (replace(UNSUBSCRIBE, baseline=2.0, std=0.0), "std"),
])
def test_guardrails_without_a_plan_raise_naming_the_input(design: GuardrailDesign, field: str) -> None:
    with pytest.raises(PlanningError) as raised:
        plan_non_inferiority_sample_size(design)
    assert raised.value.field == field


@pytest.mark.parametrize(("call", "field"), [
    (lambda: decision_power(1.0, 1), "power"),
    (lambda: decision_power(0.8, -1), "guardrails"),
    (lambda: success_alpha(0.0), "alpha"),
    (lambda: success_alpha(0.05, 0), "success_metrics"),
])
def test_decision_levels_refuse_bad_input(call: Any, field: str) -> None:
    with pytest.raises(PlanningError) as raised:
        call()
    assert raised.value.field == field
