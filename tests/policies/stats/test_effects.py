"""Effect estimates: delta-method relative lift and its interval."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from policies.stats.effects import Effect, absolute_difference, log_ratio, normal_interval, relative_lift
from policies.sufficient import BinaryStats, MeanStats

Z_975 = 1.959963984540054  # scipy.stats.norm.ppf(0.975)


def test_relative_lift_reference() -> None:
    # Deng, Knoblich & Lu (2018), percent change of independent means, by hand:
    # p_t = 0.065, p_c = 0.05, Var(p_t) = 0.065 * 0.935 / 4000, Var(p_c) = 0.05 * 0.95 / 4000,
    # Var = (Var(p_t) + 1.3**2 * Var(p_c)) / 0.05**2 = 0.014105
    lift = relative_lift(BinaryStats(4000, 260), BinaryStats(4000, 200))
    assert lift is not None
    assert_allclose([lift.estimate, lift.variance], [0.3, 0.014105], rtol=1e-9)
    interval = normal_interval(lift, 0.05)
    half = Z_975 * 0.014105**0.5
    assert_allclose([interval.low, interval.high], [0.3 - half, 0.3 + half], rtol=1e-9)


def test_revenue_lift_uses_sample_variances() -> None:
    treatment, control = MeanStats(500, 1450.0, 9800.0), MeanStats(480, 1200.0, 7300.0)
    var_t = (9800.0 - 500 * 2.9**2) / 499 / 500
    var_c = (7300.0 - 480 * 2.5**2) / 479 / 480
    lift = relative_lift(treatment, control)
    assert lift is not None
    assert_allclose(lift.estimate, 2.9 / 2.5 - 1, rtol=1e-12)
    assert_allclose(lift.variance, (var_t + (2.9 / 2.5) ** 2 * var_c) / 2.5**2, rtol=1e-12)
    assert_allclose(absolute_difference(treatment, control).variance, var_t + var_c, rtol=1e-12)


def test_lift_undefined_for_zero_control() -> None:
    assert relative_lift(BinaryStats(100, 3), BinaryStats(100, 0)) is None


def test_mean_of_empty_arm_is_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        absolute_difference(BinaryStats(0, 0), BinaryStats(10, 1))


def test_delta_method_lift_interval_coverage() -> None:
    """The 95% lift interval covers the true lift in about 95% of simulated experiments."""
    rng = np.random.default_rng(11)
    p_c, p_t, n = 0.08, 0.092, 6000
    x_t, x_c = rng.binomial(n, p_t, 2000), rng.binomial(n, p_c, 2000)
    covered = []
    for a, b in zip(x_t, x_c, strict=True):
        lift = relative_lift(BinaryStats(n, int(a)), BinaryStats(n, int(b)))
        assert lift is not None
        interval = normal_interval(lift, 0.05)
        covered.append(interval.low <= p_t / p_c - 1 <= interval.high)
    assert 0.935 <= np.mean(covered) <= 0.965


def test_normal_interval_of_zero_variance_is_a_point() -> None:
    interval = normal_interval(Effect(0.2, 0.0), 0.05)
    assert (interval.low, interval.high) == (0.2, 0.2)


def test_log_ratio_is_katz_log_risk_ratio() -> None:
    # Katz et al. (1978) / statsmodels test_proportions_2indep(method="log", compare="ratio"):
    # Var(log(p_t / p_c)) = 1/x_t - 1/n_t + 1/x_c - 1/n_c
    effect = log_ratio(BinaryStats(12000, 236), BinaryStats(11800, 210))
    assert effect is not None
    assert_allclose(effect.estimate, np.log((236 / 12000) / (210 / 11800)), rtol=1e-12)
    assert_allclose(effect.variance, 1 / 236 - 1 / 12000 + 1 / 210 - 1 / 11800, rtol=1e-12)


def test_log_ratio_undefined_without_positive_means() -> None:
    assert log_ratio(BinaryStats(100, 0), BinaryStats(100, 3)) is None
    assert log_ratio(BinaryStats(100, 3), BinaryStats(100, 0)) is None
    assert log_ratio(MeanStats(10, -5.0, 30.0), MeanStats(10, 5.0, 30.0)) is None
