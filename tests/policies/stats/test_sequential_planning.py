"""Sequential planned n: power of the always-valid test over K looks, by recursive integration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.optimize import brentq
from scipy.stats import norm

from policies.stats.planning import PlanningError, plan_binary_sample_size, plan_mean_sample_size
from policies.stats.sequential import always_valid_radius, msprt_log_likelihood_ratio
from policies.stats.sequential_planning import (
    plan_sequential_sample_size,
    sequential_drift,
    sequential_power,
)


def _one_look_power(u: float, alpha: float) -> float:
    """The fixed-horizon normal power formula with the mixture's critical value c (in standard errors)."""
    c = float(always_valid_radius(1.0, u**2, alpha))
    return float(norm.cdf(u - c) + norm.cdf(-u - c))


@pytest.mark.parametrize("u", [1.5, 2.8, 3.44, 5.0])
def test_one_look_reduces_to_the_normal_power_formula(u: float) -> None:
    assert_allclose(sequential_power(u, 0.05, looks=1), _one_look_power(u, 0.05), rtol=1e-12)


def test_one_look_plan_solves_the_normal_power_formula() -> None:
    expected = brentq(lambda u: _one_look_power(u, 0.05) - 0.8, 2.0, 6.0, xtol=1e-12)
    assert_allclose(sequential_drift(0.05, 0.8, 1), expected, rtol=1e-8)


def test_thirty_looks_match_a_brownian_simulation() -> None:
    """Independent check of the integration: 200,000 seeded Gaussian walks, decided by the mSPRT itself."""
    u, looks, reps = 3.44, 30, 200_000
    rng = np.random.default_rng(1975)
    t = np.arange(1, looks + 1) / looks
    walk = np.cumsum(rng.standard_normal((reps, looks)), axis=1) / math.sqrt(looks) + u * t
    # at look k the estimate is walk / t with variance 1 / t (units: standard errors at the horizon)
    crossed = (msprt_log_likelihood_ratio(walk / t, 1.0 / t, u**2) >= math.log(20)).any(axis=1)
    se = math.sqrt(0.8 * 0.2 / reps)
    assert abs(sequential_power(u, 0.05, looks) - crossed.mean()) < 4 * se


def test_nested_looks_only_add_power() -> None:
    powers = [sequential_power(3.44, 0.05, k) for k in (1, 5, 15, 30, 60)]
    assert powers == sorted(powers)
    assert powers[0] < 0.75 < powers[3]


def test_plan_for_a_five_percent_rate() -> None:
    plan = plan_sequential_sample_size(0.05, 0.10)
    pair_variance = 0.05 * 0.95 + 0.055 * 0.945  # unpooled, at the baseline and the target
    assert plan.n_per_arm == math.ceil(plan.drift**2 * pair_variance / 0.005**2)
    assert_allclose(sequential_power(plan.drift, 0.05, 30), 0.8, atol=1e-8)
    fixed = plan_binary_sample_size(0.05, 0.10).n_per_arm  # 31,218 (test_planning)
    assert 1.4 <= plan.n_per_arm / fixed <= 1.6  # issue target <= 2.0, aim 1.5


def test_plan_for_a_mean_uses_the_declared_sd() -> None:
    plan = plan_sequential_sample_size(2.0, 0.10, std=7.0)
    assert plan.n_per_arm == math.ceil(plan.drift**2 * 2 * 7.0**2 / 0.2**2)
    assert plan.n_per_arm / plan_mean_sample_size(2.0, 7.0, 0.10).n_per_arm <= 2.0


def test_several_variants_plan_each_comparison_at_the_bonferroni_level() -> None:
    holm = plan_sequential_sample_size(0.05, 0.10, arms=3, correction="holm")
    none = plan_sequential_sample_size(0.05, 0.10, arms=3, correction="none")
    assert holm.alpha_per_test == 0.025 and none.alpha_per_test == 0.05
    assert holm.drift == sequential_drift(0.025, 0.8, 30)
    assert holm.n_per_arm > none.n_per_arm


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"baseline": 1.2, "mde": 0.1}, "baseline"),
    ({"baseline": 0.95, "mde": 0.1}, "mde"),
    ({"baseline": 0.05, "mde": 0.0}, "mde"),
    ({"baseline": 0.05, "mde": 0.1, "std": 0.0}, "std"),
    ({"baseline": 0.05, "mde": 0.1, "looks": 0}, "looks"),
    ({"baseline": 0.05, "mde": 0.1, "power": 1.0}, "power"),
])
def test_inputs_without_a_plan_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(PlanningError) as error:
        plan_sequential_sample_size(**kwargs)  # type: ignore[arg-type]
    assert error.value.field == field
