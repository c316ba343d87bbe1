"""mSPRT always-valid p-values and confidence sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from policies.stats.effects import Effect, absolute_difference
from policies.stats.frequentist import proportions_z_test
from policies.stats.sequential import (
    always_valid_interval,
    msprt_log_likelihood_ratio,
    msprt_p_values,
    msprt_test,
)
from policies.sufficient import BinaryStats


def test_reference_two_sample_formula() -> None:
    # Johari, Pekelis & Walsh (2017), two-sample mSPRT with n per arm and known sigma^2:
    # sqrt(2 s2 / (2 s2 + n tau2)) * exp(n^2 tau2 d^2 / (4 s2 (2 s2 + n tau2)))
    # with n = 1000, s2 = 0.09, tau2 = 1e-4, d = 0.02 evaluates to 1.192329576388855.
    result = msprt_test(Effect(0.02, 2 * 0.09 / 1000), 1e-4)
    assert result.method == "msprt"
    assert_allclose([result.statistic, result.p_value], [1.192329576388855, 0.8386942836968337], rtol=1e-9)


@given(
    st.floats(-0.2, 0.2),
    st.floats(1e-7, 1e-2),
    st.floats(1e-6, 1e-1),
    st.floats(0.001, 0.2),
)
def test_interval_boundary_is_where_lambda_equals_one_over_alpha(
    estimate: float, variance: float, tau_sq: float, alpha: float
) -> None:
    interval = always_valid_interval(Effect(estimate, variance), tau_sq, alpha)
    radius = interval.high - estimate
    assert_allclose(estimate - interval.low, radius, rtol=1e-9)
    log_lr = msprt_log_likelihood_ratio(radius, variance, tau_sq)
    assert_allclose(float(log_lr), math.log(1 / alpha), rtol=1e-7)


@given(st.floats(-0.1, 0.1), st.floats(1e-6, 1e-3), st.floats(1e-5, 1e-2))
def test_p_value_below_alpha_exactly_when_interval_excludes_zero(
    estimate: float, variance: float, tau_sq: float
) -> None:
    effect = Effect(estimate, variance)
    p_value = msprt_test(effect, tau_sq).p_value
    interval = always_valid_interval(effect, tau_sq, 0.05)
    if abs(p_value - 0.05) > 1e-9:
        assert (p_value < 0.05) == (not interval.low <= 0 <= interval.high)


def test_zero_variance_limits() -> None:
    assert msprt_test(Effect(0.0, 0.0), 1e-4).p_value == 1.0
    assert msprt_test(Effect(0.3, 0.0), 1e-4).p_value == 0.0
    assert always_valid_interval(Effect(0.3, 0.0), 1e-4, 0.05).low == 0.3


def test_always_valid_interval_is_wider_than_fixed() -> None:
    effect = Effect(0.01, 1e-5)
    interval = always_valid_interval(effect, 1e-4, 0.05)
    assert interval.high - interval.estimate > 1.96 * effect.variance**0.5


def test_caller_bugs_raise() -> None:
    with pytest.raises(ValueError):
        msprt_test(Effect(0.1, 1e-4), 0.0)
    with pytest.raises(ValueError):
        always_valid_interval(Effect(0.1, 1e-4), 1e-4, 1.0)


def _peeking_experiment(
    rng: np.random.Generator, rate_t: float, reps: int = 2000, days: int = 30, daily: int = 500
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative conversions of treatment and control at each daily look, and exposures."""
    x_c = rng.binomial(daily, 0.10, size=(reps, days)).cumsum(axis=1)
    x_t = rng.binomial(daily, rate_t, size=(reps, days)).cumsum(axis=1)
    return x_t, x_c, daily * np.arange(1, days + 1)


def _sequential_p_values(x_t: np.ndarray, x_c: np.ndarray, n: np.ndarray) -> np.ndarray:
    """As `analyze` does it: unpooled variance, tau = 10% of the observed control rate."""
    r_t, r_c = x_t / n, x_c / n
    variance = r_t * (1 - r_t) / n + r_c * (1 - r_c) / n
    return msprt_p_values(r_t - r_c, variance, (0.10 * r_c) ** 2)


def test_vectorised_path_matches_the_report_path() -> None:
    treatment, control = BinaryStats(3000, 330), BinaryStats(3000, 290)
    expected = msprt_test(absolute_difference(treatment, control), (0.10 * 290 / 3000) ** 2)
    p = _sequential_p_values(np.array([330]), np.array([290]), np.array([3000]))
    assert_allclose(p, [expected.p_value], rtol=1e-12)


def test_peeking_inflates_fixed_horizon_but_not_sequential_false_positives() -> None:
    """30 daily looks at 2,000 A/A tests (500 exposures per arm per day, 10% conversion)."""
    x_t, x_c, n = _peeking_experiment(np.random.default_rng(2017), 0.10)
    _, fixed = proportions_z_test(x_t, n, x_c, n)
    fixed_rate = np.mean((fixed < 0.05).any(axis=1))
    sequential_rate = np.mean((_sequential_p_values(x_t, x_c, n) <= 0.05).any(axis=1))
    single_look_rate = np.mean(fixed[:, -1] < 0.05)
    assert 0.035 <= single_look_rate <= 0.065
    assert fixed_rate > 0.15  # about 0.27: peeking daily at a fixed-horizon test
    assert sequential_rate <= 0.05  # about 0.01


def test_sequential_test_still_detects_a_real_effect() -> None:
    x_t, x_c, n = _peeking_experiment(np.random.default_rng(2018), 0.12)
    assert np.mean((_sequential_p_values(x_t, x_c, n) <= 0.05).any(axis=1)) > 0.9
