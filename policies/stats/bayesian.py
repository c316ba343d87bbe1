"""Bayesian view of an experiment: posteriors per arm and decision quantities from them.

Binary metrics: conjugate Beta(prior_alpha + successes, prior_beta + failures) posteriors;
means and equal-tailed credible intervals are exact (`scipy.stats.beta`). Revenue metrics: the
normal approximation N(mean, s^2 / n) per arm (flat prior).

`prob_best` of Beta posteriors is exact (the quadrature of `policies.bandits.thompson.prob_best`,
absolute error about 1e-11). Bandit verdicts read the partially pooled posterior instead
(`policies.stats.partial_pooling`). Revenue `prob_best`, `prob_beat_control`, `expected_loss`
and the lift interval are Monte Carlo estimates from joint posterior draws (`draws` per arm,
from the caller's Generator; the standard error of a probability is at most 0.5 / sqrt(draws),
0.0035 at 20,000 draws).
`expected_loss` is E[max_j theta_j - theta_i]: what choosing arm i is expected to cost, in
the metric's units, against the best arm — GrowthBook's "risk" (Stucchio 2015, "Bayesian A/B
Testing at VWO"), generalised from two arms to k. Ties between draws are shared equally, so
relabelling arms only permutes the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats as sps

from policies.bandits.arm_stats import arm_sums
from policies.bandits.thompson import BetaPosterior, BetaPrior
from policies.bandits.thompson import prob_best as exact_prob_best
from policies.stats.effects import Interval, mean_effect
from policies.sufficient import ArmStats, BinaryStats

DEFAULT_DRAWS = 20_000


@dataclass(frozen=True, slots=True)
class ArmPosterior:
    """Posterior summary of one arm; the control fields are None without a control."""

    mean: float
    ci_low: float
    ci_high: float
    prob_best: float
    prob_beat_control: float | None
    expected_loss: float
    lift: Interval | None
    """Posterior median and equal-tailed interval of theta_i / theta_control - 1."""


def _posterior_draws_and_intervals(
    stats: Sequence[ArmStats],
    alpha: float,
    prior_alpha: float,
    prior_beta: float,
    rng: np.random.Generator,
    draws: int,
) -> tuple[NDArray[np.float64], list[Interval]]:
    """(draws x arms) joint posterior samples and each arm's exact credible interval."""
    if all(isinstance(s, BinaryStats) for s in stats):
        posterior = BetaPrior(prior_alpha, prior_beta).posterior(*arm_sums(stats, "binary"))
        low, high = posterior.interval(1.0 - alpha)
        samples = rng.beta(posterior.alpha, posterior.beta, size=(draws, len(stats)))
        means = posterior.mean
    else:
        moments = [mean_effect(s) for s in stats]
        means = np.array([m.estimate for m in moments])
        sd = np.sqrt([m.variance for m in moments])
        z = float(sps.norm.ppf(1.0 - alpha / 2.0))
        low, high = means - z * sd, means + z * sd
        samples = means + sd * rng.standard_normal((draws, len(stats)))
    intervals = [Interval(float(m), float(lo), float(hi)) for m, lo, hi in zip(means, low, high, strict=True)]
    return samples, intervals


def posterior_summaries(
    stats: Sequence[ArmStats],
    *,
    rng: np.random.Generator,
    control_index: int | None = None,
    alpha: float = 0.05,
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
    draws: int = DEFAULT_DRAWS,
) -> tuple[ArmPosterior, ...]:
    """Posterior mean, 1-alpha credible interval and decision quantities for every arm.

    Revenue arms need n >= 2 (the normal approximation needs a variance).
    """
    if len(stats) < 2:
        raise ValueError("need at least two arms")
    if len({isinstance(s, BinaryStats) for s in stats}) > 1:
        raise ValueError("all arms must hold the same kind of statistics")
    if prior_alpha <= 0 or prior_beta <= 0:
        raise ValueError("prior_alpha and prior_beta must be > 0")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if control_index is not None and not 0 <= control_index < len(stats):
        raise ValueError(f"control_index {control_index} is out of range")
    samples, intervals = _posterior_draws_and_intervals(stats, alpha, prior_alpha, prior_beta, rng, draws)
    beta = None
    if all(isinstance(s, BinaryStats) for s in stats):
        beta = BetaPrior(prior_alpha, prior_beta).posterior(*arm_sums(stats, "binary"))
    return summaries_from_draws(samples, intervals, control_index, alpha, beta)


def summaries_from_draws(samples: NDArray[np.float64], intervals: Sequence[Interval], control_index: int | None,
                         alpha: float, beta: BetaPosterior | None = None) -> tuple[ArmPosterior, ...]:
    """Decision quantities from (draws x arms) joint posterior samples and each arm's interval;
    `prob_best` exact from `beta` when the posteriors are these Betas (module doc)."""
    best = samples.max(axis=1, keepdims=True)
    if beta is not None:
        prob_best = exact_prob_best(beta)
    else:
        is_best = samples == best
        prob_best = (is_best / is_best.sum(axis=1, keepdims=True)).mean(axis=0)
    expected_loss = (best - samples).mean(axis=0)
    beat: list[float | None] = [None] * samples.shape[1]
    lifts: list[Interval | None] = [None] * samples.shape[1]
    if control_index is not None:
        control = samples[:, control_index : control_index + 1]
        wins = (samples > control) + 0.5 * (samples == control)
        beat = [None if i == control_index else float(p) for i, p in enumerate(wins.mean(axis=0))]
        if intervals[control_index].estimate != 0:
            lifts = _lift_intervals(samples, control_index, alpha)
    return tuple(
        ArmPosterior(iv.estimate, iv.low, iv.high, float(pb), bc, float(el), lift)
        for iv, pb, bc, el, lift in zip(intervals, prob_best, beat, expected_loss, lifts, strict=True)
    )


def _lift_intervals(samples: NDArray[np.float64], control_index: int, alpha: float) -> list[Interval | None]:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = samples / samples[:, control_index : control_index + 1] - 1.0
    low, mid, high = np.nanquantile(ratios, [alpha / 2.0, 0.5, 1.0 - alpha / 2.0], axis=0)
    return [
        None if i == control_index else Interval(float(mid[i]), float(low[i]), float(high[i]))
        for i in range(samples.shape[1])
    ]
