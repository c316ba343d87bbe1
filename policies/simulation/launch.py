"""New campaigns whose only signal is their tags: content targeting against the plain bandit.

Population (preferences follow topics), seeded by the generator passed in:

1. every user has one favourite topic z, drawn with the topics' `shares`;
2. the true conversion rate of a campaign c for that user is

       rate[z, c] = base_rate * topic_lift ** [z in topics(c)]           (capped at 1),

   with topics(c) the campaign's true topics (what it is really about);
3. every user converted earlier on `history_size` of the `old` campaigns (which declare their
   tags), drawn without replacement with probabilities proportional to the rates with
   `history_lift` in place of `topic_lift`: the history a returning user brings. Purchases
   follow taste more than responses to a campaign do, hence a sharper lift (as in the
   targeting benchmark's ranking population).

The launch: `new` campaigns, no conversions yet, each known to the recommender only by its
tokens (in the benchmark, the tags a classifier predicted from its description: possibly
wrong). Users arrive one at a time and get one of the new campaigns (the old ones they were
already offered are not eligible). The plain bandit draws from its weights, refreshed from
the new campaigns' sums every `refresh_every` decisions; targeting draws from the blend of
those weights with the user's content scores (`policies.targeting.recommender`, method
`content`, profile = the user's history; `policies.targeting.blend`). Outcomes are common
random numbers: user i converts on campaign c iff `u[i, c] < rate[i, c]`, with `u` from the
first generator spawned from `rng`, so both runs face the same users and the same luck.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from policies.bandits.arm_stats import stats_from_sums
from policies.bandits.choice import draw_per_unit
from policies.bandits.registry import Policy
from policies.targeting.blend import blend_per_unit, check_strength, check_temperature
from policies.targeting.recommender import Interactions, RecommenderConfig, fit_recommender

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class TopicMarket:
    """Topics with their share of users, campaigns as topic sets, and the rate model's parameters."""

    topics: tuple[str, ...]
    shares: tuple[float, ...]
    old: tuple[frozenset[str], ...]
    new: tuple[frozenset[str], ...]
    base_rate: float = 0.02
    topic_lift: float = 2.0
    history_lift: float = 5.0
    history_size: int = 2
    heterogeneous: bool = True

    def __post_init__(self) -> None:
        if len(self.topics) != len(self.shares) or not math.isclose(sum(self.shares), 1.0, abs_tol=1e-9):
            raise ValueError("shares need one entry per topic and must add up to 1")
        if not self.old or not self.new:
            raise ValueError("a launch needs old campaigns (the users' history) and new ones")
        unknown = set().union(*self.old, *self.new) - set(self.topics)
        if unknown:
            raise ValueError(f"campaigns name unknown topics: {sorted(unknown)}")
        if not (0 < self.base_rate <= 1 and self.topic_lift > 0 and self.history_lift > 0):
            raise ValueError("base_rate must be in (0, 1], topic_lift and history_lift > 0")
        if not 1 <= self.history_size <= len(self.old):
            raise ValueError(f"history_size must be in [1, {len(self.old)}] (the old campaigns)")

    def rates(self, campaigns: Sequence[frozenset[str]], lift: float | None = None) -> FloatArray:
        """True rates (topics x campaigns) with `lift` (default `topic_lift`); the homogeneous
        control gives every topic the share-weighted average, so preferences no longer follow topics."""
        lift = self.topic_lift if lift is None else lift
        rates = np.array([[self.base_rate * lift ** (z in c) for c in campaigns] for z in self.topics])
        rates = np.minimum(rates, 1.0)
        if self.heterogeneous:
            return rates
        return np.repeat((np.asarray(self.shares) @ rates)[None, :], len(self.topics), axis=0)


@dataclass(frozen=True, eq=False)
class LaunchUsers:
    """Drawn users: favourite topic, the old campaigns each converted on, true rates of the new ones."""

    topics: NDArray[np.intp]
    history: NDArray[np.intp]  # users x history_size old campaign indices
    new_rates: FloatArray  # users x new campaigns

    @property
    def size(self) -> int:
        return len(self.topics)


def draw_launch_users(market: TopicMarket, users: int, rng: np.random.Generator) -> LaunchUsers:
    """`users` returning users of `market` (see the module doc)."""
    if users < 1:
        raise ValueError("users must be >= 1")
    topics = rng.choice(len(market.topics), size=users, p=market.shares).astype(np.intp)
    taste = market.rates(market.old, market.history_lift)[topics]
    keys = np.log(rng.random(taste.shape)) / taste  # Efraimidis-Spirakis weighted sampling without replacement
    history = np.argsort(-keys, axis=1)[:, : market.history_size].astype(np.intp)
    return LaunchUsers(topics, history, market.rates(market.new)[topics])


@dataclass(frozen=True)
class LaunchRun:
    """Per decision: the new campaign drawn, whether it converted, whether targeting tilted it."""

    arms: NDArray[np.intp]
    converted: NDArray[np.bool_]
    tilted: NDArray[np.bool_]

    @property
    def conversions(self) -> int:
        return int(self.converted.sum())


def content_scores(history: NDArray[np.intp], old_tokens: Sequence[Sequence[str]],
                   new_tokens: Sequence[Sequence[str]], rng: np.random.Generator) -> FloatArray:
    """Content scores (users x new campaigns) of users whose profile is the old campaigns they
    converted on (`history`, users x conversions), every campaign described by its tokens."""
    k_old, (users, size) = len(old_tokens), history.shape
    units = np.repeat(np.arange(users, dtype=np.intp), size)
    seen = Interactions(units, history.ravel(), np.ones(units.size, dtype=bool), np.full(units.size, -1, dtype=np.intp),
                        users, k_old + len(new_tokens), 0)
    model = fit_recommender(seen, [*old_tokens, *new_tokens], RecommenderConfig("content"), rng)
    scores, _ = model.scores_many(np.arange(users, dtype=np.intp), np.full(users, -1, dtype=np.intp))
    return scores[:, k_old:]


def simulate_launch(policy: Policy, users: LaunchUsers, scores: FloatArray | None, rng: np.random.Generator, *,
                    strength: float = 0.7, temperature: float = 0.05, refresh_every: int = 100) -> LaunchRun:
    """One decision per user among the new campaigns: the plain bandit (`scores` None) or the
    bandit blended with the users' content `scores` (users x new campaigns)."""
    check_strength(strength)
    check_temperature(temperature)
    if refresh_every < 1:
        raise ValueError("refresh_every must be >= 1")
    n, k = users.new_rates.shape
    if scores is not None and scores.shape != (n, k):
        raise ValueError(f"scores must have shape {(n, k)}")
    outcome_rng, policy_rng = rng.spawn(2)
    converts = outcome_rng.random((n, k)) < users.new_rates
    masks = np.ones((n, k), dtype=bool)
    arms = np.zeros(n, dtype=np.intp)
    converted = np.zeros(n, dtype=bool)
    tilted = np.zeros(n, dtype=bool)
    exposures, conversions = np.zeros(k), np.zeros(k)
    for start in range(0, n, refresh_every):
        stop = min(start + refresh_every, n)
        weights = policy.weights(stats_from_sums("binary", exposures, conversions, conversions), policy_rng)
        if scores is None:
            probabilities = np.repeat(weights[None, :], stop - start, axis=0)
        else:
            probabilities, tilted[start:stop] = blend_per_unit(weights, scores[start:stop], masks[start:stop],
                                                               strength, temperature)
        draws = draw_per_unit(probabilities, policy_rng)
        arms[start:stop] = draws.arms
        converted[start:stop] = won = converts[np.arange(start, stop), draws.arms]
        exposures += np.bincount(draws.arms, minlength=k)
        conversions += np.bincount(draws.arms, won.astype(float), minlength=k)
    return LaunchRun(arms, converted, tilted)
