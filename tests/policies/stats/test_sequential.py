"""mSPRT always-valid p-values and confidence sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy.integrate import quad
from scipy.stats import norm

from policies.stats.effects import Effect, absolute_difference, fieller_interval
from policies.stats.frequentist import proportions_z_test
from policies.stats.sequential import (
    SPREAD,
    always_valid_interval,
    always_valid_ratio_interval,
    mixture_boundary,
    msprt_log_likelihood_ratio,
    msprt_p_values,
    msprt_test,
)
from policies.sufficient import BinaryStats


def _lambda_by_quadrature(estimate: float, variance: float, tau: float) -> float:
    """The mixture likelihood ratio from its definition (module doc of policies.stats.sequential),
    integrated numerically over H = 1/2 N(-tau, (tau/4)^2) + 1/2 N(tau, (tau/4)^2) with scipy.integrate.quad."""
    def integrand(theta: float) -> float:
        density = 0.5 * (norm.pdf(theta, -tau, SPREAD * tau) + norm.pdf(theta, tau, SPREAD * tau))
        return math.exp((theta * estimate - theta**2 / 2) / variance) * density

    return quad(integrand, -tau * 4, tau * 4, points=[-tau, tau], epsabs=0, epsrel=1e-12, limit=200)[0]


@pytest.mark.parametrize(("estimate", "variance", "tau"), [
    (0.02, 2 * 0.09 / 1000, 0.01),  # n = 1000 per arm, sigma^2 = 0.09
    (-0.004, 2 * 0.0475 / 20_000, 0.005),
    (0.3, 0.04, 0.5),
    (0.0, 1e-4, 0.01),
])
def test_closed_form_matches_the_mixture_integral(estimate: float, variance: float, tau: float) -> None:
    result = msprt_test(Effect(estimate, variance), tau**2)
    assert result.method == "msprt"
    assert_allclose(result.statistic, _lambda_by_quadrature(estimate, variance, tau), rtol=1e-8)
    assert_allclose(result.p_value, min(1.0, 1.0 / result.statistic), rtol=1e-12)


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
    rng: np.random.Generator, rate_t: float, reps: int = 4000, looks: int = 30, horizon: int = 22_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative conversions of treatment and control at each of `looks` equally spaced looks up
    to `horizon` per arm (about the sequential planned n for a 10% rate and a 10% lift), and exposures."""
    step = horizon // looks
    x_c = rng.binomial(step, 0.10, size=(reps, looks)).cumsum(axis=1)
    x_t = rng.binomial(step, rate_t, size=(reps, looks)).cumsum(axis=1)
    return x_t, x_c, step * np.arange(1, looks + 1)


def _sequential_p_values(x_t: np.ndarray, x_c: np.ndarray, n: np.ndarray) -> np.ndarray:
    """As `analyze` does it: unpooled variance, tau = 10% of the declared 10% baseline."""
    r_t, r_c = x_t / n, x_c / n
    variance = r_t * (1 - r_t) / n + r_c * (1 - r_c) / n
    return msprt_p_values(r_t - r_c, variance, (0.10 * 0.10) ** 2)


def test_vectorised_path_matches_the_report_path() -> None:
    treatment, control = BinaryStats(3000, 330), BinaryStats(3000, 290)
    expected = msprt_test(absolute_difference(treatment, control), (0.10 * 0.10) ** 2)
    p = _sequential_p_values(np.array([330]), np.array([290]), np.array([3000]))
    assert_allclose(p, [expected.p_value], rtol=1e-12)


def test_peeking_inflates_fixed_horizon_and_sequential_uses_its_budget() -> None:
    """30 looks at 4,000 A/A tests up to 22,000 exposures per arm, 10% conversion."""
    x_t, x_c, n = _peeking_experiment(np.random.default_rng(2017), 0.10)
    _, fixed = proportions_z_test(x_t, n, x_c, n)
    fixed_rate = np.mean((fixed < 0.05).any(axis=1))
    sequential_rate = np.mean((_sequential_p_values(x_t, x_c, n) <= 0.05).any(axis=1))
    single_look_rate = np.mean(fixed[:, -1] < 0.05)
    assert 0.035 <= single_look_rate <= 0.065
    assert fixed_rate > 0.15  # about 0.27: peeking at a fixed-horizon test
    # target [0.02, 0.05]; about 0.025 (tests/benchmarks/bench_inference.py), Monte Carlo se 0.0025
    assert 0.015 <= sequential_rate <= 0.05


def test_sequential_test_still_detects_a_real_effect() -> None:
    x_t, x_c, n = _peeking_experiment(np.random.default_rng(2018), 0.11)
    # 22,000 per arm is about the sequential planned n for 80% power at +10% (see test_sequential_planning)
    assert 0.74 <= np.mean((_sequential_p_values(x_t, x_c, n) <= 0.05).any(axis=1)) <= 0.86


# --- the ratio confidence sequence ------------------------------------------------------------

def test_mixture_boundary_reference() -> None:
    # The boundary in standard errors is the confidence sequence's radius over sqrt(V), and
    # Lambda at |estimate| = q sqrt(V) is exactly 1/alpha.
    q = mixture_boundary(4e-4, 1e-4, 0.05)
    assert_allclose(q * 0.02, always_valid_interval(Effect(0.0, 4e-4), 1e-4, 0.05).high, rtol=1e-12)
    assert_allclose(msprt_test(Effect(q * 0.02, 4e-4), 1e-4).p_value, 0.05, rtol=1e-9)
    assert mixture_boundary(0.0, 1e-4, 0.05) == math.inf


@given(
    st.floats(0.5, 5.0),
    st.floats(0.5, 5.0),
    st.floats(1e-4, 0.5),
    st.floats(1e-4, 0.5),
    st.floats(1e-3, 1.0),
    st.sampled_from([0.01, 0.05, 0.1]),
)
def test_ratio_sequence_excludes_one_exactly_when_the_difference_mixture_rejects(
    m_t: float, m_c: float, v_t: float, v_c: float, tau_sq: float, alpha: float
) -> None:
    interval = always_valid_ratio_interval(Effect(m_t, v_t), Effect(m_c, v_c), tau_sq, alpha, nonnegative=True)
    p_value = msprt_test(Effect(m_t - m_c, v_t + v_c), tau_sq).p_value
    if abs(p_value - alpha) > 1e-9:
        assert (interval.low > 0 or interval.high < 0) == (p_value < alpha)
    assert interval.low >= -1.0 and interval.low < interval.high
    assert interval.low <= m_t / m_c - 1 <= interval.high


def test_ratio_sequence_is_fieller_at_the_mixture_boundary() -> None:
    treatment, control = Effect(2.9, 0.01), Effect(2.5, 0.0064)
    interval = always_valid_ratio_interval(treatment, control, 0.04, 0.05, nonnegative=False)
    q = mixture_boundary(0.0164, 0.04, 0.05)
    # numpy.roots of Fieller's quadratic (m_c^2 - q^2 v_c) rho^2 - 2 m_t m_c rho + (m_t^2 - q^2 v_t)
    ref = np.sort(np.roots([2.5**2 - q**2 * 0.0064, -2 * 2.9 * 2.5, 2.9**2 - q**2 * 0.01]))
    assert_allclose([interval.low, interval.high], ref - 1, rtol=1e-12)
    fixed = fieller_interval(treatment, control, 1.959963984540054, nonnegative=False)
    assert interval.low < fixed.low and interval.high > fixed.high


def test_ratio_sequence_covers_the_true_lift_at_every_look() -> None:
    """600 simulated experiments (seed 7), 20 looks each, true lift +10% on a revenue-like metric
    (mean 2, sd 3 per unit): the sequence covers +10% at every look in at least 95% of them."""
    rng = np.random.default_rng(7)
    runs, looks, per_look = 600, 20, 200
    sd, mu_c, mu_t = 3.0, 2.0, 2.2
    tau_sq = (0.1 * mu_c) ** 2
    x_t = rng.normal(mu_t, sd, size=(runs, looks * per_look)).reshape(runs, looks, per_look)
    x_c = rng.normal(mu_c, sd, size=(runs, looks * per_look)).reshape(runs, looks, per_look)
    n = per_look * np.arange(1, looks + 1)
    sum_t, sum_c = np.cumsum(x_t.sum(axis=2), axis=1), np.cumsum(x_c.sum(axis=2), axis=1)
    sq_t, sq_c = np.cumsum((x_t**2).sum(axis=2), axis=1), np.cumsum((x_c**2).sum(axis=2), axis=1)
    covered = 0
    for r in range(runs):
        ok = True
        for k in range(looks):
            m_t, m_c = sum_t[r, k] / n[k], sum_c[r, k] / n[k]
            v_t = (sq_t[r, k] - n[k] * m_t**2) / (n[k] - 1) / n[k]
            v_c = (sq_c[r, k] - n[k] * m_c**2) / (n[k] - 1) / n[k]
            cs = always_valid_ratio_interval(Effect(m_t, v_t), Effect(m_c, v_c), tau_sq, 0.05, nonnegative=False)
            ok = ok and cs.low <= 0.1 <= cs.high
        covered += ok
    assert covered / runs >= 0.95
