"""Sample size per arm for an A/B/n test, with the multiple-testing correction planned in.

Binary metrics use Cohen's h (`statsmodels.stats.proportion.proportion_effectsize`) with
`statsmodels.stats.power.NormalIndPower`; revenue metrics use Cohen's d = MDE / sd with
`statsmodels.stats.power.TTestIndPower`. Both solve for equal arms, two-sided.

Several variants: each of the (arms - 1) comparisons with the control is planned at the
Bonferroni level alpha / (arms - 1) for every correction except "none". Holm is uniformly at
least as powerful as Bonferroni, and Benjamini–Hochberg rejects at least what Bonferroni
rejects, so each comparison reaches at least the target power — the conservative choice.

Guardrails (`plan_decision_sample_size`): the ship decision of Schultzberg, Ankargren &
Frånberg (2024) needs the primary's superiority AND every guardrail's non-inferiority, so its
type II errors add up; every test is planned at power 1 - beta / (G + 1) for G guardrails
(their section 3.4), the primary's alpha is corrected across success metrics only, and the
guardrails' is not (sections 3.2-3.3). A guardrail is planned for no true change, so that it
is shown inside its margin (`plan_non_inferiority_sample_size`); the planned n per arm is the
largest any metric needs.

Inputs that admit no plan raise `PlanningError` (a ValueError) naming the input at fault,
including effects so small or so large that the power solver cannot converge: statsmodels
then warns and returns NaN, which is refused here instead of reaching the caller.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import proportion_effectsize

from policies.bandits.arm_stats import Metric as MetricType
from policies.stats.corrections import Correction, check_correction
from policies.stats.guardrails import Direction, boundary_log_ratio

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


def _solve(solver: Any, effect_size: float, level: float, power: float, large_field: str, *,
           small_field: str = "mde", alternative: str = "two-sided") -> float:
    """Exposures per arm from statsmodels' `solve_power`, refused (never NaN) when the root
    finder fails: a tiny effect blames `small_field`, a huge one `large_field`."""
    if not (math.isfinite(effect_size) and effect_size > 0):  # statsmodels would raise on 0
        raise PlanningError(small_field, "too small to plan: at double precision it does not move the baseline")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning comes with the NaN refused below
        n = float(solver.solve_power(effect_size=effect_size, alpha=level, power=power, ratio=1.0,
                                     alternative=alternative))
    if math.isfinite(n) and 0 < n <= MAX_PER_ARM:
        return n
    if effect_size < 1:
        raise PlanningError(small_field, f"too small to plan: effect size {effect_size:.3g} would need more than "
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


def success_alpha(alpha: float, success_metrics: int = 1) -> float:
    """Level of each success metric's test: Bonferroni across the success metrics only.

    "Ship if at least one success metric is superior" is a union-intersection test, so its
    level needs the correction (Schultzberg et al. 2024, section 3.2); Holm's step-down keeps
    the same bound. Guardrails take the uncorrected `alpha` (intersection-union).
    """
    if not 0 < alpha < 1:
        raise PlanningError("alpha", f"must be in (0, 1), got {alpha!r}")
    if success_metrics < 1:
        raise PlanningError("success_metrics", f"the rule needs at least one success metric, got {success_metrics}")
    return alpha / success_metrics


def decision_power(power: float, guardrails: int) -> float:
    """Power of each test so the ship decision keeps `power`: 1 - (1 - power) / (guardrails + 1).

    Shipping needs the success metric's superiority and all G guardrails' non-inferiority; the
    decision's type II error is at most the sum of the tests' (Bonferroni), so each test gets
    beta / (G + 1) (Schultzberg et al. 2024, section 3.4).
    """
    if not 0 < power < 1:
        raise PlanningError("power", f"must be in (0, 1), got {power!r}")
    if guardrails < 0:
        raise PlanningError("guardrails", f"must be >= 0, got {guardrails}")
    return 1.0 - (1.0 - power) / (guardrails + 1)


@dataclass(frozen=True, slots=True)
class GuardrailDesign:
    """What planning needs of a guardrail: its control `baseline` (a rate, or a mean with its
    per-unit `std`; `std` None means binary), the relative `margin` and the good `direction`."""

    metric: str
    baseline: float
    margin: float
    direction: Direction
    std: float | None = None


@dataclass(frozen=True, slots=True)
class NonInferiorityPlan:
    """Exposures per arm to show a guardrail with no true change inside its margin.

    `effect_size` is |log boundary ratio| / (per-unit sd of the log mean), the standardised
    distance of no change from the margin; `alpha_one_sided` the test's level.
    """

    metric: str
    baseline: float
    margin: float
    direction: Direction
    effect_size: float
    alpha_one_sided: float
    power: float
    n_per_arm: int


@lru_cache(maxsize=1024)
def plan_non_inferiority_sample_size(design: GuardrailDesign, *, alpha: float = 0.05,
                                     power: float = 0.8) -> NonInferiorityPlan:
    """Exposures per arm for `policies.stats.guardrails.guardrail_test` to show non-inferiority.

    The test is one-sided at alpha / 2 on theta = log(mean_t / mean_c), whose variance with
    equal arms is 2 s^2 / n, s^2 = (1 - p) / p for a rate p, (std / mean)^2 for a mean (delta
    method). Planned under no true change (theta = 0), the distance to the boundary theta_0 is
    |theta_0|, so n = 2 (z_{1-alpha/2} + z_{power})^2 s^2 / theta_0^2:
    `NormalIndPower().solve_power(|theta_0| / s, alpha=alpha / 2, power, ratio=1,
    alternative="larger")`. `power` is per test: pass `decision_power(...)`.
    """
    for name, value in (("alpha", alpha), ("power", power)):
        if not 0 < value < 1:
            raise PlanningError(name, f"must be in (0, 1), got {value!r}")
    try:
        theta_0 = boundary_log_ratio(design.margin, design.direction)
    except ValueError as exc:
        raise PlanningError("margin", str(exc)) from None
    if design.std is None:
        if not 0 < design.baseline < 1:
            raise PlanningError("baseline", f"a rate must be in (0, 1), got {design.baseline!r}")
        unit_sd = math.sqrt((1.0 - design.baseline) / design.baseline)
    else:
        if not (math.isfinite(design.baseline) and design.baseline > 0):
            raise PlanningError("baseline", f"a relative margin needs a mean > 0, got {design.baseline!r}")
        if not (math.isfinite(design.std) and design.std > 0):
            raise PlanningError("std", f"must be a finite number > 0, got {design.std!r}")
        unit_sd = design.std / design.baseline
    effect_size = abs(theta_0) / unit_sd
    n = _solve(NormalIndPower(), effect_size, alpha / 2, power, "margin", small_field="margin",
               alternative="larger")
    return NonInferiorityPlan(design.metric, design.baseline, design.margin, design.direction, effect_size,
                              alpha / 2, power, math.ceil(n))


@dataclass(frozen=True, slots=True)
class DecisionPlan:
    """Planned exposures per arm for the ship decision with guardrails.

    `power` is the decision's, `power_per_test` what each test is planned at; `n_per_arm` is
    the largest need, set by `binding` (the primary metric's name or a guardrail's).
    """

    power: float
    power_per_test: float
    primary: SampleSizePlan
    guardrails: tuple[NonInferiorityPlan, ...]
    n_per_arm: int
    total: int
    binding: str


def plan_decision_sample_size(
    baseline: float,
    mde: float,
    *,
    std: float | None = None,
    relative: bool = True,
    guardrails: Sequence[GuardrailDesign] = (),
    alpha: float = 0.05,
    power: float = 0.8,
    arms: int = 2,
    correction: Correction = "holm",
    success_metrics: int = 1,
    primary_metric: str = "primary",
) -> DecisionPlan:
    """Sample size per arm so the ship decision (primary superior, guardrails non-inferior) has `power`.

    The primary is planned as `plan_binary_sample_size` (`std` None) or `plan_mean_sample_size`
    at `success_alpha(alpha, success_metrics)`; each guardrail as `plan_non_inferiority_sample_size`
    at the uncorrected `alpha`; all at `decision_power(power, len(guardrails))`.
    """
    per_test = decision_power(power, len(guardrails))
    level = success_alpha(alpha, success_metrics)
    options = dict(relative=relative, alpha=level, power=per_test, arms=arms, correction=correction)
    primary = (plan_binary_sample_size(baseline, mde, **options) if std is None  # type: ignore[arg-type]
               else plan_mean_sample_size(baseline, std, mde, **options))  # type: ignore[arg-type]
    plans = tuple(plan_non_inferiority_sample_size(g, alpha=alpha, power=per_test) for g in guardrails)
    needs = [(primary.n_per_arm, primary_metric), *((g.n_per_arm, g.metric) for g in plans)]
    n_per_arm, binding = max(needs, key=lambda need: need[0])
    return DecisionPlan(power, per_test, primary, plans, n_per_arm, n_per_arm * arms, binding)
