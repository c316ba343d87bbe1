"""Reports: the analysis of one experiment as a dict (the JSON contract); `engine.report_format`
renders it as tables or markdown."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np

from engine.api import Engine
from engine.breakdown import breakdown_section
from engine.events import utcnow
from engine.guardrails import guardrail_designs, guardrail_results
from engine.measures import MetricRole
from engine.spec import EpsilonGreedyPolicy, ExperimentSpec, Kind, Metric, ThompsonPolicy
from engine.store import FrozenPlan, KeptVerdict, StoredExperiment, Tally
from policies.stats.analysis import Analysis, AnalysisConfig, analyze, planned_n_per_arm
from policies.stats.bandit_inference import PropensitySums
from policies.stats.cuped import CovariateSums
from policies.stats.freezing import awaiting_plan, disagrees, freeze_pending, is_final, observed_baseline
from policies.stats.guardrails import GuardrailResult, bandit_guardrail_verdict, guardrail_verdict
from policies.stats.planning import GuardrailDesign
from policies.stats.verdicts import VariantOutcome, Verdict
from policies.sufficient import ArmStats


@dataclass(frozen=True)
class Basis:
    """Where the primary metric's plan comes from: a declared or frozen baseline (and revenue
    standard deviation), or none yet (`pending` says why, for an A/B test before its freeze)."""

    source: Literal["declared", "frozen"] | None = None
    baseline: float | None = None
    baseline_sd: float | None = None
    frozen_at: datetime | None = None
    pending: str | None = None


def analysis_config(spec: ExperimentSpec, metric: Metric | None = None,
                    guardrails: tuple[GuardrailDesign, ...] = (), basis: Basis = Basis()) -> AnalysisConfig:
    """The analysis settings of `metric` (the primary if None); `basis` is the primary's plan."""
    a = spec.analysis
    prior = getattr(spec.policy, "prior", None)
    measured = metric or spec.primary
    return AnalysisConfig(
        metric_type=measured.type.value, negative_values=measured.net or measured.allow_negative,
        alpha=a.alpha, power=a.power, mde=a.mde,
        mde_relative=a.mde_relative, correction=a.correction.value, sequential=a.sequential,
        prob_best_threshold=a.prob_best_threshold, min_sample_per_arm=a.min_sample_per_arm,
        prior_alpha=prior.alpha if prior else 1.0, prior_beta=prior.beta if prior else 1.0, guardrails=guardrails,
        baseline=basis.baseline, baseline_sd=basis.baseline_sd,
    )


@dataclass(frozen=True)
class Report:
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, allow_nan=False)


def build_report(engine: Engine, key: str, seed: int = 0, by: str | None = None) -> Report:
    """Analyse `key` from its stored per-unit sums (O(arms x metrics), whatever the number of events).
    With `by`, add the exploratory `breakdown` of the primary metric by that attribute (it
    reads every unit once; `engine.breakdown`), after the verdict and apart from it."""
    stored, tally = engine.tally(key)
    spec = stored.spec
    served = engine.store.arm_aggregates(spec.key, spec.traffic.phase, spec.arm_keys)
    costs = engine.costs(spec)
    weights = engine.weights(key)
    rng = np.random.default_rng(seed)
    designs = guardrail_designs(spec, tally, costs)
    basis = planning_basis(engine, stored, tally, costs, designs)
    excluded = {x.arm: x.reason for x in engine.store.exclusions(spec.key, spec.traffic.phase)}
    positivity = propensity_floor(spec) and not excluded
    sections = [_metric_section(spec, m, tally, costs, rng, *((designs, basis) if m is spec.primary else ()),
                                positivity=positivity)
                for m in spec.measures]
    primary = sections[0]
    _show_plan(primary, basis)
    guards = guardrail_results(spec, tally, costs)
    for section in sections:
        if section["role"] == MetricRole.GUARDRAIL.value:
            _attach_guardrails(section, [g for g in guards if g.metric == section["name"]])
    if excluded:
        weighted = tally.propensity_sums(spec.primary) if propensity_floor(spec) else None
        _judge_arms_in_traffic(spec, primary, tally.stats(spec.primary, costs), weighted, excluded, rng)
    channels = {a.key: a.channel.value for a in spec.arms}
    value_metric = next((m for m in spec.measures if m.revenue), None)
    for i, row in enumerate(primary["arms"]):
        row["channel"] = channels[row["arm"]]
        row["units"] = tally.units[i].units
        row["decisions"] = served[i].exposures
        row["weight"] = float(weights[i])
        row["excluded"] = excluded.get(row["arm"])
        row.update(_economics(costs[i], tally, i, value_metric))
    config = analysis_config(spec)
    data = {
        "experiment": spec.key, "name": spec.name, "kind": spec.kind.value, "policy": spec.policy.name,
        "status": spec.status.value, "version": stored.version, "phase": spec.traffic.phase,
        "analysis_unit": spec.analysis_unit.value, "units_in_several_arms": tally.units_in_several_arms,
        "metric": {"name": spec.primary.name, "type": spec.primary.type.value},
        "control": spec.control, "prior": {"alpha": config.prior_alpha, "beta": config.prior_beta},
        **{k: v for k, v in primary.items() if k not in _METRIC_FACTS},
        "metrics": [{k: v for k, v in section.items() if k in _METRIC_KEYS} for section in sections],
    }
    _keep_verdict(engine, stored, tally, data, _ship_decision(spec, primary, guards, excluded))
    if by is not None:
        data["breakdown"] = breakdown_section(engine.store, spec, by, costs)
    return Report(data)


def plan_basis(spec: ExperimentSpec, control: ArmStats | None, units: Sequence[int], frozen: Basis | None) -> Basis:
    """The primary metric's plan from what a report knows: declared (it always wins), else the
    phase's `frozen` one, else one to freeze now (source "frozen", no time yet) if every arm has
    `min_sample_per_arm` units and the `control` admits a plan, else none yet, saying why.
    `crosspromo simulate --runs` freezes with it at its looks as the report does at its reads."""
    declared = spec.declared_baseline
    if declared is not None:
        return Basis("declared", *declared)
    if spec.kind is not Kind.AB_TEST:
        return Basis()
    if frozen is not None:
        return frozen
    assert control is not None
    pending = freeze_pending(spec.arm_keys, units, spec.analysis.min_sample_per_arm)
    observed = observed_baseline(control)
    if pending is not None or observed is None:
        return Basis(pending=pending or f"no plan yet: the control's {spec.primary.name} admits none so far "
                                        f"(no conversions, or no spread); declare analysis.baseline to plan now")
    return Basis("frozen", *observed)


def planning_basis(engine: Engine, stored: StoredExperiment, tally: Tally, costs: Sequence[float],
                   designs: tuple[GuardrailDesign, ...]) -> Basis:
    """`plan_basis` on the stored tally; a plan frozen now is stored (the first replica to store it
    wins; every one plans from what is stored)."""
    spec = stored.spec
    if spec.declared_baseline is not None or spec.kind is not Kind.AB_TEST:
        return plan_basis(spec, None, (), None)
    row = engine.store.frozen_plan(spec.key, spec.traffic.phase, spec.primary.name)
    units = [u.units for u in tally.units]
    control = tally.stats(spec.primary, costs)[spec.arm_keys.index(spec.control)]
    kept = None if row is None else Basis("frozen", row.baseline, row.baseline_sd, row.frozen_at)
    basis = plan_basis(spec, control, units, kept)
    if row is None and basis.source == "frozen":
        config = analysis_config(spec, spec.primary, designs, basis)
        row = engine.store.freeze_plan(FrozenPlan(
            spec.key, spec.traffic.phase, spec.primary.name, basis.baseline, basis.baseline_sd,
            planned_n_per_arm(control, len(units), config), stored.version,
            dict(zip(spec.arm_keys, units, strict=True)), utcnow()))
        return Basis("frozen", row.baseline, row.baseline_sd, row.frozen_at)
    return basis


def _show_plan(primary: dict[str, Any], basis: Basis) -> None:
    """`planning` says where the plan comes from; before an A/B test's freeze there is none,
    and no verdict is final yet (`policies.stats.freezing.awaiting_plan`)."""
    planning = primary["planning"]
    if basis.pending is not None or basis.source is None:
        planning = {k: None for k in planning}
    if basis.pending is not None:
        primary["verdict"] = asdict(awaiting_plan(Verdict(**primary["verdict"]), basis.pending))
    primary["planning"] = {**planning, "source": basis.source, "baseline": basis.baseline,
                           "baseline_sd": basis.baseline_sd, "frozen_at": _iso(basis.frozen_at)}


def _keep_verdict(engine: Engine, stored: StoredExperiment, tally: Tally, data: dict[str, Any],
                  current: dict[str, Any]) -> None:
    """`verdict` is the phase's kept verdict once one was final (kept now if this one is), with
    the counts it was made on; `current_verdict` is this data's own when it disagrees."""
    spec = stored.spec
    now = Verdict(current["status"], current["winner"], current["reason"])
    kept = engine.store.kept_verdict(spec.key, spec.traffic.phase)
    if kept is None and is_final(spec.kind.value, now):
        counts = [{"arm": arm, "units": u.units, "conversions": min(m.conversions, u.units), "total": m.total}
                  for arm, u, m in zip(spec.arm_keys, tally.units, tally.metric(spec.primary.name), strict=True)]
        kept = engine.store.keep_verdict(KeptVerdict(spec.key, spec.traffic.phase, stored.version, spec.primary.name,
                                                     now.status, now.winner, now.reason, counts, utcnow()))
    if kept is None:
        data["verdict"] = {**current, "kept_at": None, "version": None, "counts": None}
        data["current_verdict"] = None
        return
    data["verdict"] = {"status": kept.status, "winner": kept.winner, "reason": kept.reason,
                       "kept_at": _iso(kept.kept_at), "version": kept.version, "counts": kept.counts}
    data["current_verdict"] = current if disagrees(Verdict(kept.status, kept.winner, kept.reason), now) else None


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


def _ship_decision(spec: ExperimentSpec, primary: dict[str, Any], guards: list[GuardrailResult],
                   excluded: dict[str, str]) -> dict[str, Any]:
    """The verdict: the primary metric's, with every guardrail of the winner required. A bandit
    is judged on the arms still in traffic; those taken out are named with why."""
    verdict = Verdict(**primary["verdict"])
    if not guards:
        return primary["verdict"]
    if spec.kind is Kind.BANDIT:
        judged = bandit_guardrail_verdict(verdict, [g for g in guards if g.arm not in excluded])
        out = "; ".join(f"{arm!r} ({reason})" for arm, reason in excluded.items())
        return asdict(judged) | ({"reason": f"{judged.reason}; taken out of traffic: {out}"} if excluded else {})
    p_adjusted = {a["arm"]: (a["p_value_adjusted"], a["lift"]) for a in primary["arms"]}
    variants = [VariantOutcome(c["arm"], c["difference"], p_adjusted[c["arm"]][1], p_adjusted[c["arm"]][0])
                for c in primary["comparisons"] if p_adjusted[c["arm"]][0] is not None]
    return asdict(guardrail_verdict(verdict, variants, guards, alpha=spec.analysis.alpha))


def _attach_guardrails(section: dict[str, Any], guards: list[GuardrailResult]) -> None:
    """Each variant's non-inferiority result beside its row, and the metric's own verdict."""
    by_arm = {g.arm: g for g in guards}
    for row in section["arms"]:
        g = by_arm.get(row["arm"])
        row["guardrail"] = None if g is None else {
            "status": g.status, "change": g.relative_difference, "ci_low": g.ci_low, "ci_high": g.ci_high,
            "p_value": g.p_value, "method": g.method, "reason": g.reason}
    failed = [g for g in guards if g.failed]
    open_ = [g for g in guards if not g.non_inferior and not g.failed]
    status = "failed" if failed else "open" if open_ else "holds"
    reason = "; ".join(f"{g.arm!r}: {g.reason}" for g in (failed or open_ or guards))
    section["verdict"] = {"status": status, "winner": None, "reason": reason}
    section["test"] = {**section["test"], "method": guards[0].method if guards else None,
                       "correction": None}


# What a metric declares; with its analysis (`arms`, `test`, `verdict`) an entry of `metrics`.
_METRIC_FACTS = ("name", "role", "type", "window", "direction", "margin", "net")
_METRIC_KEYS = (*_METRIC_FACTS, "arms", "test", "verdict", "cuped")


def _judge_arms_in_traffic(spec: ExperimentSpec, primary: dict[str, Any], stats: Sequence[ArmStats],
                           weighted: Sequence[PropensitySums] | None, excluded: dict[str, str],
                           rng: np.random.Generator) -> None:
    """A bandit that took arms out of traffic can only ship one of the others: `prob_best`,
    `expected_loss` and the verdict are those of the arms still in traffic (null for the others)."""
    keep = [i for i, arm in enumerate(spec.arm_keys) if arm not in excluded]
    if len(keep) < 2:
        return
    arms = [spec.arm_keys[i] for i in keep]
    within = analyze(arms, [stats[i] for i in keep], kind=spec.kind.value,
                     control=spec.control if spec.control in arms else None, expected_weights=None,
                     config=analysis_config(spec), rng=rng,
                     weighted=None if weighted is None else [weighted[i] for i in keep]).to_dict()
    judged = {row["arm"]: row for row in within["arms"]}
    for row in primary["arms"]:
        for key in ("prob_best", "expected_loss"):
            row[key] = judged[row["arm"]][key] if row["arm"] in judged else None
    primary["verdict"] = within["verdict"]


def propensity_floor(spec: ExperimentSpec) -> bool:
    """Whether every unit of a bandit can get every arm with a propensity bounded away from 0: a
    policy floor (Thompson's `min_weight`, a constant epsilon) and no eligibility rule that masks
    arms. Inverse-propensity estimates and the Horvitz-Thompson SRM check need it
    (`policies.stats.bandit_inference`); without it a starved arm's weights 1/p explode and its
    interval with them, so such a bandit is read on pooled counts."""
    policy, rule = spec.policy, spec.eligibility
    if spec.kind is not Kind.BANDIT or rule.channels_from is not None or rule.exclude_arms_from is not None:
        return False
    if isinstance(policy, ThompsonPolicy):
        return policy.min_weight > 0
    if isinstance(policy, EpsilonGreedyPolicy):
        return policy.epsilon > 0 and policy.decay == 0
    return False


def _metric_section(spec: ExperimentSpec, metric: Metric, tally: Tally, costs: Sequence[float],
                    rng: np.random.Generator, guardrails: tuple[GuardrailDesign, ...] = (),
                    basis: Basis = Basis(), *, positivity: bool = False) -> dict[str, Any]:
    """One metric analysed on its own: the per-arm fields, its test and its verdict. With a
    covariate, primary and secondary metrics are CUPED-adjusted; guardrails keep their own test.
    A bandit with a propensity floor (`propensity_floor`) is read through its propensities
    (`Tally.propensity_sums`), and checked for SRM with them when `positivity` (no arm taken out)."""
    covariate = None if metric.role is MetricRole.GUARDRAIL else spec.analysis.covariate
    analysis = analyze_metric(spec, tally.stats(metric, costs), analysis_config(spec, metric, guardrails, basis), rng,
                              covariates=None if covariate is None else tally.covariates(metric, costs),
                              weighted=tally.propensity_sums(metric) if propensity_floor(spec) else None,
                              propensity_srm=positivity).to_dict()
    if analysis["cuped"] is not None:
        analysis["cuped"] = {"covariate": covariate, **analysis["cuped"],
                             "units_with_covariate": sum(u.covariate_units for u in tally.units)}
    for row, u, m in zip(analysis["arms"], tally.units, tally.metric(metric.name), strict=True):
        row["exposures"] = u.units
        row["conversions"] = min(m.conversions, u.units)
    return {"name": metric.name, "role": metric.role.value, "type": metric.type.value, "window": metric.window,
            "direction": None if metric.direction is None else metric.direction.value, "margin": metric.margin,
            "net": metric.net, **analysis}


def analyze_metric(spec: ExperimentSpec, stats: Sequence[ArmStats], config: AnalysisConfig,
                   rng: np.random.Generator, covariates: Sequence[CovariateSums] | None = None,
                   weighted: Sequence[PropensitySums] | None = None, propensity_srm: bool = False) -> Analysis:
    """The report's analysis of one metric's per-arm stats; `crosspromo simulate --runs` reads its
    verdict at every look (engine.simulation), so what the report feeds `analyze` is fed there too:
    CUPED `covariates`, a bandit's propensity sums (`weighted`) and whether they may be checked
    for SRM (`propensity_srm`, see `propensity_floor`)."""
    return analyze(spec.arm_keys, stats, kind=spec.kind.value, control=spec.control,
                   expected_weights=spec.weights if spec.kind is Kind.AB_TEST else None, config=config, rng=rng,
                   covariates=covariates, weighted=weighted, propensity_srm=propensity_srm)


def _economics(cost: float, tally: Tally, arm: int, value_metric: Metric | None) -> dict[str, float | None]:
    """An arm's cost per decision, what its decisions cost, and (with a revenue metric) the
    value net of cost per unit and the return on that cost."""
    decisions = tally.units[arm].decisions
    spent = cost * decisions
    out: dict[str, float | None] = {"cost": cost, "total_cost": spent, "net_value_per_unit": None, "roi": None}
    if value_metric is not None:
        value = tally.metric(value_metric.name)[arm].total
        units = tally.units[arm].units
        out["net_value_per_unit"] = (value - spent) / units if units else None
        out["roi"] = (value - spent) / spent if spent > 0 else None
    return out
