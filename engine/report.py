"""Reports: the analysis of one experiment as a dict (the JSON contract), a table or markdown."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from engine.api import Engine
from engine.guardrails import guardrail_designs, guardrail_results
from engine.measures import MetricRole
from engine.spec import EpsilonGreedyPolicy, ExperimentSpec, Kind, Metric, ThompsonPolicy
from engine.store import Tally
from policies.stats.analysis import AnalysisConfig, analyze
from policies.stats.bandit_inference import PropensitySums
from policies.stats.guardrails import GuardrailResult, bandit_guardrail_verdict, guardrail_verdict
from policies.stats.planning import GuardrailDesign
from policies.stats.verdicts import VariantOutcome, Verdict
from policies.sufficient import ArmStats


def analysis_config(spec: ExperimentSpec, metric: Metric | None = None,
                    guardrails: tuple[GuardrailDesign, ...] = ()) -> AnalysisConfig:
    a = spec.analysis
    prior = getattr(spec.policy, "prior", None)
    return AnalysisConfig(
        metric_type=(metric or spec.primary).type.value, alpha=a.alpha, power=a.power, mde=a.mde,
        mde_relative=a.mde_relative, correction=a.correction.value, sequential=a.sequential,
        prob_best_threshold=a.prob_best_threshold, min_sample_per_arm=a.min_sample_per_arm,
        prior_alpha=prior.alpha if prior else 1.0, prior_beta=prior.beta if prior else 1.0, guardrails=guardrails,
    )


@dataclass(frozen=True)
class Report:
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, allow_nan=False)


def build_report(engine: Engine, key: str, seed: int = 0) -> Report:
    """Analyse `key` from its stored per-unit sums (O(arms x metrics), whatever the number of events)."""
    stored, tally = engine.tally(key)
    spec = stored.spec
    served = engine.store.arm_aggregates(spec.key, spec.traffic.phase, spec.arm_keys)
    costs = engine.costs(spec)
    weights = engine.weights(key)
    rng = np.random.default_rng(seed)
    designs = guardrail_designs(spec, tally, costs)
    excluded = {x.arm: x.reason for x in engine.store.exclusions(spec.key, spec.traffic.phase)}
    positivity = propensity_floor(spec) and not excluded
    sections = [_metric_section(spec, m, tally, costs, rng, designs if m is spec.primary else (), positivity)
                for m in spec.measures]
    primary = sections[0]
    guards = guardrail_results(spec, tally, costs)
    for section in sections:
        if section["role"] == MetricRole.GUARDRAIL.value:
            _attach_guardrails(section, [g for g in guards if g.metric == section["name"]])
    if excluded:
        _judge_arms_in_traffic(spec, primary, tally.stats(spec.primary, costs), tally.propensity_sums(spec.primary),
                               excluded, rng)
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
    data["verdict"] = _ship_decision(spec, primary, guards, excluded)
    return Report(data)


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
_METRIC_KEYS = (*_METRIC_FACTS, "arms", "test", "verdict")


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
    """Whether every unit of a bandit can get every arm with a propensity bounded away from 0, as
    the Horvitz-Thompson SRM check needs (`policies.stats.bandit_inference`): a policy floor
    (Thompson's `min_weight`, a constant epsilon) and no eligibility rule that masks arms."""
    policy, rule = spec.policy, spec.eligibility
    if spec.kind is not Kind.BANDIT or rule.channels_from is not None or rule.exclude_arms_from is not None:
        return False
    if isinstance(policy, ThompsonPolicy):
        return policy.min_weight > 0
    if isinstance(policy, EpsilonGreedyPolicy):
        return policy.epsilon > 0 and policy.decay == 0
    return False


def _metric_section(spec: ExperimentSpec, metric: Metric, tally: Tally, costs: Sequence[float],
                    rng: np.random.Generator, guardrails: tuple[GuardrailDesign, ...],
                    positivity: bool = False) -> dict[str, Any]:
    """One metric analysed on its own: the per-arm fields, its test and its verdict."""
    analysis = analyze(
        spec.arm_keys, tally.stats(metric, costs), kind=spec.kind.value, control=spec.control,
        expected_weights=spec.weights if spec.kind is Kind.AB_TEST else None,
        config=analysis_config(spec, metric, guardrails), rng=rng,
        weighted=tally.propensity_sums(metric) if spec.kind is Kind.BANDIT else None, propensity_srm=positivity,
    ).to_dict()
    for row, u, m in zip(analysis["arms"], tally.units, tally.metric(metric.name), strict=True):
        row["exposures"] = u.units
        row["conversions"] = min(m.conversions, u.units)
    return {"name": metric.name, "role": metric.role.value, "type": metric.type.value, "window": metric.window,
            "direction": None if metric.direction is None else metric.direction.value, "margin": metric.margin,
            "net": metric.net, **analysis}


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


def _fmt(key: str, value: Any, revenue: bool) -> str:
    """One report cell: rates and shares as percentages (revenue per unit as a number)."""
    if value is None:
        return "–"
    if key in ("exposures", "conversions", "decisions"):
        return f"{value:,}"
    if key in ("rate", "ci_low", "ci_high"):
        return f"{value:,.3f}" if revenue else f"{value:.2%}"
    if key in ("lift", "change", "change_ci_low", "change_ci_high", "roi"):
        return f"{value:+.1%}"
    if key in ("prob_best", "weight"):
        return f"{value:.1%}"
    if key in ("p_value_adjusted", "p_value"):
        return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"
    if key in ("cost", "net_value_per_unit"):
        return f"{value:,.3f}"
    return str(value)


Columns = tuple[tuple[str, str], ...]

_PRIMARY: Columns = (
    ("arm", "arm"), ("channel", "channel"), ("exposures", "units" ), ("decisions", "decisions"),
    ("conversions", "conv."), ("rate", "rate"), ("ci_low", "ci low"), ("ci_high", "ci high"), ("lift", "lift"),
    ("p_value_adjusted", "p adj."), ("prob_best", "P(best)"), ("weight", "weight"), ("cost", "cost"),
    ("net_value_per_unit", "net/unit"),
)
_SECONDARY: Columns = (
    ("arm", "arm"), ("exposures", "units"), ("conversions", "conv."), ("rate", "rate"), ("ci_low", "ci low"),
    ("ci_high", "ci high"), ("lift", "lift"), ("p_value_adjusted", "p adj."), ("prob_best", "P(best)"),
)
_GUARDRAIL: Columns = (
    ("arm", "arm"), ("exposures", "units"), ("conversions", "conv."), ("rate", "rate"), ("change", "change"),
    ("change_ci_low", "ci low"), ("change_ci_high", "ci high"), ("p_value", "p (non-inf.)"), ("status", "guardrail"),
)


def _metric_title(m: dict[str, Any]) -> str:
    window = f", window {m['window']}" if m.get("window") else ""
    if m["role"] == "guardrail":
        harm = "rise" if m["direction"] == "decrease" else "fall"
        return f"GUARDRAIL {m['name']} ({m['type']}{window}): must not {harm} by more than {m['margin']:.0%}"
    return f"{m['role']} metric {m['name']} ({m['type']}{'' if not m.get('net') else ', net of cost'}{window})"


def _guardrail_cells(arm: dict[str, Any], control: str) -> dict[str, Any]:
    g = arm.get("guardrail") or {}
    status = "control" if arm["arm"] == control else str(g.get("status", "–")).replace("_", " ")
    return {**arm, "change": g.get("change"), "change_ci_low": g.get("ci_low"), "change_ci_high": g.get("ci_high"),
            "p_value": g.get("p_value"), "status": "FAILED" if status == "failed" else status}


def blocks(data: dict[str, Any]) -> list[tuple[str, Columns, list[list[str]]]]:
    """The report as titled tables: the primary metric's arms, then one table per other metric."""
    revenue = data["metric"]["type"] == "revenue"
    out = [(_metric_title(data["metrics"][0]), _PRIMARY,
            [[_fmt(k, arm.get(k), revenue) for k, _ in _PRIMARY] for arm in data["arms"]])]
    for m in data["metrics"][1:]:
        guardrail = m["role"] == "guardrail"
        columns = _GUARDRAIL if guardrail else _SECONDARY
        rows = [_guardrail_cells(a, data["control"]) if guardrail else a for a in m["arms"]]
        out.append((_metric_title(m), columns,
                    [[_fmt(k, row.get(k), m["type"] == "revenue") for k, _ in columns] for row in rows]))
    return out


def verdict_line(data: dict[str, Any]) -> str:
    v = data["verdict"]
    winner = f" -> {v['winner']}" if v.get("winner") else ""
    return f"{data['experiment']}: {v['status']}{winner} ({v['reason']})"


def _heading(d: dict[str, Any]) -> str:
    several = f", {d['units_in_several_arms']:,} units seen in several arms" if d["units_in_several_arms"] else ""
    return f"{d['experiment']} — {d['kind']} / {d['policy']} / {d['status']} / per {d['analysis_unit']}{several}"


def render_table(reports: list[Report], console: Console) -> None:
    for r in reports:
        d = r.data
        console.print(_heading(d), markup=False)
        for title, columns, rows in blocks(d):
            table = Table(title=title, title_justify="left")
            for key, header in columns:
                table.add_column(header, justify="left" if key in ("arm", "channel", "status") else "right",
                                 no_wrap=True)
            for row in rows:
                table.add_row(*row)
            console.print(table)
        console.print(verdict_line(d), markup=False)
        console.print()


def render_markdown(reports: list[Report]) -> str:
    lines: list[str] = []
    for r in reports:
        d = r.data
        lines += [f"### {_heading(d)}", ""]
        for title, columns, rows in blocks(d):
            lines += [f"**{title}**", ""]
            lines.append("| " + " | ".join(h for _, h in columns) + " |")
            lines.append("|" + "|".join("---" if k in ("arm", "channel", "status") else "---:" for k, _ in columns)
                         + "|")
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
            lines.append("")
        lines += [f"**Verdict:** {verdict_line(d)}", ""]
    return "\n".join(lines)
