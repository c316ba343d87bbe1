"""One analysis of an experiment for the report: tests, intervals, posteriors and a verdict.

`analyze` takes per-arm sufficient statistics and returns an `Analysis` whose `to_dict()` is
the statistical part of the report JSON. Fields that do not apply are None, never invented.
Why this module is one piece (about 690 lines): it is the one place where the tests, intervals,
posteriors and plan of an experiment meet the verdict rules below; the pieces themselves live
in their own modules, and splitting the assembly would scatter the rules across files.

A/B tests compare every variant with the control: the pooled z-test or Welch's t-test at a
fixed horizon, or the mSPRT's always-valid p-values in sequential mode
(`policies.stats.sequential`); p-values adjusted across the variants with the configured
correction; Wilson / t intervals for rates; a chi-square / Welch-ANOVA omnibus test; the planned
sample (`policies.stats.planning`) and a sample-ratio-mismatch check. The Bayesian columns
(`prob_beat_control`, `prob_best`, `expected_loss`) sit beside them. Bandits are read the
Bayesian way only: posterior mean as the rate, credible interval, posterior lift, no p-values.

Intervals beside a comparison invert the test that decides it, so each excludes "no effect"
exactly when that test rejects (see `_compare`): the difference interval (`comparisons`) and
the relative-lift interval (`lift_ci_low`, `lift_ci_high`; lift = mean_t / mean_c - 1) at the
same level alpha as the raw p-value. A winner's adjusted p-value is below alpha, so is its raw
one, and both of its intervals exclude 0. A lift bound is None where the set is unbounded (the
control's mean not distinguishable from 0); for metrics without negative values it stops at
-100%.

Verdict rules (the first that applies decides):

A/B test (kind="ab_test")
1. srm_invalid: expected weights were given and the sample-ratio-mismatch test has
   p < srm_threshold (0.001): the split is broken and no comparison can be trusted. It
   needs exposures only, so it is checked before anything that needs conversions.
2. insufficient_data: some arm has fewer than 30 exposures, or the control has no
   conversions (binary) or a zero total (revenue), so no test or lift can be stated yet.
3. winner: some variant's adjusted p-value is below alpha and the result is final, i.e. the
   planned sample per arm is reached (fixed horizon), or sequential mode is on (always-valid
   p-values may be acted on at any look). The winner is the variant with the highest rate
   among those significantly better than the control, or the control itself when every
   variant is significantly worse.
4. no_difference: the planned sample is reached and no variant is significantly better than
   the control (some may be significantly worse). In sequential mode the planned sample is the
   sequential planned n (`policies.stats.sequential_planning`): the always-valid test read at
   `sequential_looks` looks up to it has the planned power at the MDE.
5. keep_running: otherwise; the reason states the share of the planned sample reached
   (the arm with the fewest exposures counts; the sequential planned n in sequential mode).
   If no sample can be planned (e.g. the baseline moved by the MDE leaves (0, 1)),
   fixed-horizon tests keep running until a baseline is configured.

Bandit (kind="bandit")
Arms are read together, by partial pooling (`policies.stats.partial_pooling`: a normal
hierarchical model over the arms' estimates, its group-level sd half-Cauchy with the declared
MDE as scale, at the declared baseline or else the arms' mean). Each arm enters with its
weight-corrected estimate when every unit has a logged propensity
(`policies.stats.bandit_inference`: Hajek inverse-propensity means and their linearised
variances, a binary arm as the Beta with moment-matched effective counts), otherwise with its
pooled counts (its conjugate Beta, or its mean and s^2 / n); `rate`, the credible interval,
`prob_best`, `prob_beat_control` and the lift are those of the pooled posterior.
1. insufficient_data: a revenue arm has fewer than 2 exposures (no posterior yet).
2. srm_invalid: with propensities and a policy that keeps every arm's propensity above 0
   (the caller says so), the Horvitz-Thompson check `bandit_srm` has p < srm_threshold; without
   propensities, the declared-split check when expected weights are given.
3. winner: the highest prob_best is >= prob_best_threshold (0.95) and every arm has at least
   min_sample_per_arm (100) exposures. The caller passes propensities only when they are bounded
   away from 0 (a policy floor): without one, a starved arm's weights 1/p explode and so would
   its interval. Partial pooling is what lets the rule be read every day: with three equal arms
   read every 1,000 exposures up to 20,000, independent posteriors show a false winner at some
   look in about 11% of runs, partial pooling in about 3% (README, "Bandits").
4. keep_running: otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any, ClassVar, Literal

import numpy as np

from policies.bandits.arm_stats import arm_sums, check_metric, normalise_stats
from policies.stats.bandit_inference import (
    IpwEstimate,
    PropensitySums,
    bandit_srm,
    ipw_estimate,
)
from policies.stats.bayesian import DEFAULT_DRAWS, ArmPosterior, posterior_summaries
from policies.stats.corrections import Correction, adjust_p_values, check_correction
from policies.stats.cuped import CovariateSums, CupedResult, cuped_adjust
from policies.stats.effects import Effect, Interval, absolute_difference, mean_effect
from policies.stats.frequentist import (
    TestResult,
    difference_interval,
    lift_interval,
    mean_variances,
    omnibus_test,
    pooled_variance,
    rate_interval,
    score_interval,
    two_proportion_test,
    welch_test,
)
from policies.stats.partial_pooling import hierarchical_posteriors
from policies.stats.planning import (
    GuardrailDesign,
    MetricType,
    SampleSizePlan,
    absolute_mde,
    decision_power,
    plan_binary_sample_size,
    plan_decision_sample_size,
    plan_mean_sample_size,
)
from policies.stats.sequential import always_valid_interval, always_valid_ratio_interval, mixture_boundary, msprt_test
from policies.stats.sequential_planning import DEFAULT_LOOKS, MAX_LOOKS, plan_sequential_sample_size
from policies.stats.srm import DEFAULT_SRM_THRESHOLD, SrmResult, sample_ratio_test
from policies.stats.verdicts import (
    VariantOutcome,
    Verdict,
    ab_test_verdict,
    bandit_verdict,
    srm_verdict,
)
from policies.sufficient import ArmStats, BinaryStats, MeanStats

ExperimentKind = Literal["ab_test", "bandit"]

MIN_EXPOSURES = 30
"""Fewer exposures than this in any arm of an A/B test: `insufficient_data`."""


def _plain(value: Any) -> Any:
    """JSON-able form: dataclasses to dicts, tuples to lists, non-finite floats to None."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    return value


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    """How to analyse one experiment (the YAML `analysis:` block plus policy settings)."""

    metric_type: MetricType = "binary"
    alpha: float = 0.05
    power: float = 0.8
    mde: float = 0.10
    mde_relative: bool = True
    correction: Correction = "holm"
    sequential: bool = False
    srm_threshold: float = DEFAULT_SRM_THRESHOLD
    prob_best_threshold: float = 0.95
    min_sample_per_arm: int = 100
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    negative_values: bool = False
    """The metric's values may be negative (revenue with `allow_negative`, or net of cost): the
    ratio of means may then be negative, so lift intervals are not cut at -100%."""
    baseline: float | None = None
    """Planning baseline (rate or mean); None plans from the control's observed value. In
    sequential mode it also sets the mixture's tau (the MDE in the metric's units)."""
    baseline_sd: float | None = None
    """Planning per-exposure standard deviation of a revenue metric; None plans from the control's."""
    sequential_looks: int = DEFAULT_LOOKS
    """Equally spaced looks the sequential planned n assumes (`policies.stats.sequential_planning`)."""
    guardrails: tuple[GuardrailDesign, ...] = ()
    """Guardrails the ship decision needs shown non-inferior: the plan covers them too
    (`planning.plan_decision_sample_size`, each test at power 1 - beta / (G + 1))."""
    draws: int = DEFAULT_DRAWS

    def __post_init__(self) -> None:
        check_metric(self.metric_type)
        check_correction(self.correction)
        for name in ("alpha", "power", "srm_threshold"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"{name} must be in (0, 1), got {value!r}")
        if not 0 < self.prob_best_threshold <= 1:
            raise ValueError("prob_best_threshold must be in (0, 1]")
        if not math.isfinite(self.mde) or self.mde == 0:
            raise ValueError(f"mde must be a finite non-zero number, got {self.mde!r}")
        if self.min_sample_per_arm < 0 or self.draws < 1:
            raise ValueError("min_sample_per_arm must be >= 0 and draws >= 1")
        if self.prior_alpha <= 0 or self.prior_beta <= 0:
            raise ValueError("prior_alpha and prior_beta must be > 0")
        if self.baseline is not None and not (
            math.isfinite(self.baseline) and self.baseline > 0 and (self.metric_type == "revenue" or self.baseline < 1)
        ):
            raise ValueError(f"baseline must be > 0 (and < 1 for binary), got {self.baseline!r}")
        if self.baseline_sd is not None and not (math.isfinite(self.baseline_sd) and self.baseline_sd > 0):
            raise ValueError(f"baseline_sd must be a finite number > 0, got {self.baseline_sd!r}")
        if not 1 <= self.sequential_looks <= MAX_LOOKS:
            raise ValueError(f"sequential_looks must be in [1, {MAX_LOOKS}], got {self.sequential_looks!r}")


@dataclass(frozen=True, slots=True)
class ArmAnalysis:
    """One row of the report; `rate` is the mean for revenue, the posterior mean for bandits.

    An unbounded lift interval has an infinite bound here and None in `to_dict()`.
    """

    arm: str
    exposures: int
    conversions: int | None
    rate: float | None
    ci_low: float | None
    ci_high: float | None
    lift: float | None
    lift_ci_low: float | None
    lift_ci_high: float | None
    p_value: float | None
    p_value_adjusted: float | None
    prob_beat_control: float | None
    prob_best: float | None
    expected_loss: float | None

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class Comparison:
    """A variant against the control: the test used and the absolute difference with interval."""

    arm: str
    method: str
    statistic: float | None
    difference: float
    difference_ci_low: float
    difference_ci_high: float


@dataclass(frozen=True, slots=True)
class TestInfo:
    """How the p-values were obtained; `correction` is None for bandits (no p-values)."""

    __test__: ClassVar[bool] = False  # not a pytest test class, despite the name

    method: str
    alpha: float
    correction: Correction | None
    sequential: bool


@dataclass(frozen=True, slots=True)
class Planning:
    """Planned exposures per arm and the share of the horizon reached by the smallest arm.

    `planned_n_per_arm` is the fixed-horizon plan; in sequential mode `sequential_n_per_arm` is
    the horizon of the always-valid test read at `AnalysisConfig.sequential_looks` looks, and
    `share_reached` is the share of it (of the fixed plan otherwise).
    """

    planned_n_per_arm: int | None
    share_reached: float | None
    sequential_n_per_arm: int | None = None


@dataclass(frozen=True, slots=True)
class Cuped:
    """The covariate adjustment behind the A/B comparisons (`policies.stats.cuped`)."""

    theta: float
    variance_reduction: float | None


@dataclass(frozen=True, slots=True)
class Analysis:
    kind: ExperimentKind
    metric_type: MetricType
    control: str | None
    arms: tuple[ArmAnalysis, ...]
    comparisons: tuple[Comparison, ...]
    test: TestInfo
    srm: SrmResult | None
    omnibus: TestResult | None
    planning: Planning
    verdict: Verdict
    cuped: Cuped | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (snake_case keys; floats, ints, strings, bools or None)."""
        return _plain(self)


@dataclass(frozen=True, slots=True)
class _VariantResult:
    test: TestResult
    difference: Interval
    lift: Interval


def _observed_mean(stats: ArmStats) -> float | None:
    return stats.rate if isinstance(stats, BinaryStats) else stats.mean


def _observed_interval(stats: ArmStats, alpha: float) -> Interval | None:
    """Wilson / t interval of an arm's mean, None when it is undefined (n = 0, or n < 2)."""
    if stats.n < (1 if isinstance(stats, BinaryStats) else 2):
        return None
    return rate_interval(stats, alpha)


def _planning_std(control: ArmStats, config: AnalysisConfig) -> float | None:
    """The per-exposure sd planned with: None for a rate, else the declared or the observed one."""
    if isinstance(control, BinaryStats):
        return None
    return config.baseline_sd if config.baseline_sd is not None else math.sqrt(control.variance or 0.0)


def _plan(control: ArmStats, arms: int, baseline: float, config: AnalysisConfig) -> SampleSizePlan | None:
    """The sample-size plan, or None when the baseline and MDE admit none (planning refuses a
    rate moved out of (0, 1), a zero shift or a zero standard deviation; the rest of the
    config is checked already). Revenue plans with `config.baseline_sd` when it is given."""
    options = dict(relative=config.mde_relative, alpha=config.alpha, power=config.power, arms=arms,
                   correction=config.correction)
    std = _planning_std(control, config)
    try:
        if config.guardrails:
            decision = plan_decision_sample_size(baseline, config.mde, std=std, guardrails=config.guardrails,
                                                 **options)  # type: ignore[arg-type]
            return replace(decision.primary, power=decision.power, n_per_arm=decision.n_per_arm,
                           total=decision.total)
        if isinstance(control, BinaryStats):
            return plan_binary_sample_size(baseline, config.mde, **options)  # type: ignore[arg-type]
        return plan_mean_sample_size(baseline, std, config.mde, **options)  # type: ignore[arg-type]
    except ValueError:
        return None


def _planning_baseline(control: ArmStats, config: AnalysisConfig) -> float:
    """The declared or frozen `config.baseline`, else the control's observed rate or mean."""
    return config.baseline if config.baseline is not None else float(_observed_mean(control) or 0.0)


def planned_n_per_arm(control: ArmStats, arms: int, config: AnalysisConfig) -> int | None:
    """The units per arm an A/B test of `arms` arms plans for (as `analyze` plans it), from
    `config.baseline` and `baseline_sd` or else the control's observed values; None if none."""
    data = normalise_stats([control], config.metric_type)[0]
    plan = _plan(data, arms, _planning_baseline(data, config), config)
    return None if plan is None else plan.n_per_arm


def _sequential_n(control: ArmStats, arms: int, baseline: float, config: AnalysisConfig) -> int | None:
    """Sequential planned n per arm (None when not sequential or no plan exists), at the power
    each test of the ship decision needs (`planning.decision_power`) as the fixed plan is."""
    if not config.sequential:
        return None
    try:
        return plan_sequential_sample_size(
            baseline, config.mde, std=_planning_std(control, config), relative=config.mde_relative,
            alpha=config.alpha, power=decision_power(config.power, len(config.guardrails)), arms=arms,
            correction=config.correction, looks=config.sequential_looks,
        ).n_per_arm
    except ValueError:
        return None


def sequential_tau(baseline: float, config: AnalysisConfig) -> float:
    """The mSPRT mixture's tau on the difference scale: the declared MDE at the planning
    `baseline` (`policies.stats.sequential`), never estimated from the data once
    `config.baseline` is declared. Lift intervals invert the same mixture (`_compare`)."""
    return abs(absolute_mde(baseline, config.mde, relative=config.mde_relative))


def _compare(treatment: ArmStats, control: ArmStats, baseline: float, config: AnalysisConfig) -> _VariantResult:
    """Test of one variant against the control, and the difference and lift intervals that invert it.

    Fixed horizon: the pooled z-test with score intervals for the difference and the ratio of
    rates; Welch's t-test with its t-interval and Fieller's interval at its t quantile and
    degrees of freedom (`policies.stats.frequentist`). Sequential: the mSPRT of the difference
    (tau = the MDE on the difference scale), with the variance under no effect (the pooled
    binomial variance, as the z-test; Welch's for means), and intervals inverting that mixture:
    the score intervals at the mixture's boundary for rates, the confidence sequence of the
    difference and `always_valid_ratio_interval` for means.
    """
    nonnegative = not config.negative_values
    if not config.sequential:
        if isinstance(treatment, BinaryStats) and isinstance(control, BinaryStats):
            test = two_proportion_test(treatment, control)
        elif isinstance(treatment, MeanStats) and isinstance(control, MeanStats):
            test = welch_test(treatment, control)
        else:
            raise ValueError("both arms must hold the same kind of statistics")
        return _VariantResult(test, difference_interval(treatment, control, config.alpha),
                              lift_interval(treatment, control, config.alpha, nonnegative=nonnegative))
    tau_sq = sequential_tau(baseline, config) ** 2
    diff = absolute_difference(treatment, control).estimate
    if isinstance(treatment, BinaryStats) and isinstance(control, BinaryStats):
        variance = pooled_variance(treatment, control)
        critical = mixture_boundary(variance, tau_sq, config.alpha)
        return _VariantResult(msprt_test(Effect(diff, variance), tau_sq),
                              score_interval(treatment, control, critical, "diff"),
                              score_interval(treatment, control, critical, "ratio"))
    if isinstance(treatment, MeanStats) and isinstance(control, MeanStats):
        v_t, v_c, _ = mean_variances(treatment, control)
        effect = Effect(diff, v_t + v_c)
        means = Effect(treatment.total / treatment.n, v_t), Effect(control.total / control.n, v_c)
        return _VariantResult(msprt_test(effect, tau_sq), always_valid_interval(effect, tau_sq, config.alpha),
                              always_valid_ratio_interval(*means, tau_sq, config.alpha, nonnegative=nonnegative))
    raise ValueError("both arms must hold the same kind of statistics")


def _insufficiency(names: Sequence[str], data: Sequence[ArmStats], control: int) -> str | None:
    """Why an A/B test cannot be tested yet (verdict rule 1), or None."""
    for name, s in zip(names, data, strict=True):
        if s.n < MIN_EXPOSURES:
            return f"arm {name!r} has {s.n} exposures; at least {MIN_EXPOSURES} per arm are needed"
    if not _observed_mean(data[control]):
        what = "no conversions" if isinstance(data[control], BinaryStats) else "a zero total"
        return f"control {names[control]!r} has {what} yet, so no lift can be stated"
    return None


def _posteriors(
    data: Sequence[ArmStats], control: int | None, config: AnalysisConfig, rng: np.random.Generator
) -> tuple[ArmPosterior, ...] | None:
    """Posterior summaries, or None when a revenue arm has n < 2 (no normal approximation)."""
    if any(isinstance(s, MeanStats) and s.n < 2 for s in data):
        return None
    return posterior_summaries(
        data,
        rng=rng,
        control_index=control,
        alpha=config.alpha,
        prior_alpha=config.prior_alpha,
        prior_beta=config.prior_beta,
        draws=config.draws,
    )


def _row(
    name: str,
    original: ArmStats,
    rate: float | None,
    interval: Interval | None,
    lift: Interval | None,
    p_value: float | None,
    p_adjusted: float | None,
    posterior: ArmPosterior | None,
) -> ArmAnalysis:
    return ArmAnalysis(
        arm=name,
        exposures=original.n,
        conversions=original.successes if isinstance(original, BinaryStats) else None,
        rate=rate,
        ci_low=None if interval is None else interval.low,
        ci_high=None if interval is None else interval.high,
        lift=None if lift is None else lift.estimate,
        lift_ci_low=None if lift is None else lift.low,
        lift_ci_high=None if lift is None else lift.high,
        p_value=p_value,
        p_value_adjusted=p_adjusted,
        prob_beat_control=None if posterior is None else posterior.prob_beat_control,
        prob_best=None if posterior is None else posterior.prob_best,
        expected_loss=None if posterior is None else posterior.expected_loss,
    )


def _analyze_ab_test(
    names: Sequence[str],
    stats: Sequence[ArmStats],
    data: Sequence[ArmStats],
    control: int,
    srm: SrmResult | None,
    config: AnalysisConfig,
    rng: np.random.Generator,
) -> Analysis:
    problem = _insufficiency(names, data, control)
    results: dict[int, _VariantResult] = {}
    plan: SampleSizePlan | None = None
    sequential_n: int | None = None
    omnibus: TestResult | None = None
    if problem is None:
        baseline = _planning_baseline(data[control], config)
        plan = _plan(data[control], len(data), baseline, config)
        sequential_n = _sequential_n(data[control], len(data), baseline, config)
        results = {i: _compare(s, data[control], baseline, config) for i, s in enumerate(data) if i != control}
        omnibus = omnibus_test(data)
    raw = [r.test.p_value for r in results.values()]
    adjusted = dict(zip(results, (float(p) for p in adjust_p_values(raw, config.correction)), strict=True))
    posteriors = _posteriors(data, control, config, rng)
    rows = tuple(
        _row(
            names[i],
            stats[i],
            _observed_mean(s),
            _observed_interval(s, config.alpha),
            results[i].lift if i in results else None,
            results[i].test.p_value if i in results else None,
            adjusted.get(i),
            None if posteriors is None else posteriors[i],
        )
        for i, s in enumerate(data)
    )
    comparisons = tuple(
        Comparison(
            names[i],
            r.test.method,
            r.test.statistic,
            r.difference.estimate,
            r.difference.low,
            r.difference.high,
        )
        for i, r in results.items()
    )
    nominal = "msprt" if config.sequential else ("z_test" if config.metric_type == "binary" else "welch_t_test")
    method = "+".join(sorted({c.method for c in comparisons})) or nominal
    smallest = min(s.n for s in data)
    fixed_n = None if plan is None else plan.n_per_arm
    horizon = sequential_n if config.sequential else fixed_n
    planning = Planning(fixed_n, None if horizon is None else smallest / horizon, sequential_n)
    verdict = srm_verdict(srm, config.srm_threshold)
    if verdict is None and problem is not None:
        verdict = Verdict("insufficient_data", None, problem)
    elif verdict is None:
        outcomes = [
            VariantOutcome(
                names[i],
                r.difference.estimate,
                r.lift.estimate,
                adjusted[i],
            )
            for i, r in results.items()
        ]
        verdict = ab_test_verdict(
            names[control],
            outcomes,
            smallest_n=smallest,
            planned_n_per_arm=horizon,
            alpha=config.alpha,
            correction=config.correction,
            sequential=config.sequential,
        )
    return Analysis(
        "ab_test",
        config.metric_type,
        names[control],
        rows,
        comparisons,
        TestInfo(method, config.alpha, config.correction, config.sequential),
        srm,
        omnibus,
        planning,
        verdict,
    )


def _bandit_estimates(
    data: Sequence[ArmStats], weighted: Sequence[PropensitySums] | None
) -> list[IpwEstimate] | None:
    """Corrected estimates when every unit of every arm has a logged propensity, else None
    (the arms are then read on their pooled counts)."""
    if weighted is None or any(w.units != s.n or w.units == 0 for w, s in zip(weighted, data, strict=True)):
        return None
    return [e for w in weighted if (e := ipw_estimate(w)) is not None]


def _arm_moments(data: Sequence[ArmStats], corrected: Sequence[IpwEstimate] | None,
                 config: AnalysisConfig) -> tuple[list[float], list[float]]:
    """Each arm's estimate and the variance of that estimate, for partial pooling: the mean and
    variance of its Beta posterior for a binary metric (from its counts, or from the effective
    counts of its corrected estimate), else its mean and the variance of that mean."""
    if config.metric_type == "binary":
        if corrected is None:
            trials, successes, _ = arm_sums(data, "binary")
        else:
            trials = np.array([e.effective_n for e in corrected])
            successes = np.clip([e.mean for e in corrected], 0.0, 1.0) * trials
        a, b = config.prior_alpha + successes, config.prior_beta + trials - successes
        return list(a / (a + b)), list(a * b / ((a + b) ** 2 * (a + b + 1)))
    if corrected is None:
        moments = [mean_effect(s) for s in data]
        return [m.estimate for m in moments], [m.variance for m in moments]
    return [e.mean for e in corrected], [e.variance for e in corrected]


def _analyze_bandit(
    names: Sequence[str],
    stats: Sequence[ArmStats],
    data: Sequence[ArmStats],
    control: int | None,
    srm: SrmResult | None,
    weighted: Sequence[PropensitySums] | None,
    propensity_srm: bool,
    config: AnalysisConfig,
    rng: np.random.Generator,
) -> Analysis:
    corrected = _bandit_estimates(data, weighted)
    if corrected is not None and weighted is not None and propensity_srm:
        srm = bandit_srm(weighted, threshold=config.srm_threshold)
    binary = config.metric_type == "binary"
    if any(isinstance(s, MeanStats) and s.n < 2 for s in data):
        rows = tuple(
            _row(n, o, _observed_mean(s), None, None, None, None, None)
            for n, o, s in zip(names, stats, data, strict=True)
        )
        verdict = Verdict("insufficient_data", None, "every arm needs at least 2 exposures for a revenue posterior")
        posteriors = None
    else:
        means, variances = _arm_moments(data, corrected, config)
        baseline = config.baseline if config.baseline is not None else float(np.mean(means))
        posteriors = hierarchical_posteriors(
            means, variances, scale=abs(absolute_mde(baseline, config.mde, relative=config.mde_relative)), rng=rng,
            control_index=control, alpha=config.alpha, draws=config.draws,
            bounds=(0.0, 1.0) if binary else (-math.inf if config.negative_values else 0.0, math.inf))
        rows = tuple(
            _row(n, o, p.mean, Interval(p.mean, p.ci_low, p.ci_high), p.lift, None, None, p)
            for n, o, p in zip(names, stats, posteriors, strict=True)
        )
        verdict = srm_verdict(srm, config.srm_threshold) or bandit_verdict(
            names,
            [s.n for s in data],
            [p.prob_best for p in posteriors],
            prob_best_threshold=config.prob_best_threshold,
            min_sample_per_arm=config.min_sample_per_arm,
        )
    method = "partial_pooling" if corrected is None else "ipw_partial_pooling"
    return Analysis(
        "bandit",
        config.metric_type,
        None if control is None else names[control],
        rows,
        (),
        TestInfo(method, config.alpha, None, False),
        srm,
        None,
        Planning(None, None),
        verdict,
    )


def analyze(
    arms: Sequence[str],
    stats: Sequence[BinaryStats | MeanStats],
    *,
    kind: ExperimentKind,
    control: str | None,
    expected_weights: Sequence[float] | None,
    config: AnalysisConfig,
    rng: np.random.Generator,
    covariates: Sequence[CovariateSums] | None = None,
    weighted: Sequence[PropensitySums] | None = None,
    propensity_srm: bool = False,
) -> Analysis:
    """Analyse one experiment from per-arm sufficient statistics (rules in the module doc).

    `stats[i]` belongs to `arms[i]`. A/B tests need a `control`; for bandits it is optional
    and only adds `prob_beat_control` and the lift. `expected_weights` (the declared split)
    enables the sample-ratio-mismatch check; pass None when the split is adaptive.
    `weighted` (bandits): each arm's propensity sums (`policies.stats.bandit_inference`, from
    the store's counters or `propensity_sums` over simulated units); when every unit has a
    propensity the arms are read on the corrected estimates; with `propensity_srm` they are also
    checked for SRM (`bandit_srm`), which is only valid when every unit could get every arm
    with a propensity bounded away from 0 (a policy floor, no eligibility rule, no arm taken
    out): the caller knows the policy, this function does not.
    For revenue, BinaryStats are read as 0/1 values and keep their conversion count.
    `covariates` (A/B tests only; one per arm) turns on CUPED: the arms' means and variances
    are the adjusted ones (`policies.stats.cuped`), so a binary metric is then compared as a
    mean of 0/1 values (Welch's t-test); rows keep the observed exposures and conversions.
    """
    names = list(arms)
    if len(names) < 2 or len(names) != len(stats) or len(set(names)) != len(names):
        raise ValueError("need at least two uniquely named arms, one stats entry per arm")
    if kind not in ("ab_test", "bandit"):
        raise ValueError(f"kind must be 'ab_test' or 'bandit', got {kind!r}")
    if control is not None and control not in names:
        raise ValueError(f"control {control!r} is not one of the arms")
    if expected_weights is not None and len(expected_weights) != len(names):
        raise ValueError("expected_weights needs one weight per arm")
    data = normalise_stats(stats, config.metric_type)
    control_index = None if control is None else names.index(control)
    srm = (
        None
        if expected_weights is None
        else sample_ratio_test([s.n for s in data], expected_weights, threshold=config.srm_threshold)
    )
    if kind == "bandit":
        if covariates is not None:
            raise ValueError("covariates adjust A/B comparisons; a bandit is read on its posteriors")
        return _analyze_bandit(names, stats, data, control_index, srm, weighted, propensity_srm, config, rng)
    if control_index is None:
        raise ValueError("an A/B test needs a control arm")
    if covariates is None:
        return _analyze_ab_test(names, stats, data, control_index, srm, config, rng)
    cuped: CupedResult = cuped_adjust(data, covariates)
    analysis = _analyze_ab_test(names, stats, cuped.adjusted, control_index, srm, config, rng)
    return replace(analysis, cuped=Cuped(cuped.theta, cuped.variance_reduction))
