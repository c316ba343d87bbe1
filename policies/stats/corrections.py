"""Multiple-testing corrections for the variant-vs-control comparisons of one experiment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

Correction = Literal["holm", "bh", "bonferroni", "none"]
CORRECTIONS: tuple[Correction, ...] = get_args(Correction)

# Our names -> statsmodels `multipletests` method names. Holm is computed here instead:
# statsmodels' holm branch runs a full `gc.collect()` on every call (about 30 ms, more in a
# large server heap), and `analyze` runs on every report.
_STATSMODELS_METHOD: dict[Correction, str] = {"bh": "fdr_bh", "bonferroni": "bonferroni"}


def _holm(raw: NDArray[np.float64]) -> NDArray[np.float64]:
    """Holm step-down adjusted p-values: running max of (m - j) p_(j) over sorted p, capped at 1.

    Same values as `multipletests(raw, method="holm")[1]` (checked in the tests).
    """
    order = np.argsort(raw)
    stepped = np.maximum.accumulate(raw[order] * np.arange(raw.size, 0, -1))
    adjusted = np.empty_like(raw)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def check_correction(correction: str) -> Correction:
    """Return `correction` as a `Correction`, or raise ValueError naming the valid choices."""
    for known in CORRECTIONS:
        if correction == known:
            return known
    raise ValueError(f"unknown correction {correction!r}; choose one of {', '.join(CORRECTIONS)}")


def adjust_p_values(p_values: Sequence[float], correction: Correction) -> NDArray[np.float64]:
    """Adjusted p-values, in input order (`statsmodels.stats.multitest.multipletests` semantics).

    Holm (1979) and Bonferroni control the family-wise error rate; Benjamini–Hochberg (1995)
    controls the false discovery rate. Compare the adjusted values with the unadjusted alpha.
    """
    raw = np.asarray(p_values, dtype=float)
    if raw.ndim != 1 or np.any(~np.isfinite(raw)) or np.any((raw < 0) | (raw > 1)):
        raise ValueError("p_values must be a flat sequence of numbers in [0, 1]")
    correction = check_correction(correction)
    if correction == "none" or raw.size == 0:
        return raw.copy()
    if correction == "holm":
        return _holm(raw)
    # statsmodels loads pandas: imported here, so reports that never need it start faster.
    from statsmodels.stats.multitest import multipletests

    return np.asarray(multipletests(raw, method=_STATSMODELS_METHOD[correction])[1], dtype=float)
