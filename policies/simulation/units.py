"""Units that decide several times each: why the randomisation unit must be the analysis unit.

Generator (seeded by the `numpy.random.Generator` passed in), for `runs` experiments at once:

1. every unit has its own conversion propensity p_u ~ Beta(rate * c, (1 - rate) * c), of
   mean `rate`; `c` is the `concentration`, and the outcomes of one unit's decisions are
   correlated with intra-class correlation 1 / (c + 1) (Beta-binomial);
2. it decides d_u = 1 + Poisson(mean_decisions - 1) times (at least once);
3. it is assigned to an arm uniformly at random, once (sticky), and each of its decisions
   converts independently with probability min(p_u * lift[arm], 1), so it converts
   c_u ~ Binomial(d_u, p_u * lift) times.

Two analyses of the same data:

- user level (`analysis.unit: user`): each unit is one trial, a success if it converted at
  least once (c_u >= 1). Units are independent, so the z-test is valid;
- per decision (what the engine counted before): each decision is a trial and each conversion
  a success. One unit's decisions share its propensity, so they are not independent and the
  z-test's variance is too small by the design effect, about 1 + (E[d^2] / E[d] - 1) / (c + 1)
  (Kish 1965, for clusters of unequal size): anti-conservative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from policies.stats.frequentist import proportions_z_test
from policies.sufficient import BinaryStats

IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class RepeatUnits:
    """Population of units that decide several times each (generator in the module doc)."""

    rate: float = 0.05
    concentration: float = 2.0
    mean_decisions: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.rate < 1:
            raise ValueError(f"rate must be in (0, 1), got {self.rate!r}")
        if not (math.isfinite(self.concentration) and self.concentration > 0):
            raise ValueError(f"concentration must be a finite number > 0, got {self.concentration!r}")
        if not (math.isfinite(self.mean_decisions) and self.mean_decisions >= 1):
            raise ValueError(f"mean_decisions must be a finite number >= 1, got {self.mean_decisions!r}")

    @property
    def design_effect(self) -> float:
        """Kish's variance inflation of the per-decision rate: 1 + (E[d^2] / E[d] - 1) * ICC."""
        extra = self.mean_decisions - 1.0  # the Poisson part: its variance equals its mean
        second_moment = extra + self.mean_decisions**2
        return 1.0 + (second_moment / self.mean_decisions - 1.0) / (self.concentration + 1.0)


@dataclass(frozen=True, eq=False)
class UnitOutcomes:
    """Drawn units of `runs` experiments (arrays of shape runs x units): arm, decisions, conversions."""

    arm: IntArray
    decisions: IntArray
    conversions: IntArray
    arms: int


def draw_unit_outcomes(
    model: RepeatUnits,
    *,
    units: int,
    runs: int,
    rng: np.random.Generator,
    lifts: tuple[float, ...] = (1.0, 1.0),
) -> UnitOutcomes:
    """Draw `runs` experiments of `units` units each; `lifts[i]` multiplies arm i's propensity."""
    if units < 2 or runs < 1:
        raise ValueError("need units >= 2 and runs >= 1")
    if len(lifts) < 2 or not all(math.isfinite(x) and x >= 0 for x in lifts):
        raise ValueError("lifts needs a finite factor >= 0 for each of at least two arms")
    shape = (runs, units)
    a = model.rate * model.concentration
    propensity = rng.beta(a, model.concentration - a, shape)
    decisions = 1 + rng.poisson(model.mean_decisions - 1.0, shape)
    arm = rng.integers(len(lifts), size=shape)
    chance = np.minimum(propensity * np.asarray(lifts, dtype=float)[arm], 1.0)
    return UnitOutcomes(arm, decisions, rng.binomial(decisions, chance), len(lifts))


def _per_arm(outcomes: UnitOutcomes, values: IntArray) -> IntArray:
    """Sum of `values` over the units of each arm: (runs x arms)."""
    return np.stack([np.where(outcomes.arm == i, values, 0).sum(axis=1) for i in range(outcomes.arms)], axis=1)


def user_level_counts(outcomes: UnitOutcomes) -> tuple[IntArray, IntArray]:
    """(units, converted units) per run and arm: each unit counted once."""
    return _per_arm(outcomes, np.ones_like(outcomes.arm)), _per_arm(outcomes, (outcomes.conversions > 0).astype(int))


def decision_level_counts(outcomes: UnitOutcomes) -> tuple[IntArray, IntArray]:
    """(decisions, conversions) per run and arm: each decision counted as a trial."""
    return _per_arm(outcomes, outcomes.decisions), _per_arm(outcomes, outcomes.conversions)


def run_stats(counts: tuple[IntArray, IntArray], run: int) -> tuple[BinaryStats, ...]:
    """The per-arm sufficient statistics of one run, as the report would receive them."""
    n, successes = counts
    return tuple(BinaryStats(int(n[run, i]), int(successes[run, i])) for i in range(n.shape[1]))


@dataclass(frozen=True)
class FalsePositiveRates:
    """Share of A/A experiments in which the z-test of arm 1 against arm 0 has p < alpha."""

    runs: int
    units: int
    alpha: float
    user_level: float
    per_decision: float


def aa_false_positive_rates(
    model: RepeatUnits,
    *,
    units: int,
    runs: int,
    rng: np.random.Generator,
    alpha: float = 0.05,
    chunk: int = 100,
) -> FalsePositiveRates:
    """A/A tests (no lift): false-positive rate of the user-level and per-decision analyses of
    the same units (two-sided pooled z-test, as `two_proportion_test` at these counts)."""
    rejected = np.zeros(2)
    for start in range(0, runs, chunk):
        outcomes = draw_unit_outcomes(model, units=units, runs=min(chunk, runs - start), rng=rng)
        for k, (n, x) in enumerate((user_level_counts(outcomes), decision_level_counts(outcomes))):
            _, p = proportions_z_test(x[:, 1], n[:, 1], x[:, 0], n[:, 0])
            rejected[k] += np.count_nonzero(p < alpha)
    return FalsePositiveRates(runs, units, alpha, float(rejected[0] / runs), float(rejected[1] / runs))
