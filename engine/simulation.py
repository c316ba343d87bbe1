"""`crosspromo simulate`: an experiment's declared policy against a simulated population.

The truth per arm comes from `--truth ARM=RATE` (revenue: `ARM=RATE:MEAN_VALUE`), else from
the experiment's entry in configs/demo.yaml. Drift: `swap` exchanges the best and worst arm
halfway; `STEP:ARM=RATE,...` changes the named arms' rates from decision STEP on.

With `--runs`, many experiments of the declared design (split or policy and refresh cadence)
are simulated and read at every look with the report's own analysis (`report.analyze_metric`
with `report.analysis_config`, a bandit's arms through the propensities of its decision log),
primary metric only: guardrails and costs have no declared truth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engine.measures import MetricType
from engine.spec import EpsilonGreedyPolicy, ExperimentSpec, Kind, ThompsonPolicy, declared_policy
from policies.simulation.bandits import SimulationResult, Truth, TruthChange, simulate, swap_best_worst
from policies.simulation.runs import (
    Design,
    Look,
    PolicyDesign,
    Reader,
    RunPlan,
    RunsSummary,
    SplitDesign,
    best_arms,
    fixed_horizon_exposures,
    simulate_runs,
    summarise,
)
from policies.stats.bandit_inference import PropensitySums, propensity_sums
from policies.stats.planning import plan_binary_sample_size, plan_mean_sample_size
from policies.stats.verdicts import Verdict

BANDIT_EXPOSURES = 20_000
"""Exposures per simulated bandit run unless `--max-exposures` says otherwise."""

SIMULATION_DRAWS = 2_000
"""Posterior draws per look (the report takes 20,000). A/B verdicts do not depend on them (they
use p-values); a bandit's `prob_best` comes from draws of its partially pooled posterior, with a
Monte Carlo s.e. near the 0.95 threshold of sqrt(0.95 * 0.05 / 2,000) = 0.005 (0.0015 in the
report)."""


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
        raise ValueError(f"{spec.key} is an A/B test: a single simulation runs bandit policies; "
                         "pass --runs N to simulate the A/B test N times")
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


@dataclass(frozen=True)
class RunsReport:
    spec: ExperimentSpec
    summary: RunsSummary
    seed: int

    def to_dict(self) -> dict[str, Any]:
        s, arms = self.summary, self.spec.arm_keys
        return {
            "experiment": self.spec.key, "kind": self.spec.kind.value, "policy": self.spec.policy.name,
            "runs": s.runs, "exposures": s.exposures, "look_every": s.look_every, "looks": s.looks,
            "ever_winner_share": s.ever_winner_share, "wrong_winner_share": s.wrong_winner_share,
            "median_exposures_to_call": s.median_exposures_to_call, "regret": s.regret,
            "mean_exposures_to_stop": s.mean_exposures_to_stop, "no_difference_share": s.no_difference_share,
            "srm_invalid_share": s.srm_invalid_share,
            "standard_errors": {"ever_winner_share": s.ever_winner_share_se,
                                "wrong_winner_share": s.wrong_winner_share_se},
            "best_arms": [arms[i] for i in s.best_arms],
            "winners": {a: share for a, share in zip(arms, s.winner_shares, strict=True)},
            "seed": self.seed,
        }


def default_exposures(spec: ExperimentSpec, truth: Truth) -> int:
    """A bandit: `BANDIT_EXPOSURES`. An A/B test: the planned sample of the declared analysis at
    the control's true rate (or mean and standard deviation), with room for the random split
    (`runs.fixed_horizon_exposures`), so that a run read at its end has reached the plan."""
    if spec.kind is Kind.BANDIT:
        return BANDIT_EXPOSURES
    a, control = spec.analysis, spec.arm_keys.index(spec.control)
    options = dict(relative=a.mde_relative, alpha=a.alpha, power=a.power, arms=len(spec.arms),
                   correction=a.correction.value)
    rate = truth.rates[control]
    try:
        if truth.values is None:
            plan = plan_binary_sample_size(rate, a.mde, **options)  # type: ignore[arg-type]
        else:
            value = truth.values[control]
            std = float(np.sqrt(2 * rate * value**2 - (rate * value) ** 2))  # exponential amounts
            plan = plan_mean_sample_size(rate * value, std, a.mde, **options)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"no sample can be planned from the control's true value ({exc}); "
                         "pass --max-exposures") from None
    shares = SplitDesign(spec.weights).shares
    return fixed_horizon_exposures(plan.n_per_arm, [float(w) for w in shares])


def look_reader(spec: ExperimentSpec) -> Callable[[np.random.Generator], Reader]:
    """One run's reader: the report's verdict on the stats at a look (`report.analyze_metric` with
    `report.analysis_config`, `SIMULATION_DRAWS` posterior draws). An A/B test's plan is frozen at
    the run's first look where the report would freeze it (`report.plan_basis`), and kept for the
    run. A bandit with a propensity floor also gets the propensity sums of the run's decision
    log, and is checked for SRM with them (`report.propensity_floor`; no arm is taken out in a
    simulation), as the store's counters give the report."""
    from engine.report import Basis, analysis_config, analyze_metric, plan_basis, propensity_floor
    from policies.stats.freezing import awaiting_plan

    positivity = propensity_floor(spec)
    control = spec.arm_keys.index(spec.control) if spec.control in spec.arm_keys else 0

    def new_reader(rng: np.random.Generator) -> Reader:
        frozen: list[Basis] = []

        def read(look: Look) -> Verdict:
            basis = plan_basis(spec, look.stats[control], [s.n for s in look.stats], frozen[0] if frozen else None)
            if basis.source == "frozen" and not frozen:
                frozen.append(basis)
            config = replace(analysis_config(spec, basis=basis), draws=SIMULATION_DRAWS)
            weighted = look_propensity_sums(spec, look) if positivity else None
            verdict = analyze_metric(spec, look.stats, config, rng, weighted=weighted,
                                     propensity_srm=positivity).verdict
            return verdict if basis.pending is None else awaiting_plan(verdict, basis.pending)
        return read

    return new_reader


def look_propensity_sums(spec: ExperimentSpec, look: Look) -> tuple[PropensitySums, ...] | None:
    """What `Tally.propensity_sums` gives the report for the look's units (each decision is a
    unit here): None for an A/B test, a metric net of cost, or a log without propensities (a
    policy refreshed at every decision, `runs.DecisionLog`), whose arms are then read on pooled
    counts."""
    log = look.log
    if spec.kind is not Kind.BANDIT or spec.primary.net or log is None or log.propensities is None:
        return None
    return propensity_sums(log.arms, log.propensities, log.outcomes, len(spec.arms))


def design_of(spec: ExperimentSpec) -> Design:
    """The declared split of an A/B test, or the declared policy and refresh cadence of a bandit."""
    policy = declared_policy(spec)
    if policy is None or not isinstance(spec.policy, ThompsonPolicy | EpsilonGreedyPolicy):
        return SplitDesign(spec.weights)
    return PolicyDesign(policy, spec.policy.update.every_outcomes)


def run_many(spec: ExperimentSpec, truth: Truth, plan: RunPlan, seed: int,
             drift: Sequence[TruthChange] = ()) -> RunsReport:
    """`plan.runs` simulated experiments of `spec`'s design, each read at every look."""
    results = simulate_runs(spec.arm_keys, design_of(spec), truth, plan, look_reader(spec),
                            np.random.default_rng(seed), drift=drift)
    return RunsReport(spec, summarise(results, plan, len(spec.arms), best_arms(truth)), seed)


def runs_lines(data: dict[str, Any]) -> list[str]:
    """The text form of `RunsReport.to_dict()`: a heading and a short table."""
    se = data["standard_errors"]
    median = data["median_exposures_to_call"]
    winners = ", ".join(f"{arm} {share:.1%}" for arm, share in data["winners"].items() if share) or "none"
    rows = [
        ("ever called a winner", f"{data['ever_winner_share']:.1%} (s.e. {se['ever_winner_share']:.1%})"),
        ("called a wrong winner", f"{data['wrong_winner_share']:.1%} (s.e. {se['wrong_winner_share']:.1%})"),
        ("median exposures to a call", "no run called" if median is None else f"{median:,.0f}"),
        ("mean exposures to a final verdict", f"{data['mean_exposures_to_stop']:,.0f}"),
        ("stopped with no_difference", f"{data['no_difference_share']:.1%}"),
        ("showed srm_invalid", f"{data['srm_invalid_share']:.1%}"),
        ("regret (mean, expected)", f"{data['regret']:,.1f}"),
        ("first calls by arm", winners),
    ]
    width = max(len(name) for name, _ in rows)
    return [f"{data['experiment']} ({data['kind']}, {data['policy']}): {data['runs']:,} runs of "
            f"{data['exposures']:,} exposures, read every {data['look_every']:,} ({data['looks']} looks); "
            f"truly best: {', '.join(data['best_arms'])}",
            *(f"  {name:<{width}}  {value}" for name, value in rows)]
