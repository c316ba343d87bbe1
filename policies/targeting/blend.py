"""The targeting step: tilt the bandit's weights towards what this unit is likely to convert on.

With `strength` s in [0, 1], eligible bandit weights w (renormalised under the unit's mask)
and the ranking distribution r of the unit's recommender scores, the unit's arm is drawn from
the mixture

    p = (1 - s) * w + s * r,       r = softmax((x - max x) / temperature) over eligible arms,

where x are the scores divided by their largest absolute eligible value (so `temperature` is
relative to the unit's own scores: an arm scoring 5% below the best gets e^-1 of its ranking
mass at temperature 0.05). Ineligible arms have p = 0. Equivalently: with probability 1 - s
follow the bandit, with probability s the ranking. The arm is drawn from p itself, so the
logged propensity p[arm] is exactly the probability the arm had; every eligible arm keeps at
least (1 - s) times its bandit weight, so off-policy estimators keep their support. s = 0 is
the bandit exactly; s = 1 is the pure ranking.

A unit whose scores do not separate its eligible arms (cold start, or all equal) gets the
bandit alone: `tilted` is False.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from policies.bandits.choice import choose_arm, eligible_weights_per_unit

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class TargetedChoice:
    """The arm drawn, its exact propensity, and whether the recommender tilted the draw."""

    arm: int
    propensity: float
    tilted: bool


def check_strength(strength: float) -> float:
    if not (math.isfinite(strength) and 0.0 <= strength <= 1.0):
        raise ValueError(f"strength must be in [0, 1], got {strength!r}")
    return float(strength)


def check_temperature(temperature: float) -> float:
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def ranking_distribution(scores: FloatArray, masks: NDArray[np.bool_], temperature: float) -> FloatArray:
    """Softmax of the scores scaled by their largest absolute eligible value, per row of
    (units, arms); ineligible arms get 0. Rows must have at least one eligible arm."""
    check_temperature(temperature)
    x = np.where(masks, scores, -np.inf)
    top = x.max(axis=1, keepdims=True)
    scale = np.where(masks, np.abs(scores), 0.0).max(axis=1, keepdims=True)
    z = np.divide(x - top, scale * temperature, out=np.where(masks, 0.0, -np.inf), where=scale > 0)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def separates(scores: FloatArray, masks: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Rows whose finite scores differ between eligible arms (only these are tilted)."""
    finite = np.all(np.isfinite(np.where(masks, scores, 0.0)), axis=1)
    high = np.where(masks, scores, -np.inf).max(axis=1)
    low = np.where(masks, scores, np.inf).min(axis=1)
    return finite & (high > low)


def blend_per_unit(
    weights: FloatArray, scores: FloatArray, masks: NDArray[np.bool_], strength: float, temperature: float
) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Blended probabilities (units, arms) and which rows were tilted; untilted rows are the
    eligible bandit weights."""
    check_strength(strength)
    masks = np.asarray(masks, dtype=bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    if scores.shape != masks.shape:
        raise ValueError(f"scores {scores.shape} and masks {masks.shape} must have one shape")
    bandit = eligible_weights_per_unit(np.asarray(weights, dtype=float), masks)
    tilted = separates(scores, masks) if strength > 0 else np.zeros(len(masks), dtype=bool)
    if not tilted.any():
        return bandit, tilted
    ranking = ranking_distribution(np.where(tilted[:, None], scores, 0.0), masks, temperature)
    blended = np.where(tilted[:, None], (1 - strength) * bandit + strength * ranking, bandit)
    return blended, tilted


def blend(
    weights: FloatArray, scores: FloatArray, mask: NDArray[np.bool_] | None, strength: float, temperature: float
) -> tuple[FloatArray, bool]:
    """`blend_per_unit` for one unit (mask None: every arm eligible)."""
    k = len(weights)
    row_mask = np.ones((1, k), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)[None, :]
    blended, tilted = blend_per_unit(weights, np.asarray(scores, dtype=float)[None, :], row_mask, strength, temperature)
    return blended[0], bool(tilted[0])


def choose_targeted(
    weights: FloatArray, scores: FloatArray, mask: NDArray[np.bool_] | None, strength: float, temperature: float,
    rng: np.random.Generator,
) -> TargetedChoice:
    """One decision from the blend; its propensity is the blended probability of the arm.

    The decide path's version of `blend`: the same formula on Python floats, because numpy's
    per-call overhead dominates for a handful of arms. Inputs are trusted as the engine passes
    them; anything unusual (no eligible weight, non-finite scores) takes the checked path.
    """
    w, x = weights.tolist(), scores.tolist()
    keep = [True] * len(w) if mask is None else mask.tolist()
    eligible = [i for i, k in enumerate(keep) if k]
    total = sum(w[i] for i in eligible)
    values = [x[i] for i in eligible]
    if not (total > 0 and all(math.isfinite(v) for v in values)):
        probabilities, tilted = blend(weights, scores, mask, strength, temperature)
        arm, propensity = choose_arm(probabilities, None, rng)
        return TargetedChoice(arm, propensity, tilted)
    top, low = max(values), min(values)
    p = [0.0] * len(w)
    if strength > 0 and top > low:
        scale = max(abs(v) for v in values) * temperature
        e = [math.exp((v - top) / scale) for v in values]
        z = sum(e)
        for i, ei in zip(eligible, e, strict=True):
            p[i] = (1 - strength) * (w[i] / total) + strength * (ei / z)
        tilted = True
    else:
        for i in eligible:
            p[i] = w[i] / total
        tilted = False
    # Inverse CDF on the running sum: an arm with p = 0 spans an empty interval, never drawn.
    total_p = sum(p)
    u = rng.random() * total_p
    arm, running = max(i for i in eligible if p[i] > 0), 0.0
    for i, pi in enumerate(p):
        running += pi
        if u < running:
            arm = i
            break
    return TargetedChoice(arm, p[arm] / total_p, tilted)
