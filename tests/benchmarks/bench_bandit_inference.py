"""Bandit inference under repeated reading and drifting weights, by simulation against a known truth.

    python tests/benchmarks/bench_bandit_inference.py [--quick] [--runs N] [--draws D] [--out FILE.json]

Prints a table and writes JSON (default `bench-results/bench_bandit_inference.json`). Setup of
the bandit rows: three arms, base rate 5%, Thompson sampling as declared by default (prior
Beta(1, 1), no weight floor) refreshing its weights every 1,000 decisions (the default
`update.every_outcomes`; `--min-weight` sets a floor), the report read every 1,000 exposures.
Each run is logged as the engine logs it (`policies.simulation.bandit_reads.logged_run`) and
read with the report's code (`read_at_looks`: `analyze` on the per-arm propensity sums).

- False winner share: three equal arms, 20,000 exposures per run; the share of runs that show
  `winner` at some look.
  Today's rule (the report before this change: pooled counts, highest prob_best >= 0.95 and
  100 exposures per arm) is the peer; target <= 0.05 for the report's rule.
- Exposures to a call: the best arm 20% better than the next (6% against 5% and 5%); the
  median over runs of the exposures at the first `winner`, read up to 40,000 exposures (runs
  that never call count as beyond it), report's rule against today's: target ratio <= 1.5.
- Simpson: the base rate falls from 10% to 2% halfway while the weights move from 80/20 to
  20/80; arm B converts 10% better than A in both halves. The share of runs in which B is
  estimated below A, and the mean absolute error of the estimated B - A against its truth
  (+0.6 points, the two halves weighted equally), pooled counts against the corrected
  estimates (`ipw_estimate`).

Posterior probabilities use `--draws` Monte Carlo draws per look (2,000 by default, standard
error <= 0.005 at prob_best 0.95; the report uses 20,000).
`--quick` is a smoke run and its figures are not the reported ones.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script: make `policies` importable

from policies.bandits.thompson import ThompsonSampling  # noqa: E402
from policies.simulation.bandit_reads import LoggedRun, logged_run, read_at_looks  # noqa: E402
from policies.simulation.bandits import Truth  # noqa: E402
from policies.stats.analysis import Analysis, AnalysisConfig  # noqa: E402
from policies.stats.bandit_inference import ipw_estimate, propensity_sums  # noqa: E402
from tests.benchmarks.harness import Row, run_and_report  # noqa: E402

ARMS = ("a", "b", "c")
USERS = 20_000
HORIZON = 40_000  # the 20% gap is read on past 20,000 exposures, so a median beyond it is measured
EQUAL = Truth((0.05, 0.05, 0.05))
GAP = Truth((0.06, 0.05, 0.05))


@dataclass(frozen=True)
class Config:
    quick: bool
    runs: int
    draws: int
    workers: int
    min_weight: float


def _today(analysis: Analysis, config: AnalysisConfig) -> str | None:
    """The rule before this change, on pooled counts: a winner when the highest prob_best is
    >= the threshold and every arm has the minimum sample."""
    rows = analysis.arms
    best = max(rows, key=lambda r: r.prob_best or 0.0)
    enough = min(r.exposures for r in rows) >= config.min_sample_per_arm
    return best.arm if enough and (best.prob_best or 0.0) >= config.prob_best_threshold else None


def _first_call(run: LoggedRun, config: AnalysisConfig, rng: np.random.Generator,
                corrected: bool) -> tuple[int | None, str | None]:
    """(exposures, arm) at the first look (every 1,000) that shows a winner, (None, None) if none does."""
    for n in range(1000, run.arms.size + 1, 1000):
        analysis = read_at_looks(run, ARMS, [n], config, rng, corrected=corrected)[0]
        winner = analysis.verdict.winner if corrected else _today(analysis, config)
        if corrected and analysis.verdict.status != "winner":
            winner = None
        if winner is not None:
            return n, winner
    return None, None


def _one_run(args: tuple[Truth, np.random.SeedSequence, int, float]) -> tuple[tuple, tuple]:
    truth, seed, draws, min_weight = args
    rng = np.random.default_rng(seed)
    users = USERS if truth is EQUAL else HORIZON
    run = logged_run(ThompsonSampling(min_weight=min_weight), truth, users, rng, update_every=1000)
    config = AnalysisConfig(draws=draws)
    return _first_call(run, config, rng, corrected=False), _first_call(run, config, rng, corrected=True)


def _calls(config: Config, truth: Truth, seed: int) -> tuple[list[tuple], list[tuple]]:
    jobs = [(truth, s, config.draws, config.min_weight) for s in np.random.SeedSequence(seed).spawn(config.runs)]
    with ProcessPoolExecutor(config.workers) as pool:
        results = list(pool.map(_one_run, jobs, chunksize=4))
    return [r[0] for r in results], [r[1] for r in results]


def _ever(calls: list[tuple]) -> float:
    return float(np.mean([n is not None for n, _ in calls]))


def _median(calls: list[tuple]) -> float:
    return float(np.median([np.inf if n is None else n for n, _ in calls]))


def measure_false_winners(config: Config) -> list[Row]:
    today, ours = _calls(config, EQUAL, 11)
    share, peer = _ever(ours), _ever(today)
    return [Row("false winner share, 3 equal arms, 20 looks", share, "share of runs", peer, "today's rule",
                "<= 0.05", share <= 0.05, f"{config.runs} runs; today's rule (pooled, prob_best only) is the peer")]


def measure_true_winner(config: Config) -> list[Row]:
    today, ours = _calls(config, GAP, 12)
    ours_median, today_median = _median(ours), _median(today)
    ratio = ours_median / today_median
    wrong = float(np.mean([arm not in (None, "a") for _, arm in ours]))
    return [
        Row("median exposures to call, 20% gap", ours_median, "exposures", today_median, "today's rule",
            "ratio <= 1.5", ratio <= 1.5, f"{config.runs} runs; ever called: ours {_ever(ours):.3f}, "
            f"today {_ever(today):.3f}; Thompson min_weight {config.min_weight:g}; "
            "never called counts as beyond 40,000"),
        Row("wrong winner share, 20% gap", wrong, "share of runs", float(np.mean([a not in (None, "a")
                                                                                 for _, a in today])),
            "today's rule"),
    ]


def _simpson_run(rng: np.random.Generator, n: int = 20_000) -> tuple[float, float]:
    """(pooled, corrected) estimate of B - A in one drifting run."""
    half = np.arange(n) >= n // 2
    base = np.where(half, 0.02, 0.10)
    p_b = np.where(half, 0.8, 0.2)
    arms = (rng.random(n) < p_b).astype(np.intp)
    propensity = np.where(arms == 1, p_b, 1.0 - p_b)
    y = (rng.random(n) < base * np.where(arms == 1, 1.1, 1.0)).astype(float)
    pooled = y[arms == 1].mean() - y[arms == 0].mean()
    a, b = (ipw_estimate(s) for s in propensity_sums(arms, propensity, y, 2))
    assert a is not None and b is not None
    return float(pooled), b.mean - a.mean


def measure_simpson(config: Config) -> list[Row]:
    rng = np.random.default_rng(13)
    estimates = np.array([_simpson_run(rng) for _ in range(config.runs)])
    truth = (0.10 * 1.1 + 0.02 * 1.1) / 2 - (0.10 + 0.02) / 2
    reversed_share = (estimates < 0).mean(axis=0)
    error = np.abs(estimates - truth).mean(axis=0)
    return [
        Row("Simpson: B estimated below A", float(reversed_share[1]), "share of runs", float(reversed_share[0]),
            "pooled counts", "<= 0.5 (pooled: ~1)", bool(reversed_share[1] <= 0.5),
            f"{config.runs} runs; truth B - A = +{truth:.4f}"),
        Row("Simpson: mean |error| of B - A", float(error[1]), "rate", float(error[0]), "pooled counts",
            "< pooled", bool(error[1] < error[0])),
    ]


MEASUREMENTS: list[Callable[[Config], list[Row]]] = [measure_simpson, measure_false_winners, measure_true_winner]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few runs: a smoke run")
    parser.add_argument("--runs", type=int, default=None, help="runs per scenario (default 1,000; 40 with --quick)")
    parser.add_argument("--draws", type=int, default=2000, help="posterior draws per look")
    parser.add_argument("--workers", type=int, default=2, help="processes")
    parser.add_argument("--min-weight", type=float, default=0.0, help="Thompson's weight floor (declared default 0)")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "bench_bandit_inference.json")
    args = parser.parse_args(argv)
    runs = args.runs or (40 if args.quick else 1000)
    config = Config(args.quick, runs, args.draws, args.workers, args.min_weight)
    return run_and_report(MEASUREMENTS, config, name="bandit_inference", script="bench_bandit_inference.py",
                          out=args.out, packages=("numpy", "scipy", "statsmodels"))


if __name__ == "__main__":
    raise SystemExit(main())
