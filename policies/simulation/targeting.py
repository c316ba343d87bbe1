"""Targeted versus context-free bandits on a simulated population with contexts.

Mirrors the engine: every `refit_every` users the bandit's weights are recomputed from the
per-arm sums so far and, when targeting, the segments (k-means on the one-hot contexts seen
so far) and the recommender are refitted from every decision so far; the users of the next
block are then drawn from the blend of those weights with their scores: their segment's
(users are new, so they have no history of their own) and, with a social `graph` over the
users, their LightGCN scores from the conversions within their reach. Users whose context is
not known (`context_known` False) have no segment: without a graph they are cold starts and
get the bandit alone. Outcomes are common random numbers: user i
converts on arm a iff `u[i, a] < rate[i, a]`, with `u` from the first generator spawned from
`rng`, so a targeted and a context-free run with the same seed face the same users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from policies.bandits.arm_stats import stats_from_sums
from policies.bandits.choice import draw_per_unit, eligible_weights_per_unit
from policies.bandits.registry import Policy
from policies.simulation.population import Population, one_hot
from policies.targeting.blend import blend_per_unit, check_strength, check_temperature
from policies.targeting.recommender import Interactions, RecommenderConfig, fit_recommender
from policies.targeting.segments import fit_segments
from policies.targeting.social import SocialGraph


@dataclass(frozen=True)
class TargetingSetup:
    """The targeting step to simulate: recommender, strength, temperature and number of segments."""

    config: RecommenderConfig
    strength: float
    temperature: float = 0.05
    segments: int = 8

    def __post_init__(self) -> None:
        check_strength(self.strength)
        check_temperature(self.temperature)
        if self.segments < 1:
            raise ValueError("segments must be >= 1")


@dataclass(frozen=True, eq=False)
class TargetingRun:
    """Per user: arm played, its propensity, whether it converted and whether it was tilted."""

    arms: NDArray[np.intp]
    propensities: NDArray[np.float64]
    converted: NDArray[np.bool_]
    tilted: NDArray[np.bool_]

    @property
    def conversions(self) -> int:
        return int(self.converted.sum())


def simulate_targeting(
    policy: Policy,
    population: Population,
    attribute_levels: tuple[int, ...],
    arm_tokens: Sequence[Sequence[str]],
    rng: np.random.Generator,
    *,
    setup: TargetingSetup | None,
    refit_every: int = 2_000,
    masks: NDArray[np.bool_] | None = None,
    graph: SocialGraph | None = None,
    context_known: NDArray[np.bool_] | None = None,
) -> TargetingRun:
    """Run `policy` (binary metric), targeted by `setup` or context-free (None), on `population`;
    `graph` (over the population's users, in order) feeds a recommender that uses one."""
    n, k = population.size, population.rates.shape[1]
    if refit_every < 1:
        raise ValueError("refit_every must be >= 1")
    masks = np.ones((n, k), dtype=bool) if masks is None else np.asarray(masks, dtype=bool)
    if masks.shape != (n, k):
        raise ValueError(f"masks must have shape {(n, k)}")
    if graph is not None and graph.n_units != n:
        raise ValueError(f"the graph has {graph.n_units} users, the population {n}")
    known = np.ones(n, dtype=bool) if context_known is None else np.asarray(context_known, dtype=bool)
    if known.shape != (n,):
        raise ValueError(f"context_known must have shape {(n,)}")
    outcome_rng, policy_rng = rng.spawn(2)
    converts = outcome_rng.random((n, k)) < population.user_rates()
    # Users share a few attribute combinations: segments are fitted and assigned per distinct one.
    codes, inverse = np.unique(population.attributes, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    points = one_hot(codes, attribute_levels)
    arms = np.zeros(n, dtype=np.intp)
    propensities = np.zeros(n)
    converted = np.zeros(n, dtype=bool)
    tilted = np.zeros(n, dtype=bool)
    exposures, conversions = np.zeros(k), np.zeros(k)
    for start in range(0, n, refit_every):
        stop = min(start + refit_every, n)
        weights = policy.weights(stats_from_sums("binary", exposures, conversions, conversions), policy_rng)
        if setup is not None and start > 0:
            labels, count = _segments(points, inverse, known, start, setup.segments, policy_rng)
            # With a graph, unit i is user i (the graph's node) and later users are rows without history.
            n_units = n if graph is not None else start
            seen = Interactions(np.arange(start, dtype=np.intp), arms[:start], converted[:start], labels[:start],
                                n_units, k, count)
            model = fit_recommender(seen, arm_tokens, setup.config, policy_rng, graph)
            block = np.arange(start, stop, dtype=np.intp) if graph is not None else np.full(stop - start, -1)
            scores, _ = model.scores_many(block, labels[start:stop])
            probabilities, tilted[start:stop] = blend_per_unit(weights, scores, masks[start:stop],
                                                               setup.strength, setup.temperature)
        else:
            probabilities = eligible_weights_per_unit(weights, masks[start:stop])
        draws = draw_per_unit(probabilities, policy_rng)
        arms[start:stop], propensities[start:stop] = draws.arms, draws.propensities
        converted[start:stop] = won = converts[np.arange(start, stop), draws.arms]
        exposures += np.bincount(draws.arms, minlength=k)
        conversions += np.bincount(draws.arms, won.astype(float), minlength=k)
    return TargetingRun(arms, propensities, converted, tilted)


def _segments(points: NDArray[np.float64], inverse: NDArray[np.intp], known: NDArray[np.bool_], start: int,
              k: int, rng: np.random.Generator) -> tuple[NDArray[np.intp], int]:
    """Every user's segment (-1 where the context is unknown) from k-means on the distinct
    contexts of the first `start` users whose context is known, and the number of segments."""
    counts = np.bincount(inverse[:start][known[:start]], minlength=len(points))
    present = counts > 0
    if not present.any():
        return np.full(len(inverse), -1, dtype=np.intp), 0
    segmentation = fit_segments(points[present], k, rng, counts=counts[present])
    return np.where(known, segmentation.assign(points)[inverse], -1), segmentation.count
