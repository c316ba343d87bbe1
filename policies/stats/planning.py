"""Sample size per arm for an A/B/n test, with the multiple-testing correction planned in.

Binary metrics use Cohen's h (`statsmodels.stats.proportion.proportion_effectsize`) with
`statsmodels.stats.power.NormalIndPower`; revenue metrics use Cohen's d = MDE / sd with
`statsmodels.stats.power.TTestIndPower`. Both solve for equal arms, two-sided.

Several variants: each of the (arms - 1) comparisons with the control is planned at the
Bonferroni level alpha / (arms - 1) for every correction except "none". Holm is uniformly at
least as powerful as Bonferroni, and Benjamini–Hochberg rejects at least what Bonferroni
rejects, so each comparison reaches at least the target power — the conservative choice.

Inputs that admit no plan raise `PlanningError` (a ValueError) naming the input at fault,
including effects so small or so large that the power solver cannot converge: statsmodels
then warns and returns NaN, which is refused here instead of reaching the caller.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import proportion_effectsize

from policies.bandits.arm_stats import Metric as MetricType
from policies.stats.corrections import Correction, check_correction

# Beyond this many exposures per arm a plan is not a plan (and the solver loses precision).
MAX_PER_ARM = 1e15


class PlanningError(ValueError):
    """The inputs admit no plan; `field` names the input at fault (baseline, mde, std, alpha,
    power, arms) and `reason` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SampleSizePlan:
    """Planned exposures per arm to detect `target` vs `baseline` with `power` per comparison.

    `effect_size` is Cohen's h (binary) or d (revenue); `alpha_per_test` is the level each
    variant-vs-control comparison is planned at.
    """

    metric_type: MetricType
    baseline: float
    target: float
    effect_size: float
    alpha: float
    alpha_per_test: float
    power: float
    arms: int
    n_per_arm: int
    total: int


def absolute_mde(baseline: float, mde: float, *, relative: bool) -> float:
    """The minimum detectable effect in the metric's units: mde * baseline when relative."""
    return mde * baseline if relative else mde


def alpha_per_test(alpha: float, arms: int, correction: Correction) -> float:
    """Planning level of each of the (arms - 1) comparisons (Bonferroni unless "none")."""
    if not 0 < alpha < 1:
        raise PlanningError("alpha", f"must be in (0, 1), got {alpha!r}")
    if arms < 2:
        raise PlanningError("arms", f"an experiment needs at least 2 arms, got {arms}")
    return alpha if check_correction(correction) == "none" else alpha / (arms - 1)


def _check_common(power: float, mde: float) -> None:
    if not 0 < power < 1:
        raise PlanningError("power", f"must be in (0, 1), got {power!r}")
    if not math.isfinite(mde) or mde == 0:
        raise PlanningError("mde", f"must be a finite non-zero number, got {mde!r}")


def _solve(solver: Any, effect_size: float, level: float, power: float, large_field: str) -> float:
    """Exposures per arm from statsmodels' `solve_power`, refused (never NaN) when the root
    finder fails: a tiny effect blames the mde, a huge one `large_field`."""
    if not (math.isfinite(effect_size) and effect_size > 0):  # statsmodels would raise on 0
        raise PlanningError("mde", "too small to plan: at double precision it does not move the baseline")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning comes with the NaN refused below
        n = float(solver.solve_power(effect_size=effect_size, alpha=level, power=power, ratio=1.0))
    if math.isfinite(n) and 0 < n <= MAX_PER_ARM:
        return n
    if effect_size < 1:
        raise PlanningError("mde", f"too small to plan: effect size {effect_size:.3g} would need more than "
                                   f"{MAX_PER_ARM:.0e} exposures per arm")
    raise PlanningError(large_field, f"effect size {effect_size:.3g} is too large to plan (a handful of exposures "
                                     "per arm would do)")


@lru_cache(maxsize=1024)  # reports re-plan with the same inputs; statsmodels solves iteratively
def plan_binary_sample_size(
    baseline: float,
    mde: float,
    *,
    relative: bool = True,
    alpha: float = 0.05,
    power: float = 0.8,
    arms: int = 2,
    correction: Correction = "holm",
) -> SampleSizePlan:
    """Sample size per arm to detect a conversion rate moving from `baseline` by `mde`."""
    _check_common(power, mde)
    if not 0 < baseline < 1:
        raise PlanningError("baseline", f"a rate must be in (0, 1), got {baseline!r}")
    target = baseline + absolute_mde(baseline, mde, relative=relative)
    if not 0 < target < 1:
        raise PlanningError("mde", f"baseline {baseline!r} moved by mde {mde!r} leaves (0, 1): {target!r}")
    level = alpha_per_test(alpha, arms, correction)
    h = abs(float(proportion_effectsize(target, baseline)))
    n = _solve(NormalIndPower(), h, level, power, "mde")
    return _plan("binary", baseline, target, h, alpha, level, power, arms, n)


@lru_cache(maxsize=1024)
def plan_mean_sample_size(
    baseline: float,
    std: float,
    mde: float,
    *,
    relative: bool = True,
    alpha: float = 0.05,
    power: float = 0.8,
    arms: int = 2,
    correction: Correction = "holm",
) -> SampleSizePlan:
    """Sample size per arm to detect a mean (e.g. revenue per exposure) moving by `mde`.

    `std` is the per-exposure standard deviation, assumed equal in all arms.
    """
    _check_common(power, mde)
    if not math.isfinite(baseline):
        raise PlanningError("baseline", f"must be a finite number, got {baseline!r}")
    if not (math.isfinite(std) and std > 0):
        raise PlanningError("std", f"must be a finite number > 0, got {std!r}")
    shift = absolute_mde(baseline, mde, relative=relative)
    if shift == 0:
        raise PlanningError("baseline", "a relative mde needs a non-zero baseline")
    level = alpha_per_test(alpha, arms, correction)
    d = abs(shift) / std
    n = _solve(TTestIndPower(), d, level, power, "std")
    return _plan("revenue", baseline, baseline + shift, d, alpha, level, power, arms, n)


def _plan(
    metric_type: MetricType,
    baseline: float,
    target: float,
    effect_size: float,
    alpha: float,
    level: float,
    power: float,
    arms: int,
    n: float,
) -> SampleSizePlan:
    n_per_arm = math.ceil(n)
    return SampleSizePlan(
        metric_type,
        baseline,
        target,
        effect_size,
        alpha,
        level,
        power,
        arms,
        n_per_arm,
        n_per_arm * arms,
    )
