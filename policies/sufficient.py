"""Per-arm sufficient statistics: every analysis and policy works on these, never on raw rows."""

from __future__ import annotations

import math
from dataclasses import dataclass


def _check_count(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class BinaryStats:
    """Bernoulli outcomes: `n` trials (exposures) with `successes` conversions."""

    n: int
    successes: int

    def __post_init__(self) -> None:
        _check_count("n", self.n)
        _check_count("successes", self.successes)
        if self.successes > self.n:
            raise ValueError(f"successes ({self.successes}) cannot exceed n ({self.n})")

    def __add__(self, other: BinaryStats) -> BinaryStats:
        return BinaryStats(self.n + other.n, self.successes + other.successes)

    @property
    def failures(self) -> int:
        return self.n - self.successes

    @property
    def rate(self) -> float | None:
        return self.successes / self.n if self.n else None

    def as_mean(self) -> MeanStats:
        """The same data as a mean of 0/1 values (total_sq equals total for 0/1 outcomes)."""
        return MeanStats(self.n, float(self.successes), float(self.successes))


@dataclass(frozen=True, slots=True)
class MeanStats:
    """Real-valued outcomes per trial, e.g. revenue per exposure: count, sum and sum of squares."""

    n: int
    total: float
    total_sq: float

    def __post_init__(self) -> None:
        _check_count("n", self.n)
        if not math.isfinite(self.total):
            raise ValueError(f"total must be finite, got {self.total!r}")
        _check_count("total_sq", self.total_sq)

    def __add__(self, other: MeanStats) -> MeanStats:
        return MeanStats(self.n + other.n, self.total + other.total, self.total_sq + other.total_sq)

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    @property
    def variance(self) -> float | None:
        """Unbiased sample variance (ddof=1); None below two observations."""
        if self.n < 2:
            return None
        mean = self.total / self.n
        # Clamp: the one-pass formula can go a hair negative through rounding.
        return max((self.total_sq - self.n * mean * mean) / (self.n - 1), 0.0)


ArmStats = BinaryStats | MeanStats


def net_of_cost(value: MeanStats, cost: float, decisions: float, decisions_sq: float,
                value_decisions: float) -> MeanStats:
    """Per-unit value net of cost, `v - c k` for a unit with value `v` and `k` decisions at cost
    `c` each, from the sums of `k`, `k**2` and `v k` over the units (expanding the square)."""
    total = value.total - cost * decisions
    total_sq = value.total_sq - 2.0 * cost * value_decisions + cost * cost * decisions_sq
    return MeanStats(value.n, total, max(total_sq, 0.0))  # rounding can take a zero sum a hair below 0
