"""Reports: the analysis of one experiment as a dict (the JSON contract), a table or markdown."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from engine.api import Engine, stats_for
from engine.spec import ExperimentSpec, Kind
from policies.stats.analysis import AnalysisConfig, analyze


def analysis_config(spec: ExperimentSpec) -> AnalysisConfig:
    a = spec.analysis
    prior = getattr(spec.policy, "prior", None)
    return AnalysisConfig(
        metric_type=spec.metric.type.value, alpha=a.alpha, power=a.power, mde=a.mde,
        mde_relative=a.mde_relative, correction=a.correction.value, sequential=a.sequential,
        prob_best_threshold=a.prob_best_threshold, min_sample_per_arm=a.min_sample_per_arm,
        prior_alpha=prior.alpha if prior else 1.0, prior_beta=prior.beta if prior else 1.0,
    )


@dataclass(frozen=True)
class Report:
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, allow_nan=False)


def build_report(engine: Engine, key: str, seed: int = 0) -> Report:
    """Analyse `key` from its stored aggregates (O(arms), whatever the number of events)."""
    stored, aggregates = engine.aggregates(key)
    spec = stored.spec
    weights = engine.weights(key)
    config = analysis_config(spec)
    analysis = analyze(
        spec.arm_keys, stats_for(spec, aggregates), kind=spec.kind.value, control=spec.control,
        expected_weights=spec.weights if spec.kind is Kind.AB_TEST else None,
        config=config, rng=np.random.default_rng(seed),
    ).to_dict()
    channels = {a.key: a.channel.value for a in spec.arms}
    for row, agg, w in zip(analysis["arms"], aggregates, weights, strict=True):
        row["channel"] = channels[row["arm"]]
        row["exposures"] = agg.exposures
        row["conversions"] = agg.conversions
        row["weight"] = float(w)
    data = {
        "experiment": spec.key, "name": spec.name, "kind": spec.kind.value, "policy": spec.policy.name,
        "status": spec.status.value, "version": stored.version, "phase": spec.traffic.phase,
        "metric": {"name": spec.metric.name, "type": spec.metric.type.value},
        "control": spec.control, "prior": {"alpha": config.prior_alpha, "beta": config.prior_beta},
        **analysis,
    }
    return Report(data)


def _fmt(key: str, value: Any, revenue: bool) -> str:
    """One report cell: rates and shares as percentages (revenue per exposure as a number)."""
    if value is None:
        return "–"
    if key in ("exposures", "conversions"):
        return f"{value:,}"
    if key in ("rate", "ci_low", "ci_high"):
        return f"{value:,.3f}" if revenue else f"{value:.2%}"
    if key == "lift":
        return f"{value:+.1%}"
    if key in ("prob_best", "weight"):
        return f"{value:.1%}"
    if key == "p_value_adjusted":
        return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"
    return str(value)


_COLUMNS = (
    ("arm", "arm"), ("channel", "channel"), ("exposures", "exposures"), ("conversions", "conv."),
    ("rate", "rate"), ("ci_low", "ci low"), ("ci_high", "ci high"), ("lift", "lift"),
    ("p_value_adjusted", "p adj."), ("prob_best", "P(best)"), ("weight", "weight"),
)


def _cells(data: dict[str, Any]) -> list[list[str]]:
    revenue = data["metric"]["type"] == "revenue"
    return [[_fmt(k, arm.get(k), revenue) for k, _ in _COLUMNS] for arm in data["arms"]]


def verdict_line(data: dict[str, Any]) -> str:
    v = data["verdict"]
    winner = f" -> {v['winner']}" if v.get("winner") else ""
    return f"{data['experiment']}: {v['status']}{winner} ({v['reason']})"


def render_table(reports: list[Report], console: Console) -> None:
    for r in reports:
        d = r.data
        table = Table(title=f"{d['experiment']} — {d['kind']} / {d['policy']} / {d['status']}",
                      title_justify="left")
        for key, header in _COLUMNS:
            table.add_column(header, justify="left" if key in ("arm", "channel") else "right", no_wrap=True)
        for row in _cells(d):
            table.add_row(*row)
        console.print(table)
        console.print(verdict_line(d))
        console.print()


def render_markdown(reports: list[Report]) -> str:
    lines: list[str] = []
    for r in reports:
        d = r.data
        lines += [f"### {d['experiment']} ({d['kind']}, {d['policy']}, {d['status']})", ""]
        lines.append("| " + " | ".join(h for _, h in _COLUMNS) + " |")
        lines.append("|" + "|".join("---" if k in ("arm", "channel") else "---:" for k, _ in _COLUMNS) + "|")
        for row in _cells(d):
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        lines += ["", f"**Verdict:** {verdict_line(d)}", ""]
    return "\n".join(lines)
