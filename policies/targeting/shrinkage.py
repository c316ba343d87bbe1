"""Per-(segment, arm) means shrunk towards the arm's pooled mean by empirical Bayes.

For one arm, cell c (a segment) has `n_c` outcomes with mean `y_c`. Under the one-way
random-effects model `y_ci = mu + b_c + e_ci`, `b_c ~ (0, tau^2)`, `e_ci ~ (0, sigma^2)`, the
method-of-moments (ANOVA) estimates are (Searle, Casella & McCulloch 1992, *Variance
Components*, ch. 3)

    sigma^2 = sum_c (S2_c - n_c y_c^2) / (N - C)                    (within cells)
    tau^2   = max(0, (Q - (C - 1) sigma^2) / (N - sum_c n_c^2 / N)), Q = sum_c n_c (y_c - mu)^2

and the best linear predictor of a cell's mean is `(n_c y_c + m mu) / (n_c + m)` with
`m = sigma^2 / tau^2` pseudo-outcomes. With no real difference between segments `tau^2` is
about 0, `m` is huge and every segment gets the pooled mean: the estimate only separates
segments when the data show they differ. For 0/1 outcomes this is the beta-binomial
empirical Bayes rate. An arm without outcomes gets the grand mean of all arms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
# Pseudo-outcomes standing in for "no between-segment variance": the pooled mean wins outright.
FULL_POOLING = 1e12


@dataclass(frozen=True, eq=False)
class ShrunkMeans:
    """`means[c, a]` the shrunk mean of cell (c, a); `pooled[a]` the arm's mean; `strength[a]` = m."""

    means: FloatArray
    pooled: FloatArray
    strength: FloatArray


def shrunk_means(totals: FloatArray, counts: FloatArray, totals_sq: FloatArray) -> ShrunkMeans:
    """Shrink the cell means `totals / counts` (arrays of shape (cells, arms)) as described above."""
    totals, counts, totals_sq = (np.asarray(x, dtype=float) for x in (totals, counts, totals_sq))
    if not (totals.shape == counts.shape == totals_sq.shape) or totals.ndim != 2:
        raise ValueError("totals, counts and totals_sq must be (cells, arms) arrays of one shape")
    if np.any(counts < 0) or not np.all(np.isfinite(totals)) or not np.all(np.isfinite(totals_sq)):
        raise ValueError("counts must be >= 0 and totals finite")
    n = counts.sum(axis=0)
    grand = totals.sum() / counts.sum() if counts.sum() > 0 else 0.0
    pooled = np.divide(totals.sum(axis=0), n, out=np.full(n.shape, grand), where=n > 0)
    cell = np.divide(totals, counts, out=np.broadcast_to(pooled, counts.shape).copy(), where=counts > 0)
    cells = (counts > 0).sum(axis=0)
    within_ss = np.maximum(totals_sq - counts * cell**2, 0.0).sum(axis=0)
    sigma2 = np.divide(within_ss, n - cells, out=np.zeros_like(n), where=n > cells)
    between = (counts * (cell - pooled) ** 2).sum(axis=0)
    scale = n - np.divide((counts**2).sum(axis=0), n, out=np.zeros_like(n), where=n > 0)
    tau2 = np.divide(between - (cells - 1) * sigma2, scale, out=np.zeros_like(n), where=scale > 0)
    tau2 = np.maximum(tau2, 0.0)
    strength = np.divide(sigma2, tau2, out=np.full(n.shape, FULL_POOLING), where=tau2 > 0)
    strength = np.minimum(strength, FULL_POOLING)
    weight = counts + strength
    means = np.divide(totals + strength * pooled, weight, out=np.broadcast_to(pooled, counts.shape).copy(),
                      where=weight > 0)
    return ShrunkMeans(means, pooled, strength)
