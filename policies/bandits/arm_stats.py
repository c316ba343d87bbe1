"""Shared pieces of the bandit policies: the metric kinds, per-arm sums, and forgetting.

Bandit policies read per-arm sums `(n, total, total_sq)`: for a binary metric `total` is the
number of successes (and equals `total_sq`). Campaigns whose conversion rates drift are
handled by feeding the policy forgetful sums instead of all-time ones, either

- discounted: after every weight refresh the past sums are multiplied by `gamma`
  (`fold_stats`), so an outcome from `r` refreshes ago weighs `gamma**r`; the effective
  memory is about `1 / (1 - gamma)` refreshes (Garivier & Moulines 2011, "On upper-confidence bound
  policies for switching bandit problems", discounted UCB; Raj & Kalyani 2017, "Taming
  non-stationary bandits: a Bayesian approach", discounted Thompson sampling), or
- windowed: the sums of the last `window` outcomes only (Garivier & Moulines 2011,
  sliding-window UCB), which the engine computes from its event log.

Discounted sums are fractional, so `BinaryStats.n` / `.successes` may hold floats here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeVar, get_args

import numpy as np
from numpy.typing import NDArray

from policies.sufficient import ArmStats, BinaryStats, MeanStats

Metric = Literal["binary", "revenue"]
METRICS: tuple[Metric, ...] = get_args(Metric)

S = TypeVar("S", BinaryStats, MeanStats)


def check_metric(metric: str) -> Metric:
    """Return `metric` if it is one of `METRICS`, else raise ValueError."""
    for known in METRICS:
        if metric == known:
            return known
    raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")


def arm_sums(
    stats: Sequence[ArmStats], metric: Metric
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per-arm `(n, total, total_sq)` arrays; a binary metric accepts only `BinaryStats`."""
    if not stats:
        raise ValueError("a bandit needs at least one arm")
    means = [s.as_mean() if isinstance(s, BinaryStats) else s for s in normalise_stats(stats, metric)]
    n = np.array([m.n for m in means], dtype=float)
    total = np.array([m.total for m in means], dtype=float)
    total_sq = np.array([m.total_sq for m in means], dtype=float)
    return n, total, total_sq


def normalise_stats(stats: Sequence[ArmStats], metric: Metric) -> list[ArmStats]:
    """`stats` as the metric reads them: all `BinaryStats` for a binary metric (checked), all
    `MeanStats` for revenue (a conversion count is a mean of 0/1 outcomes)."""
    if metric == "binary":
        if not all(isinstance(s, BinaryStats) for s in stats):
            raise ValueError("a binary metric needs BinaryStats for every arm")
        return list(stats)
    return [s.as_mean() if isinstance(s, BinaryStats) else s for s in stats]


def stats_from_sums(
    metric: Metric,
    n: NDArray[np.float64],
    total: NDArray[np.float64],
    total_sq: NDArray[np.float64],
) -> list[ArmStats]:
    """The inverse of `arm_sums`: `BinaryStats` for a binary metric, `MeanStats` otherwise."""
    if metric == "binary":
        # Counts may be fractional (discounted sums); BinaryStats validates them as numbers.
        return [BinaryStats(float(k), float(s)) for k, s in zip(n, total, strict=True)]  # type: ignore[arg-type]
    return [
        MeanStats(float(k), float(t), float(q))  # type: ignore[arg-type]
        for k, t, q in zip(n, total, total_sq, strict=True)
    ]


def check_discount(gamma: float) -> float:
    """Return `gamma` if it is a valid discount factor in (0, 1]."""
    if not (0.0 < gamma <= 1.0):
        raise ValueError(f"discount must be in (0, 1], got {gamma!r}")
    return float(gamma)


def discount_stats(stats: Sequence[S], gamma: float) -> list[S]:
    """Every arm's sums multiplied by `gamma` (pseudo-counts become fractional)."""
    check_discount(gamma)
    return [_scaled(s, gamma) for s in stats]


def fold_stats(memory: Sequence[S], increment: Sequence[S], gamma: float) -> list[S]:
    """`gamma * memory + increment`: the discounted sums after one more refresh period."""
    if len(memory) != len(increment):
        raise ValueError(f"memory has {len(memory)} arms, increment {len(increment)}")
    return [m + i for m, i in zip(discount_stats(memory, gamma), increment, strict=True)]


def _scaled(stats: S, gamma: float) -> S:
    if isinstance(stats, BinaryStats):
        return BinaryStats(stats.n * gamma, stats.successes * gamma)  # type: ignore[arg-type]  # fractional counts
    return MeanStats(stats.n * gamma, stats.total * gamma, stats.total_sq * gamma)  # type: ignore[arg-type]
