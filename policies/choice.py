"""Turning selection probabilities into choices, one or many at a time, under eligibility masks."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


class NoEligibleArmError(ValueError):
    pass


def eligible_weights(weights: NDArray[np.float64], mask: NDArray[np.bool_] | None) -> NDArray[np.float64]:
    """Zero the arms outside `mask` and renormalise the rest so they sum to 1.

    If every eligible arm has weight 0 (a policy floor of 0 can do that), the eligible arms
    share the probability equally, so an eligible unit always gets an arm.
    """
    if mask is None:
        return weights
    masked = np.where(mask, weights, 0.0)
    total = masked.sum()
    if total > 0:
        return masked / total
    count = int(np.count_nonzero(mask))
    if count == 0:
        raise NoEligibleArmError("no arm is eligible for this unit")
    return mask.astype(float) / count


def draw_arms(weights: NDArray[np.float64], rng: np.random.Generator, size: int) -> NDArray[np.intp]:
    """`size` independent arm indices drawn with probabilities `weights` (vectorised)."""
    cumulative = np.cumsum(weights)
    cumulative[-1] = 1.0  # guard against rounding leaving the last bin short
    return np.searchsorted(cumulative, rng.random(size), side="right").astype(np.intp)
