"""Reports as text: the report dict (`engine.report`) as titled tables, rich tables or markdown."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from engine.report import Report


def _fmt(key: str, value: Any, revenue: bool) -> str:
    """One report cell: rates and shares as percentages (revenue per unit as a number)."""
    if value is None:
        return "–"
    if key in ("exposures", "conversions", "decisions", "units"):
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
_TEXT_COLUMNS = ("arm", "channel", "status", "level", "note")

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


_BREAKDOWN: Columns = (
    ("level", "level"), ("arm", "arm"), ("units", "units"), ("rate", "rate"), ("lift", "lift"),
    ("p_value", "p"), ("p_value_adjusted", "p adj. (BH)"), ("note", "note"),
)


def _breakdown_block(b: dict[str, Any], revenue: bool) -> tuple[str, Columns, list[list[str]]]:
    title = (f"EXPLORATORY breakdown of {b['metric']} by {b['by']} (Benjamini–Hochberg across levels; "
             f"at most {b['max_levels']} levels, the rest pooled; not part of the verdict)")
    rows = [[_fmt(k, {"level": lv["level"], "note": lv["note"] if i == 0 else None, **arm}.get(k), revenue)
             for k, _ in _BREAKDOWN] for lv in b["levels"] for i, arm in enumerate(lv["arms"])]
    return title, _BREAKDOWN, rows


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
    if data.get("breakdown"):
        out.append(_breakdown_block(data["breakdown"], revenue))
    return out


def _verdict_text(v: dict[str, Any]) -> str:
    winner = f" -> {v['winner']}" if v.get("winner") else ""
    return f"{v['status']}{winner} ({v['reason']})"


def verdict_line(data: dict[str, Any]) -> str:
    """The verdict; a kept one says on how many units it was kept (its time is in the JSON,
    `verdict.kept_at`, so the text of a report is reproducible)."""
    v = data["verdict"]
    kept = f" [kept on {sum(c['units'] for c in v['counts']):,} units]" if v.get("kept_at") else ""
    return f"{data['experiment']}: {_verdict_text(v)}{kept}"


def verdict_lines(data: dict[str, Any]) -> list[str]:
    """The verdict line, then the current data's verdict when it disagrees with the kept one."""
    current = data.get("current_verdict")
    return [verdict_line(data)] + ([f"{data['experiment']}: current data: {_verdict_text(current)}"] if current else [])


def plan_line(data: dict[str, Any]) -> str | None:
    """Where the planned sample comes from (None for experiments without a plan, e.g. bandits); the
    time of a freeze is in the JSON (`planning.frozen_at`), so the text of a report is reproducible."""
    p = data.get("planning") or {}
    if p.get("source") is None:
        return None
    sd = "" if p["baseline_sd"] is None else f", sd {p['baseline_sd']:,.4g}"
    planned = "no sample can be planned" if p.get("planned_n_per_arm") is None else (
        f"{p['planned_n_per_arm']:,} units per arm, {p['share_reached']:.0%} reached")
    return f"plan: {planned} (baseline {p['baseline']:,.4g}{sd}, {p['source']})"


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
                table.add_column(header, justify="left" if key in _TEXT_COLUMNS else "right",
                                 no_wrap=True)
            for row in rows:
                table.add_row(*row)
            console.print(table)
        for line in [plan_line(d), *verdict_lines(d)]:
            if line is not None:
                console.print(line, markup=False)
        console.print()


def render_markdown(reports: list[Report]) -> str:
    lines: list[str] = []
    for r in reports:
        d = r.data
        lines += [f"### {_heading(d)}", ""]
        for title, columns, rows in blocks(d):
            lines += [f"**{title}**", ""]
            lines.append("| " + " | ".join(h for _, h in columns) + " |")
            lines.append("|" + "|".join("---" if k in _TEXT_COLUMNS else "---:" for k, _ in columns)
                         + "|")
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
            lines.append("")
        if (plan := plan_line(d)) is not None:
            lines += [f"**Plan:** {plan.removeprefix('plan: ')}", ""]
        kept, *current = verdict_lines(d)
        lines += [f"**Verdict:** {kept}", ""] + [f"**Current data:** {c}" for c in current] + ([""] if current else [])
    return "\n".join(lines)
