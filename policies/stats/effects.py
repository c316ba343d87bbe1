"""Treatment effects as asymptotically normal estimates, and Fieller's interval for a ratio of means.

An `Effect` is an estimate with its (estimated) variance: the difference of means, the log ratio
(guardrails), or one arm's mean. Intervals for the relative lift invert the test that decides
(`fieller_interval` here for means; `policies.stats.frequentist.score_interval` for rates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from policies.sufficient import ArmStats, BinaryStats


@dataclass(frozen=True, slots=True)
class Effect:
    """An effect estimate and the variance of that estimate."""

    estimate: float
    variance: float


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate with the lower and upper limits of an interval around it."""

    estimate: float
    low: float
    high: float


def mean_effect(stats: ArmStats) -> Effect:
    """Sample mean of one arm and the variance of that mean.

    Binary arms use the Bernoulli variance p(1-p)/n (as the unpooled two-proportion z-test
    does); real-valued arms use s^2/n with the unbiased sample variance.
    """
    if isinstance(stats, BinaryStats):
        if stats.n == 0:
            raise ValueError("an arm with n = 0 has no mean")
        p = stats.successes / stats.n
        return Effect(p, p * (1.0 - p) / stats.n)
    if stats.variance is None:
        raise ValueError(f"need n >= 2 to estimate a variance, got n = {stats.n}")
    return Effect(stats.total / stats.n, stats.variance / stats.n)


def absolute_difference(treatment: ArmStats, control: ArmStats) -> Effect:
    """Difference of means, treatment minus control, with the unpooled variance."""
    t, c = mean_effect(treatment), mean_effect(control)
    return Effect(t.estimate - c.estimate, t.variance + c.variance)


def log_ratio(treatment: ArmStats, control: ArmStats) -> Effect | None:
    """log(mean_t / mean_c) with its delta-method variance; None unless both means are > 0.

    Var(log Y) ~= Var(Y) / mu^2 (delta method), so for independent arms the variance is
    Var(Y_t)/mu_t^2 + Var(Y_c)/mu_c^2. For conversion rates that is 1/x_t - 1/n_t + 1/x_c - 1/n_c,
    Katz et al. (1978)'s log risk-ratio variance, as in `statsmodels.stats.proportion.
    test_proportions_2indep(..., compare="ratio", method="log")`.
    """
    t, c = mean_effect(treatment), mean_effect(control)
    if t.estimate <= 0 or c.estimate <= 0:
        return None
    return Effect(math.log(t.estimate / c.estimate), t.variance / t.estimate**2 + c.variance / c.estimate**2)


def fieller_interval(treatment: Effect, control: Effect, critical: float, *, nonnegative: bool) -> Interval:
    """Fieller's confidence set for rho = mu_t / mu_c, reported as the relative lift rho - 1.

    Fieller (1954), "Some problems in interval estimation", JRSS B 16, 175-185: the set of rho
    whose test of mu_t - rho mu_c = 0 is not rejected,
    {rho : (m_t - rho m_c)^2 <= q^2 (v_t + rho^2 v_c)}, with the sample means m, the variances v
    of those means and the critical value q. At rho = 1 the statistic is the difference of means
    over its standard error, so with q the test's own critical value the set excludes rho = 1
    exactly when that test rejects. Writing a = m_c^2 - q^2 v_c, b = m_t m_c, c = m_t^2 - q^2 v_t,
    the set is a rho^2 - 2 b rho + c <= 0:
    - a > 0 (the control mean is distinguishable from 0): the bounded interval between the roots;
    - a <= 0: unbounded, either the whole line or two rays beyond the roots; two rays are shown
      as their hull, the whole line (infinite bounds, reported as null);
    - `nonnegative` (values >= 0, so mu_t / mu_c >= 0): the set is cut at rho = 0, which also
      turns two rays with one of them below 0 into [upper root, inf).
    """
    m_t, m_c, v_t, v_c = treatment.estimate, control.estimate, treatment.variance, control.variance
    if m_c == 0:
        raise ValueError("the ratio of means needs a control mean other than 0")
    q_sq = critical**2

    def spread(variance: float) -> float:  # q may be inf where no variance was seen: 0, not NaN
        return q_sq * variance if variance > 0 else 0.0

    a, b, c = m_c**2 - spread(v_c), m_t * m_c, m_t**2 - spread(v_t)
    disc = b * b - a * c
    if a > 0:
        root = math.sqrt(max(disc, 0.0))  # >= q^2 (v_t a + m_t^2 v_c) >= 0 in exact arithmetic
        low, high = (b - root) / a, (b + root) / a
    elif a == 0 and b != 0:
        low, high = (c / (2 * b), math.inf) if b > 0 else (-math.inf, c / (2 * b))
    elif disc <= 0 or a == 0:
        low, high = -math.inf, math.inf
    else:
        inner, outer = sorted(((b + math.sqrt(disc)) / a, (b - math.sqrt(disc)) / a))
        low, high = (outer, math.inf) if nonnegative and inner < 0 else (-math.inf, math.inf)
    ratio = m_t / m_c
    if nonnegative and ratio >= 0:
        low = max(low, 0.0)
    return Interval(ratio - 1.0, low - 1.0, high - 1.0)
