"""What the dashboard shows, as plain data: chart specs (Plotly figures as dicts), sparklines and
the spec's version history, built from the report (O(arms)), the weights history
(O(refreshes)) and a bounded timeline; never from a scan of events.

Pure functions of their inputs: the routes in `engine.dashboard` read the store and render.
"""

from __future__ import annotations

import difflib
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import yaml
from scipy import stats

from engine.store.weights import WeightsEntry
from engine.timeline import Timeline

# Colour-blind-safe qualitative palette (Okabe & Ito 2008), one colour per arm in every chart.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
DENSITY_POINTS = 120


def arm_colours(arms: Sequence[str]) -> dict[str, str]:
    return {arm: PALETTE[i % len(PALETTE)] for i, arm in enumerate(arms)}


def _layout(title: str, x_title: str, y_title: str, **extra: Any) -> dict[str, Any]:
    return {"title": {"text": title}, "xaxis": {"title": {"text": x_title}, **extra.pop("xaxis", {})},
            "yaxis": {"title": {"text": y_title}, **extra.pop("yaxis", {})},
            "margin": {"l": 60, "r": 20, "t": 50, "b": 50}, "legend": {"orientation": "h", "y": -0.25},
            "autosize": True, **extra}


def forest_plot(report: dict[str, Any]) -> dict[str, Any] | None:
    """Each variant's lift over the control with its interval (the report's scale and test)."""
    rows = [a for a in report["arms"] if a.get("lift") is not None and a["arm"] != report.get("control")]
    if not rows:
        return None
    colours = arm_colours([a["arm"] for a in report["arms"]])
    lows = [a["lift_ci_low"] for a in rows]
    highs = [a["lift_ci_high"] for a in rows]
    trace = {
        "type": "scatter", "mode": "markers", "name": "lift",
        "x": [a["lift"] for a in rows], "y": [a["arm"] for a in rows],
        "marker": {"size": 11, "color": [colours[a["arm"]] for a in rows]},
        "error_x": {"type": "data", "symmetric": False,
                    "array": [None if h is None else h - a["lift"] for a, h in zip(rows, highs, strict=True)],
                    "arrayminus": [None if lo is None else a["lift"] - lo for a, lo in zip(rows, lows, strict=True)]},
        "hovertemplate": "%{y}: lift %{x:.1%}<extra></extra>",
    }
    layout = _layout(f"Lift of {report['metric']['name']} over {report.get('control') or 'control'}",
                     "relative lift (interval of the report's test)", "", xaxis={"tickformat": ".0%", "zeroline": True},
                     yaxis={"automargin": True})
    layout["shapes"] = [{"type": "line", "x0": 0, "x1": 0, "yref": "paper", "y0": 0, "y1": 1,
                         "line": {"color": "#555", "dash": "dot"}}]
    return {"data": [trace], "layout": layout}


def timeline_charts(report: dict[str, Any], timeline: Timeline) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """Cumulative rate per arm (per decision) and each variant's cumulative lift over the control,
    against the exposures so far (all arms), with each checkpoint's time in the hover text: an
    even axis however bursty the traffic."""
    if len(timeline.ts) == 0:
        return None
    x = [int(v) for v in sum(t.exposures for t in timeline.arms.values())]
    when = [f"{t} UTC" for t in np.datetime_as_string(timeline.ts, unit="s")]
    hover = "%{fullData.name}: %{y:" + (".3f" if report["metric"]["type"] == "revenue" else ".2%") + \
        "}<br>%{x:,} exposures, %{text}<extra></extra>"
    colours = arm_colours(list(timeline.arms))
    revenue = report["metric"]["type"] == "revenue"
    rates = {}
    for arm, t in timeline.arms.items():
        num = t.value if revenue else t.conversions
        rates[arm] = np.divide(num, t.exposures, out=np.full(len(x), np.nan), where=t.exposures > 0)
    rate_chart = {
        "data": [{"type": "scatter", "mode": "lines", "name": arm, "x": x, "y": _finite(r), "text": when,
                  "hovertemplate": hover, "line": {"color": colours[arm]}} for arm, r in rates.items()],
        "layout": _layout(f"Cumulative {'value' if revenue else 'conversion rate'} per decision", "exposures so far",
                          "mean value" if revenue else "rate", yaxis={} if revenue else {"tickformat": ".1%"}),
    }
    control = report.get("control")
    if control not in rates:
        return rate_chart, None
    base = rates[control]
    lifts = {arm: np.divide(r - base, base, out=np.full(len(x), np.nan), where=base > 0)
             for arm, r in rates.items() if arm != control}
    lift_chart = {
        "data": [{"type": "scatter", "mode": "lines", "name": arm, "x": x, "y": _finite(v), "text": when,
                  "hovertemplate": hover.replace(":.3f", ":.1%").replace(":.2%", ":.1%"),
                  "line": {"color": colours[arm]}} for arm, v in lifts.items()],
        "layout": _layout(f"Cumulative lift over {control}", "exposures so far", "relative lift",
                          yaxis={"tickformat": ".0%"}),
    }
    return rate_chart, lift_chart


def timeline_span(timeline: Timeline) -> int:
    """How many exposures the timeline's checkpoints cover (all arms)."""
    if len(timeline.ts) == 0:
        return 0
    return int(sum(t.exposures[-1] - t.exposures[0] for t in timeline.arms.values()))


def weights_chart(history: Sequence[WeightsEntry], arms: Sequence[str]) -> dict[str, Any] | None:
    """The share of traffic each refresh gave every arm; the hover text carries the refresh's reason."""
    if not history:
        return None
    colours = arm_colours(arms)
    x = [h.ts.isoformat(timespec="seconds") for h in history]
    # Plotly draws its text as markup (a subset of HTML, entities decoded): escaped, a reason
    # reads as written and cannot add tags or links.
    reasons = [html.escape(h.reason) for h in history]
    return {
        "data": [{"type": "scatter", "mode": "lines", "stackgroup": "weights", "name": arm, "x": x,
                  "y": [float(h.weights.get(arm, 0.0)) for h in history], "text": reasons,
                  "line": {"color": colours[arm]},
                  "hovertemplate": "%{x}<br>" + "%{fullData.name}: %{y:.1%}<br>%{text}<extra></extra>"}
                 for arm in arms],
        "layout": _layout("Bandit weights at each refresh", "time (UTC)", "share of traffic",
                          yaxis={"tickformat": ".0%", "range": [0, 1]}),
    }


def posterior_chart(report: dict[str, Any]) -> dict[str, Any] | None:
    """Posterior density of each arm's mean: Beta(prior + conversions, prior + failures) for a
    binary metric (the report's prior); for revenue a normal with the report's mean and the
    standard error read back from its interval (t interval, so approximate for small n)."""
    if report["kind"] != "bandit":
        return None
    colours = arm_colours([a["arm"] for a in report["arms"]])
    curves = _beta_curves(report) if report["metric"]["type"] == "binary" else _normal_curves(report)
    if not curves:
        return None
    return {
        "data": [{"type": "scatter", "mode": "lines", "name": arm, "x": x.tolist(), "y": y.tolist(), "fill": "tozeroy",
                  "line": {"color": colours[arm]}} for arm, (x, y) in curves.items()],
        "layout": _layout(f"Posterior of each arm's {report['metric']['name']}", "mean per unit", "density",
                          xaxis={"tickformat": ".1%"} if report["metric"]["type"] == "binary" else {}),
    }


def _beta_curves(report: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    prior = report.get("prior") or {"alpha": 1.0, "beta": 1.0}
    arms = [a["arm"] for a in report["arms"]]
    a = np.array([prior["alpha"] + (r["conversions"] or 0) for r in report["arms"]], dtype=float)
    b = np.array([prior["beta"] + r["exposures"] - (r["conversions"] or 0) for r in report["arms"]], dtype=float)
    return _curves(arms, stats.beta, (a, b))


def _normal_curves(report: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    z = stats.norm.ppf(1 - (report.get("test") or {}).get("alpha", 0.05) / 2)
    rows = [r for r in report["arms"] if r.get("rate") is not None and r.get("ci_low") is not None
            and r["ci_high"] > r["ci_low"]]
    if not rows:
        return {}
    mean = np.array([r["rate"] for r in rows])
    se = np.array([(r["ci_high"] - r["ci_low"]) / (2 * z) for r in rows])
    return _curves([r["arm"] for r in rows], stats.norm, (mean, se))


def _curves(arms: list[str], family: Any, params: tuple[np.ndarray, np.ndarray]
            ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each arm's density on one shared grid spanning every arm's 0.05%..99.95% quantiles
    (one vectorised scipy call per step: freezing a distribution per arm costs more)."""
    lo, hi = family.ppf(0.0005, *params).min(), family.ppf(0.9995, *params).max()
    x = np.linspace(lo, hi, DENSITY_POINTS)
    density = family.pdf(x[None, :], params[0][:, None], params[1][:, None])
    return {arm: (x, density[i]) for i, arm in enumerate(arms)}


def _finite(values: np.ndarray) -> list[float | None]:
    """JSON has no NaN: undefined points (no exposure yet) become gaps."""
    return [float(v) if math.isfinite(v) else None for v in values]


@dataclass(frozen=True)
class Sparkline:
    """A small SVG polyline per arm (drawn by the template, so the overview needs no script)."""

    lines: tuple[tuple[str, str, str], ...]  # (arm, colour, "x,y x,y ...")
    label: str


def sparkline(report: dict[str, Any], timeline: Timeline, width: int = 120, height: int = 32) -> Sparkline | None:
    charts = timeline_charts(report, timeline)
    if charts is None:
        return None
    series = [(t["name"], t["line"]["color"], [v for v in t["y"]]) for t in charts[0]["data"]]
    values = [v for _, _, ys in series for v in ys if v is not None]
    if not values:
        return None
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    lines = []
    for arm, colour, ys in series:
        n = max(len(ys) - 1, 1)
        points = " ".join(f"{i * width / n:.1f},{height - 2 - (v - lo) / span * (height - 4):.1f}"
                          for i, v in enumerate(ys) if v is not None)
        lines.append((arm, colour, points))
    last = ", ".join(f"{arm} {ys[-1]:.2%}" if ys[-1] is not None else f"{arm} n/a" for arm, _, ys in series)
    return Sparkline(tuple(lines), f"Cumulative {report['metric']['name']} per arm, latest: {last}")


@dataclass(frozen=True)
class Version:
    version: int
    applied_at: datetime
    yaml: str
    diff: str  # unified diff from the previous version ("" for the first)


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's, when PyYAML was built with it


def spec_yaml(spec: dict[str, Any]) -> str:
    """The stored declaration as YAML, without the settings left unset (null), as one writes it."""
    return yaml.dump(_set_only(spec), Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=100)


def _set_only(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _set_only(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_set_only(v) for v in value]
    return value


def version_history(rows: Sequence[tuple[int, datetime, dict[str, Any]]]) -> list[Version]:
    """Each stored version's declaration as YAML and its diff from the one before (newest first)."""
    out: list[Version] = []
    previous = ""
    for version, applied_at, spec in sorted(rows, key=lambda r: r[0]):
        text = spec_yaml(spec)
        diff = "" if not out else "".join(difflib.unified_diff(
            previous.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=f"version {out[-1].version}", tofile=f"version {version}"))
        out.append(Version(version, applied_at, text, diff))
        previous = text
    return out[::-1]


def guardrail_state(report: dict[str, Any]) -> str | None:
    """The worst guardrail state of the experiment: failed, open or holds (None without guardrails)."""
    states = [m["verdict"]["status"] for m in report.get("metrics", []) if m["role"] == "guardrail"]
    for state in ("failed", "open", "holds"):
        if state in states:
            return state
    return None


def exposure_progress(report: dict[str, Any]) -> tuple[int, int | None]:
    """Units exposed so far, and the planned total (planned per arm x arms) when one is planned."""
    exposed = sum(a["exposures"] for a in report["arms"])
    per_arm = (report.get("planning") or {}).get("planned_n_per_arm")
    return exposed, None if per_arm is None else per_arm * len(report["arms"])
