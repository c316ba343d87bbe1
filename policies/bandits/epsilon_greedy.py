"""Epsilon-greedy with exact propensities (Sutton & Barto 2018, "Reinforcement Learning: An
Introduction", §2.2-2.3).

With probability `epsilon_t` a decision explores uniformly, otherwise it exploits an arm
with the best observed mean; ties share the exploiting mass equally, which is exactly
"break ties at random" and keeps the weights a deterministic function of the stats:

    w_i = epsilon_t / K + (1 - epsilon_t) * [i is best] / |best|.

Arms without trials count as best (optimistic start), so each is tried before exploiting.
The schedule `epsilon_t = epsilon / (1 + decay * t)`, with `t` the total trials so far, is a
smoothed version of the `epsilon_t ∝ 1/t` schedule of Auer, Cesa-Bianchi & Fischer 2002
("Finite-time analysis of the multiarmed bandit problem", epsilon_n-greedy); `decay = 0`
keeps epsilon fixed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from policies.bandits.arm_stats import Metric, arm_sums, check_metric
from policies.bandits.registry import register_policy
from policies.sufficient import ArmStats


@dataclass(frozen=True)
class EpsilonGreedy:
    """Epsilon-greedy weights on the observed per-arm means of `metric`."""

    epsilon: float = 0.1
    decay: float = 0.0
    metric: Metric = "binary"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and 0 <= self.epsilon <= 1):
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon!r}")
        if not (math.isfinite(self.decay) and self.decay >= 0):
            raise ValueError(f"decay must be a finite number >= 0, got {self.decay!r}")
        check_metric(self.metric)

    def epsilon_at(self, trials: float) -> float:
        """Exploration probability after `trials` decisions in total."""
        return self.epsilon / (1 + self.decay * trials)

    def weights(self, stats: Sequence[ArmStats], rng: np.random.Generator) -> NDArray[np.float64]:
        """Selection probabilities; deterministic given `stats` (`rng` is not used)."""
        n, total, _ = arm_sums(stats, self.metric)
        means = np.divide(total, n, out=np.full_like(total, np.inf), where=n > 0)
        best = means == means.max()
        epsilon = self.epsilon_at(float(n.sum()))
        return epsilon / n.size + (1 - epsilon) * best / np.count_nonzero(best)


@register_policy("epsilon_greedy")
def epsilon_greedy(*, epsilon: float = 0.1, decay: float = 0.0, metric: str = "binary") -> EpsilonGreedy:
    """Epsilon-greedy from the YAML `policy:` mapping.

    - `epsilon`: exploration probability in [0, 1] (default 0.1).
    - `decay`: `epsilon_t = epsilon / (1 + decay * t)` after `t` trials in total; 0 (default)
      keeps epsilon fixed, e.g. 0.001 halves it after 1,000 trials.
    - `metric`: `binary` or `revenue`, passed by the engine from the experiment's metric.
    """
    return EpsilonGreedy(epsilon=epsilon, decay=decay, metric=check_metric(metric))
