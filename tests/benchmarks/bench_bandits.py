"""Bandit benchmark: decision speed and regret of our policies, with MABWiser measured in the
same run on the same machine.

    python tests/benchmarks/bench_bandits.py [--quick] [--out FILE.json]

Prints a table and writes JSON (default `bench-results/bench_bandits.json`). Each row is
one measurement: our figure, the peer's (MABWiser 2.x, or plain numpy as a reference), the
ratio ours / peer, and the target from the bandit issue. The full run takes a few minutes;
`--quick` uses 5 seeds and 20,000 users per run and finishes in well under a minute (its
regret figures are a smoke test, not the reported ones).

Fairness of the regret comparison with MABWiser:
- both refresh every `users / 100` decisions (1,000 in the full run): MABWiser is
  `partial_fit` on each block and `predict`s the next block with one context row per
  decision, which draws a fresh Beta sample per arm per decision and takes the argmax;
  ours draws each decision from the cached P(best) weights. These have the same law.
- same Beta(1, 1) prior (MABWiser's counters start at 1), no weight floor (`min_weight=0`);
  MABWiser needs data before its first prediction, so its first block is uniform, which is
  what a Beta(1, 1) prior gives ours too.
- same users: for seed s both face `potential_outcomes(truth, users,
  default_rng(s).spawn(2)[0])` (common random numbers).
Regret is expected (pseudo-)regret: the sum over decisions of best mean - chosen arm's mean.

The non-stationary testbed swaps the best and the worst arm halfway. The discounted policy
uses gamma = 0.95 per refresh: a memory of about 1 / (1 - gamma) = 20 refreshes (20,000
decisions in the full run, half-life about 14,000), long enough to separate 0.5 from 0.4
among ten arms and short compared with the 50,000-decision phases.

To add a row (e.g. the engine's decide path), write `def measure_x(config: Config) ->
list[Row]` and append it to `MEASUREMENTS`.
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script: make `policies` importable

from mabwiser.mab import MAB, LearningPolicy  # noqa: E402

from policies.bandits.choice import choose_arm, draw_arms, draw_arms_per_unit  # noqa: E402
from policies.bandits.epsilon_greedy import EpsilonGreedy  # noqa: E402
from policies.bandits.registry import Policy  # noqa: E402
from policies.bandits.thompson import ThompsonSampling  # noqa: E402
from policies.simulation.bandits import Truth, TruthChange, potential_outcomes, simulate, swap_best_worst  # noqa: E402
from policies.sufficient import BinaryStats  # noqa: E402
from tests.benchmarks.harness import Row, run_and_report, versus  # noqa: E402

ARMS = 10
SETTINGS = {"others 0.40": Truth((0.5,) + (0.4,) * (ARMS - 1)), "others 0.48": Truth((0.5,) + (0.48,) * (ARMS - 1))}
DISCOUNT = 0.95
BATCH = 1_000_000


@dataclass(frozen=True)
class Config:
    quick: bool
    seeds: int
    users: int
    repeats: int  # timing repeats; the median is reported

    @property
    def update_every(self) -> int:
        return self.users // 100


def median_seconds(call: Callable[[], object], number: int, repeats: int) -> float:
    """Median over `repeats` of the mean time of one call over `number` calls."""
    call()  # warm up
    return float(np.median(timeit.repeat(call, number=number, repeat=repeats)) / number)


def fitted_data(rng: np.random.Generator, rows: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    rates = np.linspace(0.02, 0.08, ARMS)
    decisions = rng.integers(ARMS, size=rows)
    return decisions, (rng.random(rows) < rates[decisions]).astype(int)


def fitted_weights(decisions: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    stats = [BinaryStats(int(np.sum(decisions == k)), int(rewards[decisions == k].sum())) for k in range(ARMS)]
    return ThompsonSampling().weights(stats, np.random.default_rng(0))


def fitted_mabwiser(decisions: np.ndarray, rewards: np.ndarray, seed: int = 0) -> MAB:
    mab = MAB(list(range(ARMS)), LearningPolicy.ThompsonSampling(), seed=seed)
    mab.fit(decisions, rewards)
    return mab


def measure_one_decision(config: Config) -> list[Row]:
    decisions, rewards = fitted_data(np.random.default_rng(1))
    weights = fitted_weights(decisions, rewards)
    mask = np.ones(ARMS, dtype=bool)
    mask[3] = False  # a unit not opted into one arm's channel
    rng = np.random.default_rng(2)
    ours = median_seconds(lambda: choose_arm(weights, mask, rng), 20_000, config.repeats)
    mab = fitted_mabwiser(decisions, rewards)
    peer = median_seconds(mab.predict, 5_000, config.repeats)
    stats = [BinaryStats(int(np.sum(decisions == k)), int(rewards[decisions == k].sum())) for k in range(ARMS)]
    policy = ThompsonSampling()
    refresh = median_seconds(lambda: policy.weights(stats, rng), 20, config.repeats)
    return [
        versus(
            "one decision, 10 arms",
            ours * 1e6,
            peer * 1e6,
            "us",
            "MABWiser TS predict()",
            max_ratio=0.5,
            note="ours: choose_arm on cached TS weights with an eligibility mask, propensity included",
        ),
        Row(
            "TS weight refresh, 10 arms",
            refresh * 1e3,
            "ms",
            note="P(best) by quadrature, once per refresh and amortised over the decisions until the next",
        ),
    ]


def measure_batch(config: Config) -> list[Row]:
    decisions, rewards = fitted_data(np.random.default_rng(1))
    weights = fitted_weights(decisions, rewards)
    rng = np.random.default_rng(3)
    ours = BATCH / median_seconds(lambda: draw_arms(weights, rng, BATCH), 1, config.repeats)

    def plain_numpy() -> np.ndarray:
        return np.searchsorted(np.cumsum(weights), rng.random(BATCH), side="right")

    reference = BATCH / median_seconds(plain_numpy, 1, config.repeats)
    masks = np.random.default_rng(4).random((BATCH, ARMS)) < 0.8
    masks[:, 0] = True
    per_unit = BATCH / median_seconds(lambda: draw_arms_per_unit(weights, masks, rng), 1, config.repeats)
    contexts = np.zeros((BATCH // 50, 1))
    mab = fitted_mabwiser(decisions, rewards)
    peer = len(contexts) / median_seconds(lambda: mab.predict(contexts), 1, min(config.repeats, 3))
    return [
        Row(
            "batch of 1,000,000 decisions",
            ours,
            "decisions/s",
            reference,
            "plain numpy searchsorted",
            "ours >= 1,000,000/s",
            ours >= 1_000_000,
            note="draw_arms on cached weights",
        ),
        Row(
            "batch of 1,000,000, per-unit masks",
            per_unit,
            "decisions/s",
            reference,
            "plain numpy searchsorted (no masks)",
            "ours >= 1,000,000/s",
            per_unit >= 1_000_000,
            note="draw_arms_per_unit: (units x arms) eligibility mask, rows renormalised, propensities returned",
        ),
        versus(
            "batch decisions vs MABWiser",
            ours,
            peer,
            "decisions/s",
            "MABWiser TS predict(contexts)",
            note=f"MABWiser timed on {len(contexts):,} contexts (one decision each)",
        ),
    ]


def run_ours(
    policy: Policy, truth: Truth, config: Config, seed: int, update_every: int, drift: tuple[TruthChange, ...] = ()
) -> float:
    result = simulate(
        policy,
        truth,
        config.users,
        np.random.default_rng(seed),
        update_every=update_every,
        drift=drift,
        history_points=0,
    )
    return result.total_regret


def run_mabwiser(truth: Truth, config: Config, seed: int) -> float:
    """MABWiser TS fitted online in blocks of `update_every`, against the same users as ours."""
    users, block = config.users, config.update_every
    outcomes = np.concatenate([t for _, t in potential_outcomes(truth, users, np.random.default_rng(seed).spawn(2)[0])])
    played = np.empty(users, dtype=np.intp)
    played[:block] = np.random.default_rng(seed).integers(ARMS, size=block)
    mab = MAB(list(range(ARMS)), LearningPolicy.ThompsonSampling(), seed=seed)
    mab.fit(played[:block], outcomes[np.arange(block), played[:block]])
    for start in range(block, users, block):
        stop = min(start + block, users)
        played[start:stop] = mab.predict(np.zeros((stop - start, 1)))
        mab.partial_fit(played[start:stop], outcomes[np.arange(start, stop), played[start:stop]])
    return float(np.sum(truth.expected.max() - truth.expected[played]))


@cache
def regret_runs(config: Config, setting: str) -> dict[str, np.ndarray]:
    """Total regret per seed of every contender on one stationary testbed."""
    truth = SETTINGS[setting]
    ts = ThompsonSampling(min_weight=0.0)
    runs: dict[str, list[float]] = {"ts": [], "ts_online": [], "mabwiser": [], "epsilon_greedy": []}
    for seed in range(config.seeds):
        runs["ts"].append(run_ours(ts, truth, config, seed, config.update_every))
        runs["ts_online"].append(run_ours(ts, truth, config, seed, 1))
        runs["mabwiser"].append(run_mabwiser(truth, config, seed))
        if setting == "others 0.40":
            runs["epsilon_greedy"].append(
                run_ours(EpsilonGreedy(epsilon=0.1), truth, config, seed, config.update_every)
            )
    return {name: np.array(values) for name, values in runs.items() if values}


def summary(values: np.ndarray) -> str:
    return f"{values.mean():.0f} ± {values.std(ddof=1) / np.sqrt(values.size):.0f} (mean ± s.e.)"


def regret_row(
    measurement: str, testbed: str, ours: np.ndarray, peer: np.ndarray, peer_name: str, max_ratio: float
) -> Row:
    note = f"{testbed}; ours {summary(ours)}, peer {summary(peer)}"
    return versus(
        measurement, float(ours.mean()), float(peer.mean()), "regret", peer_name, max_ratio=max_ratio, note=note
    )


def measure_regret(config: Config) -> list[Row]:
    every = f"refreshed every {config.update_every:,}"
    rows = []
    for setting, truth in SETTINGS.items():
        runs = regret_runs(config, setting)
        short = f"0.5 vs {truth.rates[1]:.2f}"
        testbed = f"K=10, best 0.5, {setting}, T={config.users:,}, {config.seeds} seeds, {every}"
        rows.append(
            regret_row(f"regret {short}: TS vs MABWiser TS", testbed, runs["ts"], runs["mabwiser"], "MABWiser TS", 1.05)
        )
        if "epsilon_greedy" in runs:
            rows.append(
                regret_row(
                    f"regret {short}: TS vs eps-greedy 0.1",
                    testbed,
                    runs["ts"],
                    runs["epsilon_greedy"],
                    "our epsilon-greedy",
                    0.3,
                )
            )
        rows.append(
            regret_row(
                f"regret {short}: TS batched vs online",
                testbed,
                runs["ts"],
                runs["ts_online"],
                "our TS, fully online",
                1.25,
            )
        )
    return rows


def measure_nonstationary(config: Config) -> list[Row]:
    truth = SETTINGS["others 0.40"]
    drift = (TruthChange(config.users // 2, swap_best_worst(truth)),)
    discounted, stationary = [], []
    for seed in range(config.seeds):
        discounted.append(
            run_ours(ThompsonSampling(discount=DISCOUNT), truth, config, seed, config.update_every, drift)
        )
        stationary.append(run_ours(ThompsonSampling(), truth, config, seed, config.update_every, drift))
    testbed = (
        f"best and worst arm swap at T/2, K=10, 0.5 vs 0.40, T={config.users:,}, {config.seeds} seeds,"
        f" refreshed every {config.update_every:,}, gamma {DISCOUNT} per refresh"
    )
    return [
        regret_row(
            "regret with drift: discounted vs stationary TS",
            testbed,
            np.array(discounted),
            np.array(stationary),
            "our TS, stationary",
            0.5,
        )
    ]


def measure_engine_decide(config: Config) -> list[Row]:
    """`Engine.decide` end to end on the shipped Thompson experiment: hash, eligibility, draw,
    exposure buffered and written in batches of 500 to a SQLite file (flushes included)."""
    import tempfile

    from engine.api import Engine

    calls = 5_000 if config.quick else 50_000
    with tempfile.TemporaryDirectory() as tmp, Engine.open(f"sqlite:///{tmp}/bench.db", seed=0) as engine:
        engine.apply([REPO / "experiments" / "art-training-crosspromo.yaml"])
        context = {"opted_in": ["email", "push", "in_app"]}
        latencies = np.empty(calls)
        for i in range(calls):
            started = time.perf_counter_ns()
            engine.decide("art-training-crosspromo", f"user-{i}", context)
            latencies[i] = time.perf_counter_ns() - started
    p50, p99 = np.percentile(latencies, [50, 99]) / 1000
    note = f"{calls:,} calls with exposure logging to SQLite (batches of 500)"
    return [Row("Engine.decide, p50", float(p50), "us", note=note), Row("Engine.decide, p99", float(p99), "us")]


MEASUREMENTS: list[Callable[[Config], list[Row]]] = [
    measure_engine_decide,
    measure_one_decision,
    measure_batch,
    measure_regret,
    measure_nonstationary,
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 seeds, 20,000 users: a smoke run under a minute")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench-results" / "bench_bandits.json", help="JSON output file"
    )
    args = parser.parse_args(argv)
    config = (
        Config(quick=True, seeds=5, users=20_000, repeats=3)
        if args.quick
        else Config(quick=False, seeds=20, users=100_000, repeats=7)
    )
    return run_and_report(MEASUREMENTS, config, name="bandits", script="bench_bandits.py", out=args.out,
                          packages=("numpy", "scipy", "mabwiser"), update_every=config.update_every)


if __name__ == "__main__":
    raise SystemExit(main())
