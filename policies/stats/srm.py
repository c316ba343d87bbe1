"""Sample ratio mismatch: do the observed exposures fit the declared traffic split?

A broken split (a redirect that drops users, a bot filter applied to one arm) biases every
comparison, so a flagged experiment must not be read. Pearson's chi-square goodness of fit,
`scipy.stats.chisquare(exposures, expected)`, flagged at p < 0.001 by default (GrowthBook's
default): strict, because the check runs on every report and a false alarm stops a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

DEFAULT_SRM_THRESHOLD = 0.001


@dataclass(frozen=True, slots=True)
class SrmResult:
    """Goodness-of-fit p-value (None without exposures) and whether it is below the threshold."""

    statistic: float | None
    p_value: float | None
    flagged: bool


def sample_ratio_test(
    exposures: Sequence[int], weights: Sequence[float], *, threshold: float = DEFAULT_SRM_THRESHOLD
) -> SrmResult:
    """Chi-square goodness of fit of `exposures` against the split `weights` (normalised here).

    Arms declared at weight 0 are left out; if one of them has exposures the split is broken
    outright (p = 0, flagged).
    """
    observed = np.asarray(exposures, dtype=float)
    w = np.asarray(weights, dtype=float)
    if observed.ndim != 1 or observed.shape != w.shape or observed.size < 2:
        raise ValueError("exposures and weights need one entry per arm, for at least 2 arms")
    if np.any(observed < 0) or np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("exposures must be >= 0 and weights finite, >= 0, not all 0")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    if np.any(observed[w == 0] > 0):
        return SrmResult(None, 0.0, True)
    observed, w = observed[w > 0], w[w > 0]
    total = observed.sum()
    if total == 0 or observed.size < 2:
        return SrmResult(None, None, False)
    statistic, p_value = sps.chisquare(observed, total * w / w.sum())
    return SrmResult(float(statistic), float(p_value), bool(p_value < threshold))
