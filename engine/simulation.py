"""`crosspromo simulate`: an experiment's declared policy against a simulated population.

The truth per arm comes from `--truth ARM=RATE` (revenue: `ARM=RATE:MEAN_VALUE`), else from
the experiment's entry in configs/demo.yaml. Drift: `swap` exchanges the best and worst arm
halfway; `STEP:ARM=RATE,...` changes the named arms' rates from decision STEP on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engine.measures import MetricType
from engine.spec import EpsilonGreedyPolicy, ExperimentSpec, ThompsonPolicy, declared_policy
from policies.simulation.bandits import SimulationResult, Truth, TruthChange, simulate, swap_best_worst


@dataclass(frozen=True)
class SimulationReport:
    spec: ExperimentSpec
    result: SimulationResult

    def to_dict(self) -> dict[str, Any]:
        arms = self.spec.arm_keys
        return {
            "users": self.result.users,
            "conversions": self.result.total_conversions,
            "best_arm": arms[self.result.best_arm],
            "regret": self.result.total_regret,
            "weights": {a: float(w) for a, w in zip(arms, self.result.final_weights, strict=True)},
            "pulls": {a: int(n) for a, n in zip(arms, self.result.pulls, strict=True)},
        }


def _arm_value(spec: ExperimentSpec, text: str) -> tuple[str, float, float | None]:
    arm, sep, value = text.partition("=")
    if not sep or arm not in spec.arm_keys:
        raise ValueError(f"expected ARM=RATE with ARM one of {', '.join(spec.arm_keys)}; got {text!r}")
    rate, _, mean = value.partition(":")
    try:
        return arm, float(rate), float(mean) if mean else None
    except ValueError:
        raise ValueError(f"not a number in {text!r}") from None


def parse_truth(spec: ExperimentSpec, pairs: Sequence[str], defaults: dict[str, Any] | None) -> Truth:
    """The true rate (and mean value, for revenue) of every arm, from ARM=RATE[:MEAN] pairs."""
    rates: dict[str, float] = {}
    values: dict[str, float] = {}
    for arm, raw in (defaults or {}).items():
        rates[arm] = float(raw["rate"]) if isinstance(raw, dict) else float(raw)
        if isinstance(raw, dict) and "mean_value" in raw:
            values[arm] = float(raw["mean_value"])
    for text in pairs:
        arm, rate, mean = _arm_value(spec, text)
        rates[arm] = rate
        if mean is not None:
            values[arm] = mean
    missing = [a for a in spec.arm_keys if a not in rates]
    if missing:
        raise ValueError(f"no true rate for arm(s) {', '.join(missing)}: pass --truth ARM=RATE")
    revenue = spec.primary.type is MetricType.REVENUE
    if revenue and any(a not in values for a in spec.arm_keys):
        raise ValueError("a revenue experiment needs --truth ARM=RATE:MEAN_VALUE for every arm")
    return Truth(tuple(rates[a] for a in spec.arm_keys),
                 tuple(values[a] for a in spec.arm_keys) if revenue else None)


def parse_drift(spec: ExperimentSpec, truth: Truth, items: Sequence[str], users: int) -> list[TruthChange]:
    changes: list[TruthChange] = []
    current = truth
    for item in items:
        if item == "swap":
            current = swap_best_worst(current)
            changes.append(TruthChange(users // 2, current))
            continue
        step, sep, assignments = item.partition(":")
        if not sep or not step.isdigit():
            raise ValueError(f"--drift expects 'swap' or STEP:ARM=RATE,...; got {item!r}")
        rates = list(current.rates)
        for text in assignments.split(","):
            arm, rate, _ = _arm_value(spec, text)
            rates[spec.arm_keys.index(arm)] = rate
        current = Truth(tuple(rates), current.values)
        changes.append(TruthChange(int(step), current))
    return sorted(changes, key=lambda c: c.step)


def run_simulation(spec: ExperimentSpec, truth: Truth, users: int, seed: int,
                   drift: Sequence[TruthChange] = ()) -> SimulationReport:
    """Simulate the declared policy, refreshing its weights on the declared cadence."""
    if not isinstance(spec.policy, ThompsonPolicy | EpsilonGreedyPolicy):
        raise ValueError(f"{spec.key} is an A/B test: simulate runs bandit policies")
    policy = declared_policy(spec)
    assert policy is not None
    result = simulate(policy, truth, users, np.random.default_rng(seed),
                      update_every=spec.policy.update.every_outcomes, drift=drift)
    return SimulationReport(spec, result)


def plot_simulation(report: SimulationReport, out_dir: Path) -> list[Path]:
    """`KEY-simulated-regret.png` (cumulative regret) and `KEY-simulated-weights.png`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key, r = report.spec.key, report.result
    regret = Figure(figsize=(8, 4.5))
    ax = regret.add_subplot()
    steps = np.arange(1, r.users + 1)
    ax.plot(steps, r.regret, color="tab:red")
    ax.set(title=f"{key}: cumulative regret ({report.spec.policy.name})", xlabel="users", ylabel="expected regret")
    ax.grid(alpha=0.3)
    weights = Figure(figsize=(8, 4.5))
    ax = weights.add_subplot()
    ax.stackplot(r.weight_steps, r.weight_history.T, labels=report.spec.arm_keys, alpha=0.85)
    ax.set(title=f"{key}: arm weights over time", xlabel="users", ylabel="weight", ylim=(0, 1))
    ax.legend(loc="upper left", fontsize="small")
    paths = [out_dir / f"{key}-simulated-regret.png", out_dir / f"{key}-simulated-weights.png"]
    for figure, path in zip((regret, weights), paths, strict=True):
        FigureCanvasAgg(figure)
        figure.savefig(path, dpi=150, bbox_inches="tight")
    return paths
