"""Turning selection probabilities into choices, one or many at a time, under eligibility masks.

Draws are inverse-CDF: a uniform `u` in [0, 1) is located with `searchsorted(...,
side="right")` in the cumulative weights divided by their total. That division makes the
last entry exactly 1 (x / x == 1, subnormal totals included) and keeps equal entries equal,
so an arm with weight 0 spans an empty interval and is never drawn, wherever it sits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


class NoEligibleArmError(ValueError):
    pass


@dataclass(frozen=True, eq=False)
class UnitDraws:
    """One arm per unit and the probability it was drawn with (its propensity)."""

    arms: NDArray[np.intp]
    propensities: NDArray[np.float64]


def eligible_weights(weights: NDArray[np.float64], mask: NDArray[np.bool_] | None) -> NDArray[np.float64]:
    """Zero the arms outside `mask` and renormalise the rest so they sum to 1.

    If every eligible arm has weight 0 (a policy floor of 0 can do that), the eligible arms
    share the probability equally, so an eligible unit always gets an arm.
    """
    if mask is None:
        return weights
    return eligible_weights_per_unit(weights, np.asarray(mask)[None, :])[0]


def eligible_weights_per_unit(weights: NDArray[np.float64], masks: NDArray[np.bool_]) -> NDArray[np.float64]:
    """`eligible_weights` for every row of a (units, arms) mask: shape (units, arms)."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 2 or masks.shape[1] != weights.size:
        raise ValueError(f"masks must have shape (units, {weights.size}), got {masks.shape}")
    counts = masks.sum(axis=1, keepdims=True)
    if not counts.all():
        rows = np.flatnonzero(counts == 0)
        raise NoEligibleArmError(f"no arm is eligible for {rows.size} unit(s), e.g. row(s) {rows[:5].tolist()}")
    masked = np.where(masks, weights, 0.0)
    totals = masked.sum(axis=1, keepdims=True)
    uniform = masks / counts
    return np.divide(masked, totals, out=uniform, where=totals > 0)


def choose_arm(
    weights: NDArray[np.float64], mask: NDArray[np.bool_] | None, rng: np.random.Generator
) -> tuple[int, float]:
    """One decision: an arm drawn from `eligible_weights(weights, mask)` and its propensity.

    The hot path of a single decision, a few microseconds for ten arms: `weights` are
    trusted as a policy returns them and only checked on the rare fallback path.
    """
    masked = weights if mask is None else weights * mask
    cumulative = masked.cumsum()
    total = float(cumulative[-1])
    if not total > 0:
        # Every eligible arm has weight 0 (or the weights are invalid): the slow, checked path.
        return choose_arm(eligible_weights(_checked(weights), mask), None, rng)
    cumulative /= total
    arm = int(cumulative.searchsorted(rng.random(), side="right"))
    return arm, float(masked[arm]) / total


def draw_arm(weights: NDArray[np.float64], rng: np.random.Generator) -> int:
    """One arm index drawn with probabilities `weights`."""
    return choose_arm(weights, None, rng)[0]


def draw_arms(weights: NDArray[np.float64], rng: np.random.Generator, size: int) -> NDArray[np.intp]:
    """`size` independent arm indices drawn with probabilities `weights` (vectorised)."""
    cumulative = np.cumsum(_checked(weights))
    cumulative /= cumulative[-1]
    return cumulative.searchsorted(rng.random(size), side="right").astype(np.intp, copy=False)


def draw_arms_per_unit(weights: NDArray[np.float64], masks: NDArray[np.bool_], rng: np.random.Generator) -> UnitDraws:
    """One arm per row of a (units, arms) eligibility mask, from the renormalised weights."""
    return draw_per_unit(eligible_weights_per_unit(_checked(weights), masks), rng)


def draw_per_unit(probabilities: NDArray[np.float64], rng: np.random.Generator) -> UnitDraws:
    """One arm per row of a (units, arms) probability matrix, inverse CDF, with its propensity."""
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative /= cumulative[:, -1:]
    # Per row, the count of cumulative entries <= u is searchsorted(..., side="right").
    arms = np.count_nonzero(cumulative <= rng.random(len(cumulative))[:, None], axis=1)
    arms = arms.astype(np.intp, copy=False)
    return UnitDraws(arms, probabilities[np.arange(arms.size), arms])


def _checked(weights: NDArray[np.float64]) -> NDArray[np.float64]:
    w = np.asarray(weights, dtype=float)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError("weights must be a non-empty vector of finite numbers >= 0 with a positive sum")
    return w
