"""Effect estimates and Fieller's interval for a ratio of means."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from policies.stats.effects import Effect, absolute_difference, fieller_interval, log_ratio
from policies.sufficient import BinaryStats, MeanStats


def test_difference_uses_sample_variances() -> None:
    treatment, control = MeanStats(500, 1450.0, 9800.0), MeanStats(480, 1200.0, 7300.0)
    var_t = (9800.0 - 500 * 2.9**2) / 499 / 500
    var_c = (7300.0 - 480 * 2.5**2) / 479 / 480
    assert_allclose(absolute_difference(treatment, control).variance, var_t + var_c, rtol=1e-12)


def test_mean_of_empty_arm_is_a_caller_bug() -> None:
    with pytest.raises(ValueError):
        absolute_difference(BinaryStats(0, 0), BinaryStats(10, 1))


def test_fieller_reference() -> None:
    # Fieller's set {rho : (m_t - rho m_c)^2 <= q^2 (v_t + rho^2 v_c)} for m_t = 2.9, v_t = 0.01,
    # m_c = 2.5, v_c = 0.0064, q = 1.96: the roots of (6.25 - 0.0245862...) rho^2 - 14.5 rho
    # + (8.41 - 0.038416) = 0, here from numpy.roots([2.5**2 - 1.96**2 * 0.0064, -2 * 2.9 * 2.5,
    # 2.9**2 - 1.96**2 * 0.01]) -> [1.2531734..., 1.0776226...]
    interval = fieller_interval(Effect(2.9, 0.01), Effect(2.5, 0.0064), 1.96, nonnegative=True)
    ref = np.sort(np.roots([2.5**2 - 1.96**2 * 0.0064, -2 * 2.9 * 2.5, 2.9**2 - 1.96**2 * 0.01]))
    assert_allclose([interval.estimate, interval.low, interval.high], [2.9 / 2.5 - 1, *(ref - 1)], rtol=1e-12)
    # At rho = 1 the statistic is (m_t - m_c) / sqrt(v_t + v_c): 0.4 / sqrt(0.0164) = 3.12 > 1.96.
    assert interval.low > 0


@pytest.mark.parametrize("critical", [1.5, 3.0, 3.1234, 3.1235, 3.2, 10.0])
def test_fieller_excludes_ratio_one_exactly_when_the_difference_test_rejects(critical: float) -> None:
    treatment, control = Effect(2.9, 0.01), Effect(2.5, 0.0064)
    t = (2.9 - 2.5) / np.sqrt(0.0164)  # 3.1234752377721214
    interval = fieller_interval(treatment, control, critical, nonnegative=False)
    assert (interval.low > 0) == (t > critical)


def test_fieller_unbounded_when_control_mean_is_not_distinguishable_from_zero() -> None:
    # a = m_c^2 - q^2 v_c < 0; rays (-inf, r1] u [r2, inf) with r1 < 0 < 1 < r2 here.
    treatment, control = Effect(10.0, 0.01), Effect(0.5, 1.0)
    two_rays = fieller_interval(treatment, control, 1.96, nonnegative=False)
    assert (two_rays.low, two_rays.high) == (-math.inf, math.inf)
    cut = fieller_interval(treatment, control, 1.96, nonnegative=True)
    r2 = max(np.roots([0.25 - 1.96**2, -2 * 10 * 0.5, 100 - 1.96**2 * 0.01]))
    assert cut.high == math.inf and cut.low == pytest.approx(r2 - 1, rel=1e-12) and cut.low > 0
    whole = fieller_interval(Effect(1.0, 4.0), Effect(0.5, 1.0), 1.96, nonnegative=True)
    assert (whole.low, whole.high) == (-1.0, math.inf)


def test_fieller_never_below_minus_one_for_nonnegative_values() -> None:
    interval = fieller_interval(Effect(0.1, 0.04), Effect(2.0, 0.01), 1.96, nonnegative=True)
    assert interval.low == -1.0 < interval.high
    assert fieller_interval(Effect(0.1, 0.04), Effect(2.0, 0.01), 1.96, nonnegative=False).low < -1.0


def test_fieller_without_any_variance_is_the_point() -> None:
    interval = fieller_interval(Effect(3.0, 0.0), Effect(2.0, 0.0), math.inf, nonnegative=True)
    assert (interval.low, interval.high) == (0.5, 0.5)
    with pytest.raises(ValueError):
        fieller_interval(Effect(3.0, 0.1), Effect(0.0, 0.1), 1.96, nonnegative=True)


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
