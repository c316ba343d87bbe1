"""PNG charts of a report: lift per arm, cumulative rate over time, posterior densities.

Figures are built with `matplotlib.figure.Figure` and the Agg canvas, never pyplot: no global
figure registry, nothing to close, safe to call from several threads at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from scipy import stats

from engine.timeline import Timeline

DPI = 150
_GRID = 400  # x samples per density curve


def plot_report(report: dict[str, Any], timeline: Timeline, out_dir: Path) -> list[Path]:
    """Write `{experiment}-lift.png`, `-cumulative-rate.png` and `-posterior.png` to `out_dir`.

    `report` is `Report.to_dict()`; `timeline` must be the same experiment's. Returns the paths.
    """
    key = report["experiment"]
    if timeline.experiment != key:
        raise ValueError(f"timeline of {timeline.experiment!r} given for the report of {key!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = (("lift", _lift), ("cumulative-rate", _cumulative_rate), ("posterior", _posterior))
    paths = []
    for suffix, draw in charts:
        fig = Figure(figsize=(8, 4.5), layout="constrained")
        FigureCanvasAgg(fig)
        draw(fig.add_subplot(), report, timeline)
        path = out_dir / f"{key}-{suffix}.png"
        fig.savefig(path, dpi=DPI)
        paths.append(path)
    return paths


def _is_revenue(report: dict[str, Any]) -> bool:
    return bool(report["metric"]["type"] == "revenue")


def _label(report: dict[str, Any], arm: str) -> str:
    return f"{arm} (control)" if arm == report.get("control") else arm


def _note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _lift(ax: Axes, report: dict[str, Any], _timeline: Timeline) -> None:
    """Relative lift of each variant over the control, with its interval from the report."""
    level = 1 - report["test"]["alpha"]
    control = report.get("control")
    ax.set_title(f"{report['experiment']}: lift of {report['metric']['name']} over control arm '{control}'")
    ax.set_xlabel(f"relative lift ({level:.0%} interval)")
    # Keep the arm's index: each arm has the same colour in every chart.
    rows = [(i, a) for i, a in enumerate(report["arms"]) if a["arm"] != control and a.get("lift") is not None]
    if not rows:
        _note(ax, "no lift to show yet (no exposures or no control conversions)")
        ax.set_yticks([])
        return
    for y, (i, a) in enumerate(rows):
        low, high = a.get("lift_ci_low"), a.get("lift_ci_high")
        # A null bound is an unbounded interval (control mean not distinguishable from 0):
        # draw the bounded side and say so, rather than invent an end.
        xerr = [[0.0 if low is None else a["lift"] - low], [0.0 if high is None else high - a["lift"]]]
        ax.errorbar(a["lift"], y, xerr=xerr, fmt="o", color=f"C{i}", capsize=4)
        if low is None or high is None:
            side = "unbounded" if low is None and high is None else "unbounded " + ("below" if low is None else "above")
            ax.annotate(side, (a["lift"], y), xytext=(6, 6), textcoords="offset points", fontsize=8, color=f"C{i}")
    ax.axvline(0, color="0.5", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(rows)), [a["arm"] for _, a in rows])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(axis="x", alpha=0.3)


def _cumulative_rate(ax: Axes, report: dict[str, Any], timeline: Timeline) -> None:
    """Running conversion rate (revenue: value per exposure) of each arm at the timeline's checkpoints."""
    revenue = _is_revenue(report)
    what = "revenue per exposure" if revenue else "conversion rate"
    ax.set_title(f"{report['experiment']}: cumulative {what} ({report['metric']['name']})")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel(f"cumulative {what}")
    if timeline.ts.size == 0:
        _note(ax, "no exposures yet")
        return
    for i, a in enumerate(report["arms"]):
        arm = timeline.arms[a["arm"]]
        numerator = arm.value if revenue else arm.conversions
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(arm.exposures > 0, numerator / arm.exposures, np.nan)
        ax.plot(timeline.ts, rate, color=f"C{i}", label=_label(report, a["arm"]),
                marker="." if timeline.ts.size < 30 else None)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    if not revenue:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def _posterior(ax: Axes, report: dict[str, Any], _timeline: Timeline) -> None:
    """Beta-Binomial posteriors (binary) or the normal approximation from the interval (revenue)."""
    revenue = _is_revenue(report)
    ax.set_title(f"{report['experiment']}: posterior of {report['metric']['name']} "
                 + ("per exposure (normal approx.)" if revenue else "rate"))
    ax.set_xlabel("revenue per exposure" if revenue else "conversion rate")
    ax.set_ylabel("density")
    curves = _revenue_posteriors(report) if revenue else _beta_posteriors(report)
    flat = [report["arms"][i]["arm"] for i, d in curves if d is None]
    if flat:
        ax.text(0.01, 0.98, f"not drawn, every exposure has the same value so far: {', '.join(flat)}",
                transform=ax.transAxes, va="top", fontsize="small", color="0.4")
    drawn = [(i, d) for i, d in curves if d is not None]
    if not drawn:
        _note(ax, "no posterior to show yet")
        return
    x = np.linspace(min(d.ppf(5e-4) for _, d in drawn), max(d.ppf(1 - 5e-4) for _, d in drawn), _GRID)
    for i, d in drawn:
        color = f"C{i}"
        ax.plot(x, d.pdf(x), color=color, label=_label(report, report["arms"][i]["arm"]))
        ax.fill_between(x, d.pdf(x), color=color, alpha=0.15)
    if not revenue:
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


# (arm index in the report, frozen scipy distribution, or None when the interval has no width)
_Curve = tuple[int, Any]


def _beta_posteriors(report: dict[str, Any]) -> list[_Curve]:
    """Beta(alpha + conversions, beta + failures); the prior is Beta(1, 1) unless the report names one."""
    prior = report.get("prior") or {"alpha": 1.0, "beta": 1.0}
    return [(i, stats.beta(prior["alpha"] + a["conversions"], prior["beta"] + a["exposures"] - a["conversions"]))
            for i, a in enumerate(report["arms"])]


def _revenue_posteriors(report: dict[str, Any]) -> list[_Curve]:
    """N(rate, sd), sd read back from the report's (1 - alpha) interval of the mean (normal approximation)."""
    z = stats.norm.ppf(1 - report["test"]["alpha"] / 2)
    curves = []
    for i, a in enumerate(report["arms"]):
        if a.get("ci_low") is None or a.get("ci_high") is None:
            continue
        sd = (a["ci_high"] - a["ci_low"]) / (2 * z)
        curves.append((i, stats.norm(a["rate"], sd) if sd > 0 else None))
    return curves
