"""Statistical benchmark of user-level analysis and guardrails, by simulation against a known truth.

    python tests/benchmarks/bench_metrics_sim.py [--quick] [--out FILE.json]

Prints a table and writes JSON (default `bench-results/bench_metrics_sim.json`). Rows:

- A/A false-positive rate of the user-level z-test for units that decide several times each
  (propensity Beta with mean 5% and concentration 2, so ICC 1/3; 1 + Poisson(4) decisions per
  unit), with the per-decision analysis of the same units measured beside it (the peer): it is
  anti-conservative by the design effect (Kish), whose prediction is printed in the note.
- The ship decision with an unsubscribe guardrail (margin 20%, harm is an increase) at the
  sample planned by `plan_decision_sample_size` (power 0.8, so each test at 0.9): purchase 5%
  planned for a 10% lift. Two designs: unsubscribes at 1% (the guardrail needs the most units)
  and at 2% (the primary does). A guardrail truly up by twice its margin must stop >= 95% of
  the otherwise-winning arms; one that truly holds must block <= 10% of them. When the
  guardrail sets the sample, its planned miss rate is beta / (G + 1) = 0.10 itself, so that
  row is judged within two Monte Carlo standard errors of 0.10.
- The decision's power at the MDE (purchase truly +10%, guardrail holding) against its 0.8.
- The bandits' always-valid harm test: share of experiments ever flagged over 50 looks, with
  no harm and with the variant exactly at the margin, against the fixed-horizon interval
  looked at as often (the peer).
- Our non-inferiority p-values against statsmodels' `test_proportions_2indep(compare="ratio",
  method="log")` on random tables: the largest absolute difference.

The full run takes about two minutes on one core; `--quick` is a smoke run (fewer runs, wider
Monte Carlo error) and its figures are not the reported ones.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script: make `policies` importable

from statsmodels.stats.proportion import test_proportions_2indep  # noqa: E402

from policies.simulation.decisions import (  # noqa: E402
    DecisionRates,
    DecisionScenario,
    GuardrailTruth,
    MetricTruth,
    simulate_decisions,
)
from policies.simulation.units import RepeatUnits, aa_false_positive_rates  # noqa: E402
from policies.stats.guardrails import guardrail_test  # noqa: E402
from policies.stats.planning import GuardrailDesign, plan_decision_sample_size  # noqa: E402
from policies.sufficient import BinaryStats  # noqa: E402
from tests.benchmarks.harness import Row, run_and_report  # noqa: E402

ALPHA = 0.05
MARGIN = 0.2


@dataclass(frozen=True)
class Config:
    quick: bool
    aa_runs: int
    aa_units: int
    decision_runs: int
    harm_reps: int
    looks: int = 50
    seed: int = 2024


def _share_row(measurement: str, share: float, runs: int, *, target: str, passed: bool, peer: float | None = None,
               peer_name: str | None = None, note: str = "") -> Row:
    mc_se = math.sqrt(max(share * (1 - share), 1e-12) / runs)
    return Row(measurement, share, "share", peer, peer_name, target, passed,
               (note + "; " if note else "") + f"{runs:,} runs, Monte Carlo s.e. {mc_se:.4f}")


def measure_user_level(config: Config) -> list[Row]:
    model = RepeatUnits(rate=0.05, concentration=2.0, mean_decisions=5.0)
    rates = aa_false_positive_rates(model, units=config.aa_units, runs=config.aa_runs,
                                    rng=np.random.default_rng(config.seed), alpha=ALPHA)
    predicted = math.erfc(1.959963984540054 / math.sqrt(2 * model.design_effect))  # 2 Phi(-z / sqrt(deff))
    return [
        _share_row("A/A false-positive rate, user level", rates.user_level, rates.runs,
                   target="in [0.035, 0.065]", passed=0.035 <= rates.user_level <= 0.065,
                   peer=rates.per_decision, peer_name="per-decision analysis of the same units",
                   note=f"{rates.units:,} units per experiment deciding 5 times on average"),
        _share_row("A/A false-positive rate, per decision", rates.per_decision, rates.runs,
                   target="> 0.065 (anti-conservative)", passed=rates.per_decision > 0.065,
                   peer=predicted, peer_name="Kish design-effect prediction",
                   note=f"design effect {model.design_effect:.2f}"),
    ]


def _scenario(unsubscribe_rate: float, purchase_ratio: float, unsubscribe_ratio: float) -> DecisionScenario:
    plan = plan_decision_sample_size(0.05, 0.10, guardrails=[GuardrailDesign("unsubscribe", unsubscribe_rate, MARGIN,
                                                                              "decrease")], alpha=ALPHA, power=0.8)
    return DecisionScenario(MetricTruth("purchase", 0.05, purchase_ratio),
                            (GuardrailTruth("unsubscribe", unsubscribe_rate, unsubscribe_ratio, MARGIN, "decrease"),),
                            plan.n_per_arm, ALPHA)


def _decide(config: Config, scenario: DecisionScenario, offset: int) -> DecisionRates:
    return simulate_decisions(scenario, runs=config.decision_runs, rng=np.random.default_rng(config.seed + offset))


DESIGNS = {"guardrail sets n": 0.01, "primary sets n": 0.02}


def measure_guardrails(config: Config) -> list[Row]:
    rows: list[Row] = []
    for k, (design, rate) in enumerate(DESIGNS.items()):
        harmed = _decide(config, _scenario(rate, 1.15, 1 + 2 * MARGIN), 10 + k)
        stopped = harmed.blocked_share or 0.0
        rows.append(_share_row(f"guardrail +40% (2x margin), {design}: winners stopped", stopped,
                               harmed.primary_wins, target=">= 0.95", passed=stopped >= 0.95,
                               note=f"n = {_scenario(rate, 1, 1).n_per_arm:,} per arm; "
                                    f"{harmed.statuses.get('guardrail_failed', 0):,} of {harmed.runs:,} "
                                    "runs end guardrail_failed"))
    for k, (design, rate) in enumerate(DESIGNS.items()):
        held = _decide(config, _scenario(rate, 1.15, 1.0), 20 + k)
        blocked = held.blocked_share or 0.0
        mc_se = math.sqrt(0.1 * 0.9 / held.primary_wins)
        binding = design == "guardrail sets n"
        rows.append(_share_row(
            f"guardrail holds, {design}: winners blocked", blocked, held.primary_wins,
            target="<= 0.10" + (" (design value; +- 2 MC s.e.)" if binding else ""),
            passed=blocked <= 0.10 + (2 * mc_se if binding else 0.0),
            note="planned miss rate beta / (G + 1) = 0.10" if binding else ""))
    for k, (design, rate) in enumerate(DESIGNS.items()):
        at_mde = _decide(config, _scenario(rate, 1.10, 1.0), 30 + k)
        ship = at_mde.shipped / at_mde.runs
        rows.append(_share_row(f"decision power at the MDE, {design}", ship, at_mde.runs, target=">= 0.80",
                               passed=ship >= 0.8, note="purchase truly +10%, guardrail holding"))
    return rows


def _ever_flagged(rng: np.random.Generator, ratio: float, *, sequential: bool, reps: int, looks: int) -> float:
    """Share of experiments whose guardrail interval ever lies beyond the margin over `looks`
    looks at 1,000 more units per arm each (unsubscribes 2% in the control)."""
    x_c = rng.binomial(1000, 0.02, size=(reps, looks)).cumsum(axis=1)
    x_t = rng.binomial(1000, 0.02 * ratio, size=(reps, looks)).cumsum(axis=1)
    flagged = 0
    for rep in range(reps):
        for look in range(looks):
            n = 1000 * (look + 1)
            if guardrail_test(BinaryStats(n, int(x_t[rep, look])), BinaryStats(n, int(x_c[rep, look])),
                              metric="unsubscribe", arm="b", margin=MARGIN, direction="decrease", alpha=ALPHA,
                              sequential=sequential).failed:
                flagged += 1
                break
    return flagged / reps


def measure_harm_test(config: Config) -> list[Row]:
    rows = []
    for k, (truth, ratio) in enumerate((("no harm", 1.0), ("variant at the margin", 1 + MARGIN))):
        sequential = _ever_flagged(np.random.default_rng(config.seed + 40 + k), ratio, sequential=True,
                                   reps=config.harm_reps, looks=config.looks)
        peeking = _ever_flagged(np.random.default_rng(config.seed + 40 + k), ratio, sequential=False,
                                reps=config.harm_reps, looks=config.looks)
        rows.append(_share_row(f"bandit harm test, {truth}: ever flagged in {config.looks} looks", sequential,
                               config.harm_reps, target=f"<= {ALPHA:g}", passed=sequential <= ALPHA, peer=peeking,
                               peer_name="fixed-horizon interval at the same looks"))
    return rows


def measure_reference(config: Config) -> list[Row]:
    rng = np.random.default_rng(config.seed + 50)
    worst = 0.0
    tables = 200 if config.quick else 2000
    for _ in range(tables):
        n_t, n_c = (int(v) for v in rng.integers(200, 100_000, 2))
        x_t, x_c = int(rng.integers(1, n_t)), int(rng.integers(1, n_c))
        ours = guardrail_test(BinaryStats(n_t, x_t), BinaryStats(n_c, x_c), metric="m", arm="b", margin=MARGIN,
                              direction="decrease").p_value
        theirs = test_proportions_2indep(x_t, n_t, x_c, n_c, value=1 + MARGIN, method="log", compare="ratio",
                                         alternative="smaller").pvalue
        worst = max(worst, abs(float(ours or 0.0) - float(theirs)))
    return [Row("non-inferiority p-value vs statsmodels, max |diff|", worst, "p", None,
                "statsmodels test_proportions_2indep(compare='ratio', method='log')", "<= 1e-12",
                worst <= 1e-12, f"{tables:,} random tables")]


MEASUREMENTS: list[Callable[[Config], list[Row]]] = [measure_user_level, measure_guardrails, measure_harm_test,
                                                     measure_reference]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs: a smoke run in well under a minute")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "bench_metrics_sim.json")
    args = parser.parse_args(argv)
    config = (Config(True, 500, 2000, 1000, 100) if args.quick else Config(False, 4000, 5000, 20_000, 1000))
    return run_and_report(MEASUREMENTS, config, name="metrics_sim", script="bench_metrics_sim.py", out=args.out,
                          packages=("numpy", "scipy", "statsmodels"))


if __name__ == "__main__":
    raise SystemExit(main())
