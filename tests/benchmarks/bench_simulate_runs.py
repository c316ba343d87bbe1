"""`crosspromo simulate --runs`: its runtime, and the repeated-reading figures of today's verdict rules.

    python tests/benchmarks/bench_simulate_runs.py [--quick] [--runs N] [--only ab|bandit|floored ...]
                                                   [--out FILE.json]

Prints a table and writes JSON (default `bench-results/bench_simulate_runs.json`). Every figure
comes from `policies.simulation.runs.simulate_runs` read by `engine.simulation.look_reader`, i.e.
the report's own verdict code read at every look (as `crosspromo simulate --runs`):

- A/B test, two equal arms at 5% (A/A), 50/50 split, alpha 0.05, MDE 10% relative, fixed
  horizon: read once at the planned sample (the false-winner share should be about alpha), and
  read at 20 looks up to it (peeking: the fixed-horizon verdict is final once the plan is
  reached, so peeking before it only matters through the plan moving with the observed rate).
- Bandit (Thompson, Beta(1, 1), no floor, weights refreshed every 500 exposures: the defaults,
  read on pooled counts), three equal arms at 5%, read every 1,000 exposures up to 20,000: the
  share of runs that ever show a winner (issue 12: 10-11% on independent posteriors, target
  <= 5%). The peer is the rule before partial pooling, measured on the same simulated runs (the
  same seed draws the same outcomes): independent posteriors per arm (`posterior_summaries`),
  winner at the first look where `prob_best` >= 0.95.
- The same bandit with a true 20% relative gap (5%, 5%, 6%), read every 1,000 exposures up to
  40,000: the median exposures to the call over the runs that call, and that median over all
  runs (a run that never calls counts as later than every call), against the peer's (target:
  ratio <= 1.5).
- The same two designs with a 5% floor (`min_weight: 0.05`), read on the weight-corrected
  estimates.
- The runtime of 1,000 runs x 20 looks, A/B and bandit, as CPU time of this process (what one
  idle core would take; wall time on a shared machine says little). With `--runs N` it is
  measured on N runs and scaled to 1,000.

`--quick` is a smoke run (200 runs) whose figures are not the reported ones. `--only` runs some
measurements (e.g. in parallel processes).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script: make `engine` importable

import numpy as np  # noqa: E402

from engine.loader import parse_spec  # noqa: E402
from engine.report import analysis_config  # noqa: E402
from engine.simulation import (  # noqa: E402
    SIMULATION_DRAWS,
    default_exposures,
    design_of,
    look_reader,
    run_many,
)
from engine.spec import ExperimentSpec  # noqa: E402
from policies.simulation.bandits import Truth  # noqa: E402
from policies.simulation.runs import (  # noqa: E402
    Look,
    Reader,
    RunPlan,
    RunResult,
    RunsSummary,
    best_arms,
    simulate_runs,
    summarise,
)
from policies.stats.bayesian import posterior_summaries  # noqa: E402
from policies.stats.verdicts import Verdict, bandit_verdict  # noqa: E402
from tests.benchmarks.harness import Row, run_and_report, versus  # noqa: E402

AB = """\
schema: 1
key: aa-test
name: A/A test
owner: growth@example.com
kind: ab_test
metric: {name: purchase, type: binary}
arms:
  - {key: control, campaign: a, partner: p, channel: email, weight: 0.5}
  - {key: variant, campaign: a, partner: p, channel: email, weight: 0.5}
analysis: {control: control, alpha: 0.05, power: 0.8, mde: 0.10, sequential: false}
"""

BANDIT = """\
schema: 1
key: three-arms
name: Three-arm bandit
owner: growth@example.com
kind: bandit
policy: {name: thompson, prior: {alpha: 1, beta: 1}, update: {every_outcomes: 500}}
metric: {name: purchase, type: binary}
arms:
  - {key: first, campaign: a, partner: p, channel: email}
  - {key: second, campaign: a, partner: p, channel: email}
  - {key: third, campaign: a, partner: p, channel: email}
analysis: {control: first}
"""


@dataclass(frozen=True)
class Config:
    quick: bool
    runs: int
    seed: int = 12


def _run(config: Config, spec: ExperimentSpec, truth: Truth, exposures: int, look_every: int,
         offset: int) -> tuple[RunsSummary, float]:
    started = time.process_time()
    report = run_many(spec, truth, RunPlan(config.runs, exposures, look_every), config.seed + offset)
    return report.summary, time.process_time() - started


def _share(measurement: str, s: RunsSummary, target: str | None = None, passed: bool | None = None,
           note: str = "") -> Row:
    return Row(measurement, s.ever_winner_share, "share", target=target, passed=passed,
               note=f"{s.runs:,} runs, {s.looks} looks of {s.look_every:,} up to {s.exposures:,} exposures, "
                    f"Monte Carlo s.e. {s.ever_winner_share_se:.4f}" + (f"; {note}" if note else ""))


def _seconds(measurement: str, seconds: float, runs: int) -> Row:
    per_1000 = seconds / runs * 1000
    return Row(measurement, per_1000, "CPU s", target="<= 300 s (a few minutes, one core)", passed=per_1000 <= 300,
               note=f"CPU time of {runs:,} runs x 20 looks, scaled to 1,000 runs; {seconds / runs * 1000:.0f} ms "
                    "per run")


def measure_ab(config: Config) -> list[Row]:
    spec, truth = parse_spec(AB), Truth((0.05, 0.05))
    planned = default_exposures(spec, truth)
    once, _ = _run(config, spec, truth, planned, planned, 0)
    peeking, seconds = _run(config, spec, truth, planned, -(-planned // 20), 1)
    return [
        _share("A/B A/A, fixed horizon read once at the plan: false winners", once, "in [0.035, 0.065] (alpha)",
               0.035 <= once.ever_winner_share <= 0.065),
        _share("A/B A/A, fixed horizon read at 20 looks: false winners", peeking,
               note="today's rules (the plan moves with the observed control rate)"),
        _seconds("A/B runtime, 20 looks", seconds, config.runs),
    ]


BANDIT_SPEC = parse_spec(BANDIT)
FLOORED_SPEC = parse_spec(BANDIT.replace("update:", "min_weight: 0.05, update:"))
EQUAL, GAP = Truth((0.05, 0.05, 0.05)), Truth((0.05, 0.05, 0.06))


def independent_reader(spec: ExperimentSpec) -> Callable[[np.random.Generator], Reader]:
    """The peer: the rule before partial pooling, on pooled counts (module doc)."""
    config = analysis_config(spec)

    def new_reader(rng: np.random.Generator) -> Reader:
        def read(look: Look) -> Verdict:
            posteriors = posterior_summaries(look.stats, rng=rng, draws=SIMULATION_DRAWS)
            return bandit_verdict(spec.arm_keys, [s.n for s in look.stats], [p.prob_best for p in posteriors],
                                  prob_best_threshold=config.prob_best_threshold,
                                  min_sample_per_arm=config.min_sample_per_arm)
        return read
    return new_reader


def _runs(config: Config, spec: ExperimentSpec, truth: Truth, exposures: int, offset: int,
          reader: Callable[[np.random.Generator], Reader]) -> tuple[RunsSummary, list[RunResult], float]:
    """`config.runs` runs read every 1,000 exposures by `reader`; the same offset simulates the same runs."""
    plan = RunPlan(config.runs, exposures, 1000)
    started = time.process_time()
    results = simulate_runs(spec.arm_keys, design_of(spec), truth, plan, reader,
                            np.random.default_rng(config.seed + offset))
    seconds = time.process_time() - started
    return summarise(results, plan, len(spec.arms), best_arms(truth)), results, seconds


def _median_all(results: list[RunResult], exposures: int) -> float:
    """The median exposures to a call over all runs; a run without a call counts as later than any."""
    return float(np.median([r.call_at if r.call_at is not None else exposures + 1 for r in results]))


def _bandit_rows(config: Config, spec: ExperimentSpec, label: str, offset: int, peer: bool) -> list[Row]:
    equal, _, seconds = _runs(config, spec, EQUAL, 20_000, offset, look_reader(spec))
    gap, gap_runs, _ = _runs(config, spec, GAP, 40_000, offset + 1, look_reader(spec))
    false_calls = _share(f"bandit{label}, 3 equal arms read every 1,000 to 20,000: ever a winner", equal,
                         "<= 0.05 (issue 12)", equal.ever_winner_share <= 0.05)
    note = (f"{gap.ever_winner_share:.1%} of {gap.runs:,} runs call within {gap.exposures:,} (read every 1,000), "
            f"{gap.wrong_winner_share:.1%} a wrong arm")
    call = f"bandit{label}, 20% gap: median exposures to the call"
    runtime = _seconds(f"bandit{label} runtime, 20 looks", seconds, config.runs)
    if not peer:
        return [false_calls, Row(call, gap.median_exposures_to_call or float("nan"), "exposures", note=note), runtime]
    peer_equal, _, _ = _runs(config, spec, EQUAL, 20_000, offset, independent_reader(spec))
    peer_gap, peer_gap_runs, _ = _runs(config, spec, GAP, 40_000, offset + 1, independent_reader(spec))
    return [
        replace(false_calls, peer=peer_equal.ever_winner_share, peer_name="independent posteriors"),
        versus(f"{call} (runs that call)", gap.median_exposures_to_call or float("nan"),
               peer_gap.median_exposures_to_call or float("nan"), "exposures", "independent posteriors",
               max_ratio=1.5, note=f"{note}; independent posteriors: {peer_gap.ever_winner_share:.1%} call"),
        versus(f"{call} (all runs)", _median_all(gap_runs, 40_000), _median_all(peer_gap_runs, 40_000), "exposures",
               "independent posteriors", note="40,001 = no call within 40,000"),
        runtime,
    ]


def measure_bandit(config: Config) -> list[Row]:
    return _bandit_rows(config, BANDIT_SPEC, "", 2, peer=True)


def measure_floored(config: Config) -> list[Row]:
    return _bandit_rows(config, FLOORED_SPEC, " (min_weight 0.05)", 4, peer=False)


MEASUREMENTS = {"ab": measure_ab, "bandit": measure_bandit, "floored": measure_floored}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 runs: a smoke run")
    parser.add_argument("--runs", type=int, default=1000, help="runs per measurement (>= 1,000 for the figures)")
    parser.add_argument("--only", nargs="+", choices=sorted(MEASUREMENTS), default=list(MEASUREMENTS))
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "bench_simulate_runs.json")
    args = parser.parse_args(argv)
    config = Config(True, 200) if args.quick else Config(False, args.runs)
    return run_and_report([MEASUREMENTS[name] for name in args.only], config, name="simulate_runs",
                          script="bench_simulate_runs.py", out=args.out, packages=("numpy", "scipy", "statsmodels"))


if __name__ == "__main__":
    raise SystemExit(main())
