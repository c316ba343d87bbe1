"""A bandit run logged as the engine logs it (arm, propensity, outcome per unit), read at looks.

`logged_run` plays a policy the way the engine does: weights refreshed every `update_every`
decisions from the sums seen so far, each decision drawn from the cached weights and logged
with its propensity (the weight of the arm drawn). `read_at_looks` analyses the first n units
at every look with the report's own code (`policies.stats.analysis.analyze` on the per-arm
`propensity_sums`, the same input the store's counters give), so a verdict seen here is the
verdict the report would have shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from policies.bandits.arm_stats import stats_from_sums
from policies.bandits.choice import draw_arms
from policies.bandits.registry import Policy
from policies.simulation.bandits import Truth, TruthChange, potential_outcomes
from policies.stats.analysis import Analysis, AnalysisConfig, analyze
from policies.stats.bandit_inference import propensity_sums


@dataclass(frozen=True, eq=False)
class LoggedRun:
    """Per unit, in decision order: the arm drawn, its propensity and the unit's outcome."""

    arms: NDArray[np.intp]
    propensities: NDArray[np.float64]
    outcomes: NDArray[np.float64]


def logged_run(policy: Policy, truth: Truth, users: int, rng: np.random.Generator, *, update_every: int = 1000,
               drift: Sequence[TruthChange] = ()) -> LoggedRun:
    """Play `users` decisions of `policy` against `truth` (outcomes from the first spawned
    generator, as in `policies.simulation.bandits.simulate`, draws from the second)."""
    if users < 1 or update_every < 1:
        raise ValueError("users and update_every must be >= 1")
    outcome_rng, policy_rng = rng.spawn(2)
    k = len(truth.rates)
    table = np.concatenate([t for _, t in potential_outcomes(truth, users, outcome_rng, drift=drift)])
    arms = np.empty(users, dtype=np.intp)
    propensities = np.empty(users)
    for start in range(0, users, update_every):
        stop = min(start + update_every, users)
        played = arms[:start]
        outcomes = table[np.arange(start), played]
        sums = [np.bincount(played, x, minlength=k) for x in (None, outcomes, outcomes * outcomes)]
        weights = policy.weights(stats_from_sums(truth.metric, *sums), policy_rng)
        arms[start:stop] = draw_arms(weights, policy_rng, stop - start)
        propensities[start:stop] = weights[arms[start:stop]]
    return LoggedRun(arms, propensities, table[np.arange(users), arms])


def read_at_looks(run: LoggedRun, names: Sequence[str], looks: Sequence[int], config: AnalysisConfig,
                  rng: np.random.Generator, *, corrected: bool = True) -> list[Analysis]:
    """The bandit report's analysis of the first `n` units for every `n` in `looks`; with
    `corrected=False` the arms are read on pooled counts only (the report before weighting)."""
    k = len(names)
    out = []
    for n in looks:
        arms, p, y = run.arms[:n], run.propensities[:n], run.outcomes[:n]
        counts = [np.bincount(arms, x, minlength=k) for x in (None, y, y * y)]
        stats = stats_from_sums(config.metric_type, *counts)
        weighted = propensity_sums(arms, p, y, k) if corrected else None
        out.append(analyze(names, stats, kind="bandit", control=None, expected_weights=None, config=config,
                           rng=rng, weighted=weighted))
    return out
