"""The ship decision of an A/B test with guardrails, simulated against a known truth.

Each run draws the user-level counts of control and variant at `n_per_arm` units each, for the
primary metric and every guardrail (units are independent, so each count is binomial; the
metrics are drawn independently of each other), and decides as the report does at the planned
sample: the primary's `two_proportion_test` and `ab_test_verdict`, each guardrail's
`guardrail_test`, and `guardrail_verdict` over them.

A run is "otherwise winning" when the primary alone names the variant winner; of those, the
guardrails block the ones whose final verdict is not `winner` (`keep_running` with a guardrail
still open, or `guardrail_failed`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from policies.stats.frequentist import two_proportion_test
from policies.stats.guardrails import Direction, boundary_log_ratio, guardrail_test, guardrail_verdict
from policies.stats.verdicts import VariantOutcome, ab_test_verdict
from policies.sufficient import BinaryStats

CONTROL, VARIANT = "control", "variant"


@dataclass(frozen=True)
class MetricTruth:
    """A conversion metric: the control's true rate and the variant's rate as a multiple of it."""

    name: str
    control_rate: float
    ratio: float = 1.0

    def __post_init__(self) -> None:
        if not (0 < self.control_rate < 1 and math.isfinite(self.ratio) and 0 <= self.control_rate * self.ratio <= 1):
            raise ValueError(f"{self.name}: rates must lie in [0, 1] (control in (0, 1))")


@dataclass(frozen=True)
class GuardrailTruth(MetricTruth):
    """A guardrail's truth and its declaration (relative `margin`, good `direction`)."""

    margin: float = 0.2
    direction: Direction = "decrease"

    def __post_init__(self) -> None:
        super().__post_init__()
        boundary_log_ratio(self.margin, self.direction)


@dataclass(frozen=True)
class DecisionScenario:
    primary: MetricTruth
    guardrails: tuple[GuardrailTruth, ...]
    n_per_arm: int
    alpha: float = 0.05


@dataclass(frozen=True)
class DecisionRates:
    """Counts over `runs`: verdict statuses, runs the primary alone wins, runs that ship."""

    runs: int
    statuses: dict[str, int]
    primary_wins: int
    shipped: int

    @property
    def blocked_share(self) -> float | None:
        """Share of otherwise-winning runs that the guardrails stop; None when none won."""
        return None if self.primary_wins == 0 else 1.0 - self.shipped / self.primary_wins


def _draw(rng: np.random.Generator, truth: MetricTruth, n: int) -> tuple[BinaryStats, BinaryStats]:
    """(variant, control) user-level counts of one metric."""
    return (BinaryStats(n, int(rng.binomial(n, truth.control_rate * truth.ratio))),
            BinaryStats(n, int(rng.binomial(n, truth.control_rate))))


def simulate_decisions(scenario: DecisionScenario, *, runs: int, rng: np.random.Generator) -> DecisionRates:
    """Decide `runs` simulated experiments of `scenario` (module doc) and count the outcomes."""
    if runs < 1 or scenario.n_per_arm < 1:
        raise ValueError("need runs >= 1 and n_per_arm >= 1")
    n = scenario.n_per_arm
    statuses: Counter[str] = Counter()
    primary_wins = shipped = 0
    for _ in range(runs):
        treated, control = _draw(rng, scenario.primary, n)
        test = two_proportion_test(treated, control)
        outcome = VariantOutcome(VARIANT, (treated.successes - control.successes) / n, None, test.p_value)
        primary = ab_test_verdict(CONTROL, [outcome], smallest_n=n, planned_n_per_arm=n, alpha=scenario.alpha,
                                  correction="holm", sequential=False)
        guardrails = [
            guardrail_test(*_draw(rng, g, n), metric=g.name, arm=VARIANT, margin=g.margin, direction=g.direction,
                           alpha=scenario.alpha)
            for g in scenario.guardrails
        ]
        verdict = guardrail_verdict(primary, [outcome], guardrails, alpha=scenario.alpha)
        statuses[verdict.status] += 1
        primary_wins += primary.winner == VARIANT
        shipped += verdict.winner == VARIANT
    return DecisionRates(runs, dict(statuses), primary_wins, shipped)
