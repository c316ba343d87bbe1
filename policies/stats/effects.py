"""Treatment effects as asymptotically normal estimates: absolute difference and relative lift.

An `Effect` is an estimate with its (estimated) variance. The fixed-horizon report turns it
into a normal confidence interval (`normal_interval`); sequential mode turns the same effect
into an always-valid interval (`policies.stats.sequential.always_valid_interval`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as sps

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


def relative_lift(treatment: ArmStats, control: ArmStats) -> Effect | None:
    """Relative lift mean_t / mean_c - 1 with its delta-method variance; None if mean_c is 0.

    For independent arms (Deng, Knoblich & Lu 2018, "Applying the Delta Method in Metric
    Analytics", section 3.3, percent change):
    Var(Y_t/Y_c) ~= Var(Y_t)/mu_c^2 + mu_t^2 Var(Y_c)/mu_c^4, with the sample means as plug-ins.
    """
    t, c = mean_effect(treatment), mean_effect(control)
    if c.estimate == 0:
        return None
    ratio = t.estimate / c.estimate
    variance = (t.variance + ratio**2 * c.variance) / c.estimate**2
    return Effect(ratio - 1.0, variance)


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


def normal_interval(effect: Effect, alpha: float) -> Interval:
    """Two-sided 1-alpha Wald interval: estimate +- z_{1-alpha/2} * sqrt(variance)."""
    half = float(sps.norm.ppf(1.0 - alpha / 2.0)) * effect.variance**0.5
    return Interval(effect.estimate, effect.estimate - half, effect.estimate + half)
