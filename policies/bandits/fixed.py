"""The fixed split of an A/B test: the declared weights, whatever the data say."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from policies.bandits.registry import register_policy
from policies.sufficient import ArmStats


@dataclass(frozen=True)
class FixedSplit:
    split: tuple[float, ...]

    def __post_init__(self) -> None:
        w = np.asarray(self.split, dtype=float)
        if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("split must be a non-empty list of finite weights >= 0")
        if not np.isclose(w.sum(), 1.0, rtol=0, atol=1e-9):
            raise ValueError(f"split must sum to 1, got {w.sum()!r}")

    def weights(self, stats: Sequence[ArmStats], rng: np.random.Generator) -> NDArray[np.float64]:
        if len(stats) != len(self.split):
            raise ValueError(f"expected stats for {len(self.split)} arms, got {len(stats)}")
        return np.asarray(self.split, dtype=float)


@register_policy("fixed")
def fixed(*, split: Sequence[float]) -> FixedSplit:
    return FixedSplit(tuple(float(x) for x in split))
