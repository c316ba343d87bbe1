"""Off-policy evaluation: what a target policy would have earned, estimated from a log of
another (logging) policy's decisions, each with its reward and exact propensity.

Row i of the log: context x_i, logged arm a_i, reward r_i, propensity mu_i = mu(a_i | x_i).
The target policy gives pi(a | x_i) for every arm (`target`, rows x arms); w_i =
pi(a_i | x_i) / mu_i is the importance weight.

- IPS, inverse propensity scoring (Horvitz & Thompson 1952): `V = mean(w_i r_i)`; unbiased
  whenever mu > 0 wherever pi > 0.
- SNIPS, self-normalised IPS (Swaminathan & Joachims 2015, "The self-normalized estimator
  for counterfactual learning"): `V = sum(w_i r_i) / sum(w_i)`; slightly biased, much lower
  variance when weights are large.
- DR, doubly robust (Dudík, Langford & Li 2011): `V = mean(sum_a pi(a|x_i) q(x_i, a) +
  w_i (r_i - q(x_i, a_i)))` with a reward model q (rows x arms, given by the caller); unbiased
  if either the propensities or the reward model are right.
- Replay (Li, Chu, Langford & Wang 2011, "Unbiased offline evaluation of contextual-bandit-
  based news article recommendation algorithms"): the target policy draws an arm for every
  logged row (seeded); rows where it matches the logged arm are kept and `V` is their mean
  reward. Unbiased only when the logging policy is uniformly random, so it is reported only
  for uniform logs (None otherwise).

Intervals: nonparametric bootstrap over rows (Efron & Tibshirani 1993, percentile method),
`resamples` resamples drawn once and shared by every estimator and policy, so the intervals
of two policies are computed on the same resampled logs. Every estimator is a ratio of sums
`sum(num_i) / sum(den_i)` (den = 1 except SNIPS and replay), which the bootstrap recomputes
per resample. The fitted policies and reward model are held fixed (their fitting noise is
not in the interval).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

from policies.bandits.choice import draw_per_unit

FloatArray = NDArray[np.float64]
Estimator = Literal["replay", "ips", "snips", "dr"]
ESTIMATORS: tuple[Estimator, ...] = get_args(Estimator)
# Bootstrap resamples are drawn in blocks holding at most this many (resample, row) counts.
_BLOCK_CELLS = 4_000_000


@dataclass(frozen=True)
class LoggedData:
    """The log: logged arm index, reward and propensity per row, and the number of arms."""

    arms: NDArray[np.intp]
    rewards: FloatArray
    propensities: FloatArray
    n_arms: int

    def __post_init__(self) -> None:
        n = len(self.arms)
        if n == 0 or len(self.rewards) != n or len(self.propensities) != n:
            raise ValueError("arms, rewards and propensities must be non-empty and of one length")
        if self.arms.min() < 0 or self.arms.max() >= self.n_arms:
            raise ValueError("arm indices must lie in [0, n_arms)")
        if not np.all(np.isfinite(self.rewards)):
            raise ValueError("rewards must be finite")
        if not np.all((self.propensities > 0) & (self.propensities <= 1)):
            raise ValueError("propensities must lie in (0, 1]")

    @property
    def size(self) -> int:
        return len(self.arms)


@dataclass(frozen=True)
class Estimate:
    """A policy value with its bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class PolicyValue:
    """Every estimator's value for one target policy, plus diagnostics of its weights:
    `effective_sample_size` = (sum w)^2 / sum w^2 (Kish), `max_weight` = max w."""

    estimates: dict[Estimator, Estimate | None]
    effective_sample_size: float
    max_weight: float


@dataclass(frozen=True)
class RatioTerms:
    """Per-row numerators and denominators of each estimator (rows x estimators)."""

    numerators: FloatArray
    denominators: FloatArray
    available: tuple[bool, ...]


def is_uniform_logging(log: LoggedData, eligible_counts: NDArray[np.intp], tolerance: float = 1e-6) -> bool:
    """Whether every propensity is 1 / (number of arms eligible for the row)."""
    return bool(np.all(np.abs(log.propensities - 1.0 / eligible_counts) <= tolerance))


def check_target(log: LoggedData, target: FloatArray) -> FloatArray:
    """`target` as a checked (rows, arms) matrix of probabilities summing to 1 per row."""
    pi = np.asarray(target, dtype=float)
    if pi.shape != (log.size, log.n_arms):
        raise ValueError(f"target must have shape {(log.size, log.n_arms)}, got {pi.shape}")
    if not np.all(np.isfinite(pi)) or np.any(pi < 0) or not np.allclose(pi.sum(axis=1), 1.0, atol=1e-9):
        raise ValueError("every row of target must be probabilities summing to 1")
    return pi


def ratio_terms(
    log: LoggedData, target: FloatArray, reward_model: FloatArray, rng: np.random.Generator, *, uniform: bool
) -> RatioTerms:
    """Numerators and denominators of replay, IPS, SNIPS and DR for one target policy.

    `rng` draws the replay's target arms (one uniform per row, inverse CDF)."""
    pi = check_target(log, target)
    q = np.asarray(reward_model, dtype=float)
    if q.shape != pi.shape or not np.all(np.isfinite(q)):
        raise ValueError(f"reward_model must be a finite array of shape {pi.shape}")
    rows = np.arange(log.size)
    w = pi[rows, log.arms] / log.propensities
    matched = (draw_per_unit(pi, rng).arms == log.arms).astype(float)
    ones = np.ones(log.size)
    direct = (pi * q).sum(axis=1)
    numerators = np.column_stack([matched * log.rewards, w * log.rewards, w * log.rewards,
                                  direct + w * (log.rewards - q[rows, log.arms])])
    denominators = np.column_stack([matched, ones, w, ones])
    return RatioTerms(numerators, denominators, (uniform, True, True, True))


def bootstrap_ratio_intervals(
    numerators: FloatArray, denominators: FloatArray, rng: np.random.Generator, *, resamples: int = 1000,
    level: float = 0.95,
) -> tuple[FloatArray, FloatArray]:
    """Percentile bootstrap intervals of `sum(num[:, j]) / sum(den[:, j])` for every column j.

    Resamples draw rows with replacement (multinomial counts); a resample whose denominator
    is 0 is left out of that column's percentiles."""
    if not 0 < level < 1 or resamples < 2:
        raise ValueError("level must be in (0, 1) and resamples >= 2")
    n = numerators.shape[0]
    block = max(1, _BLOCK_CELLS // n)
    num_sums, den_sums = [], []
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        picks = rng.integers(n, size=(size, n)) + (np.arange(size) * n)[:, None]
        counts = np.bincount(picks.ravel(), minlength=size * n).reshape(size, n).astype(float)
        num_sums.append(counts @ numerators)
        den_sums.append(counts @ denominators)
    num, den = np.vstack(num_sums), np.vstack(den_sums)
    ratios = np.divide(num, den, out=np.full(num.shape, np.nan), where=den != 0)
    tail = (1 - level) / 2 * 100
    return np.nanpercentile(ratios, tail, axis=0), np.nanpercentile(ratios, 100 - tail, axis=0)


def on_policy_terms(log: LoggedData, *, uniform: bool) -> RatioTerms:
    """The logging policy evaluated on its own log: w = 1, so IPS, SNIPS and replay (every row
    matches) are the mean reward, and so is DR, whose correction term has mean 0 when pi = mu
    and is left out (mu is known only for the logged arm)."""
    rewards = np.repeat(log.rewards[:, None], len(ESTIMATORS), axis=1)
    return RatioTerms(rewards, np.ones_like(rewards), (uniform, True, True, True))


def evaluate_policies(
    log: LoggedData, targets: Mapping[str, FloatArray | None], reward_model: FloatArray, rng: np.random.Generator,
    *, uniform: bool, resamples: int = 1000, level: float = 0.95,
) -> dict[str, PolicyValue]:
    """Every estimator for every named target policy, with bootstrap intervals on shared resamples.

    A target of None stands for the logging policy itself (`on_policy_terms`)."""
    replay_rng, bootstrap_rng = rng.spawn(2)
    terms = {name: on_policy_terms(log, uniform=uniform) if pi is None
             else ratio_terms(log, pi, reward_model, replay_rng, uniform=uniform) for name, pi in targets.items()}
    numerators = np.hstack([t.numerators for t in terms.values()])
    denominators = np.hstack([t.denominators for t in terms.values()])
    low, high = bootstrap_ratio_intervals(numerators, denominators, bootstrap_rng, resamples=resamples, level=level)
    out: dict[str, PolicyValue] = {}
    for p, (name, t) in enumerate(terms.items()):
        estimates: dict[Estimator, Estimate | None] = {}
        for e, estimator in enumerate(ESTIMATORS):
            j = p * len(ESTIMATORS) + e
            den = t.denominators[:, e].sum()
            if not t.available[e] or den == 0:
                estimates[estimator] = None
                continue
            estimates[estimator] = Estimate(float(t.numerators[:, e].sum() / den), float(low[j]), float(high[j]))
        weights = t.denominators[:, ESTIMATORS.index("snips")]
        ess = float(weights.sum() ** 2 / (weights**2).sum()) if (weights**2).sum() > 0 else 0.0
        out[name] = PolicyValue(estimates, ess, float(weights.max()))
    return out
