"""Bandit arms read through their logged propensities: weight-corrected estimates and SRM.

A bandit changes its weights as it learns, so an arm's pooled mean mixes periods in different
proportions than another arm's: when the base rate drifts, pooled counts can reverse the order
of two arms (Simpson's paradox). Each unit carries the propensity `p` with which its arm was
drawn (for per-user units, that of their first decision), so every arm is estimated by
inverse-propensity weighting, self-normalised (Hajek 1971; Horvitz & Thompson 1952), with
`w = 1 / p`:

    mu_a = sum_{i in a} w_i Y_i / sum_{i in a} w_i
    var_a = sum_{i in a} w_i^2 (Y_i - mu_a)^2 / (sum_{i in a} w_i)^2     (linearised variance)

(Sarndal, Swensson & Wretman 1992, "Model Assisted Survey Sampling", 5.7; the sandwich
variance of the ratio estimator). Both come from five running sums per arm (`PropensitySums`),
so the store keeps them by increments and the simulator by `np.bincount`, and both hand them
to `policies.stats.analysis.analyze` in the same form. With one constant propensity the
estimates are the pooled mean and its variance s^2 / n (with ddof 0).

The report reads the arms on these estimates through partial pooling
(`policies.stats.partial_pooling`): a binary arm enters as the Beta posterior with
moment-matched effective counts, n_eff = mu (1 - mu) / var (the Kish effective sample size
(sum w)^2 / sum w^2 when var is 0), alpha = prior_alpha + mu n_eff, beta = prior_beta +
(1 - mu) n_eff; a revenue arm as mu and var.

Bandit SRM (`bandit_srm`): the decide path logs only the propensity of the arm it drew, not
the whole probability vector, so the expected exposures sum_i p_ia of an arm are not observed.
The check uses the Horvitz-Thompson identity instead: E[sum_{i in a} 1 / p_i] = N (the number of
units) for every arm, whatever the adaptive weights were (each term 1[A_i = a] / p_ia - 1 is a
martingale difference). Per arm z_a = (W_a - N) / sqrt(V_a), W_a = sum w, with the variance
N (sum w^2 / sum w - 1), the ratio estimate of sum_i (1 / p_ia - 1); for a constant
propensity p this is exactly the binomial score test (n_a - N p) / sqrt(N p (1 - p)). The
p-value is the Bonferroni minimum over the arms with units, two-sided, flagged below the
threshold (0.001, as for A/B tests). An arm that lost exposures has W_a short of N.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

from policies.stats.srm import DEFAULT_SRM_THRESHOLD, SrmResult


@dataclass(frozen=True, slots=True)
class PropensitySums:
    """One arm's running sums over its units with a known propensity p (w = 1 / p, Y the
    unit's value): `units`, sum w, sum w^2, sum w Y, sum w^2 Y, sum w^2 Y^2."""

    units: int = 0
    weight: float = 0.0
    weight_sq: float = 0.0
    weight_y: float = 0.0
    weight_sq_y: float = 0.0
    weight_sq_y_sq: float = 0.0

    def __post_init__(self) -> None:
        values = (self.units, self.weight, self.weight_sq, self.weight_y, self.weight_sq_y, self.weight_sq_y_sq)
        if not all(math.isfinite(v) for v in values) or self.units < 0 or self.weight < 0 or self.weight_sq < 0:
            raise ValueError("propensity sums must be finite, with units, sum w and sum w^2 >= 0")


@dataclass(frozen=True, slots=True)
class IpwEstimate:
    """An arm's corrected mean, the variance of that mean, and its effective sample size."""

    mean: float
    variance: float
    effective_n: float


def propensity_sums(arms: ArrayLike, propensities: ArrayLike, outcomes: ArrayLike,
                    n_arms: int) -> tuple[PropensitySums, ...]:
    """Per-arm sums from per-unit arrays: arm index, propensity in (0, 1], value.

    What the simulator calls; the store keeps the same sums by increments.
    """
    a = np.asarray(arms, dtype=np.intp)
    p = np.asarray(propensities, dtype=float)
    y = np.asarray(outcomes, dtype=float)
    if not a.shape == p.shape == y.shape or a.ndim != 1:
        raise ValueError("arms, propensities and outcomes need one entry per unit")
    if a.size and (a.min() < 0 or a.max() >= n_arms):
        raise ValueError(f"arm indices must lie in [0, {n_arms})")
    if not np.all(np.isfinite(p) & (p > 0) & (p <= 1)) or not np.all(np.isfinite(y)):
        raise ValueError("propensities must lie in (0, 1] and outcomes be finite")
    w = 1.0 / p
    columns = [np.bincount(a, x, minlength=n_arms) for x in (w, w * w, w * y, w * w * y, w * w * y * y)]
    units = np.bincount(a, minlength=n_arms)
    return tuple(PropensitySums(int(units[i]), *(float(c[i]) for c in columns)) for i in range(n_arms))


def propensity_increments(propensity: float, value: float) -> dict[str, float]:
    """What one unit with this propensity and value adds to its arm's sums (the store's
    increments; a value change is the difference of two of these)."""
    w = 1.0 / propensity
    return {"weight": w, "weight_sq": w * w, "weight_y": w * value, "weight_sq_y": w * w * value,
            "weight_sq_y_sq": w * w * value * value}


def ipw_estimate(sums: PropensitySums) -> IpwEstimate | None:
    """Hajek mean and linearised variance (module doc); None for an arm without units."""
    if sums.units == 0 or sums.weight <= 0:
        return None
    mu = sums.weight_y / sums.weight
    # sum w^2 (Y - mu)^2 expanded; rounding can take it a hair below 0.
    spread = max(sums.weight_sq_y_sq - 2.0 * mu * sums.weight_sq_y + mu * mu * sums.weight_sq, 0.0)
    variance = spread / (sums.weight * sums.weight)
    kish = sums.weight * sums.weight / sums.weight_sq
    binary_n = mu * (1.0 - mu) / variance if variance > 0 and 0 < mu < 1 else kish
    return IpwEstimate(mu, variance, binary_n)


def bandit_srm(sums: Sequence[PropensitySums], *, threshold: float = DEFAULT_SRM_THRESHOLD) -> SrmResult:
    """Horvitz-Thompson sample-ratio check of a bandit (module doc); `statistic` is the largest |z|."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    total = sum(s.units for s in sums)
    z = [_ht_z(s, total) for s in sums if s.units > 0]
    if total == 0 or len(z) < 1:
        return SrmResult(None, None, False)
    worst = max(abs(v) for v in z)
    p_value = min(1.0, len(z) * 2.0 * float(sps.norm.sf(worst)))
    return SrmResult(float(worst) if math.isfinite(worst) else None, p_value, p_value < threshold)


def _ht_z(s: PropensitySums, total: int) -> float:
    variance = total * (s.weight_sq / s.weight - 1.0)
    gap = s.weight - total
    if variance <= 1e-12 * total:  # propensity 1 throughout: W_a is N exactly under the null
        return 0.0 if abs(gap) <= 1e-9 * total else math.inf
    return gap / math.sqrt(variance)
