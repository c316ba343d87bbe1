"""Benchmark of the A/B test's inference: false positives, peeking and power, fixed and sequential.

    python tests/benchmarks/bench_inference.py [--quick] [--out FILE.json]

Prints a table and writes JSON (default `bench-results/bench_inference.json`). Each row comes
from a small function; further rows can be appended to MEASUREMENTS. Two designs, alpha 0.05,
power 0.8, MDE +10% relative, with declared planning baselines:

- binary: conversion 5%;
- revenue: 5% of exposures convert, each with a lognormal value (mean 20, log-sd 1), so the mean
  per exposure is 1.0 and its sd follows from the lognormal's moments.

Rows per design: the A/A false-positive rate of the fixed-horizon test read once at its planned
n, of the same test read at 30 equally spaced looks up to it (peeking), and of the sequential
test read at 30 looks up to the sequential planned n; the power at the MDE of the fixed test at
its planned n and of the sequential test over its 30 looks; the ratio sequential n / fixed n.

Runs are simulated on sufficient statistics: per run, arm and look the new exposures' conversion
count is binomial, and for revenue the sum and sum of squares of that many lognormal values.
Every look is decided by the functions `policies.stats.analysis.analyze` calls (`msprt_p_values`,
the vectorised core of `msprt_test`, with the tau of `sequential_tau`; `two_proportion_test`
and `welch_test` at a fixed horizon) with two arms, where the Holm-adjusted p-value is the raw
one and `winner` means p < alpha. A sample of the decided looks is re-decided by `analyze`
itself, and the row "looks where analyze disagrees" must be 0. `--quick` is a smoke run.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script: make `policies` importable

from policies.stats.analysis import AnalysisConfig, analyze, sequential_tau  # noqa: E402
from policies.stats.frequentist import two_proportion_test, welch_test  # noqa: E402
from policies.stats.planning import plan_binary_sample_size, plan_mean_sample_size  # noqa: E402
from policies.stats.sequential import msprt_p_values  # noqa: E402
from policies.stats.sequential_planning import plan_sequential_sample_size  # noqa: E402
from policies.sufficient import BinaryStats, MeanStats  # noqa: E402
from tests.benchmarks.harness import Row, run_and_report  # noqa: E402

ALPHA, POWER, MDE, LOOKS = 0.05, 0.8, 0.10, 30
RATE, VALUE_MEAN, VALUE_LOG_SD = 0.05, 20.0, 1.0
CHECKED_LOOKS = 40  # looks per scenario re-decided by `analyze`


@dataclass(frozen=True)
class Config:
    quick: bool = False
    runs: int = 2000
    seed: int = 20171


@dataclass(frozen=True)
class Design:
    """A metric to simulate: `revenue` adds lognormal values to the conversions."""

    name: str
    revenue: bool

    @property
    def baseline(self) -> float:
        return RATE * VALUE_MEAN if self.revenue else RATE

    @property
    def sd(self) -> float | None:
        """Per-exposure sd of revenue: E[V^2] = mean^2 exp(log-sd^2) for a lognormal value."""
        if not self.revenue:
            return None
        second_moment = RATE * VALUE_MEAN**2 * math.exp(VALUE_LOG_SD**2)
        return math.sqrt(second_moment - self.baseline**2)

    def analysis(self, sequential: bool) -> AnalysisConfig:
        return AnalysisConfig(metric_type="revenue" if self.revenue else "binary", alpha=ALPHA, power=POWER,
                              mde=MDE, sequential=sequential, baseline=self.baseline, baseline_sd=self.sd,
                              sequential_looks=LOOKS, draws=1)

    def fixed_n(self) -> int:
        if self.revenue:
            return plan_mean_sample_size(self.baseline, self.sd, MDE, alpha=ALPHA, power=POWER).n_per_arm
        return plan_binary_sample_size(self.baseline, MDE, alpha=ALPHA, power=POWER).n_per_arm

    def sequential_n(self) -> int:
        return plan_sequential_sample_size(self.baseline, MDE, std=self.sd, alpha=ALPHA, power=POWER,
                                           looks=LOOKS).n_per_arm


DESIGNS = (Design("binary 5%", False), Design("revenue", True))


@dataclass(frozen=True)
class Paths:
    """Cumulative sufficient statistics of each run (rows) at each look (columns), per arm."""

    n: np.ndarray  # exposures per arm at each look, shape (looks,)
    successes: tuple[np.ndarray, np.ndarray]  # treatment, control
    total: tuple[np.ndarray, np.ndarray]
    total_sq: tuple[np.ndarray, np.ndarray]

    def stats(self, arm: int, run: int, look: int, revenue: bool) -> BinaryStats | MeanStats:
        n = int(self.n[look])
        if revenue:
            return MeanStats(n, float(self.total[arm][run, look]), float(self.total_sq[arm][run, look]))
        return BinaryStats(n, int(self.successes[arm][run, look]))


def _arm(rng: np.random.Generator, runs: int, new: np.ndarray, rate: float, revenue: bool) -> tuple[np.ndarray, ...]:
    """Cumulative conversions, value sums and sums of squares of one arm, (runs, looks) each."""
    counts = rng.binomial(new[None, :], rate, size=(runs, new.size))
    if not revenue:
        return counts.cumsum(axis=1), counts.cumsum(axis=1), counts.cumsum(axis=1)
    values = rng.lognormal(math.log(VALUE_MEAN) - VALUE_LOG_SD**2 / 2, VALUE_LOG_SD, size=int(counts.sum()))
    groups = np.repeat(np.arange(counts.size), counts.ravel())
    sums = np.bincount(groups, weights=values, minlength=counts.size).reshape(counts.shape)
    squares = np.bincount(groups, weights=values**2, minlength=counts.size).reshape(counts.shape)
    return counts.cumsum(axis=1), sums.cumsum(axis=1), squares.cumsum(axis=1)


def simulate(rng: np.random.Generator, design: Design, runs: int, horizon: int, looks: int, lift: float) -> Paths:
    """`runs` experiments read at `looks` equally spaced looks up to `horizon` exposures per arm."""
    n = np.round(np.arange(1, looks + 1) * horizon / looks).astype(int)
    new = np.diff(n, prepend=0)
    t = _arm(rng, runs, new, RATE * (1 + lift), design.revenue)
    c = _arm(rng, runs, new, RATE, design.revenue)
    return Paths(n, (t[0], c[0]), (t[1], c[1]), (t[2], c[2]))


def _means(paths: Paths, arm: int, revenue: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the mean at each look, as `policies.stats.effects.mean_effect` has them."""
    n = paths.n[None, :].astype(float)
    if not revenue:
        p = paths.successes[arm] / n
        return p, p * (1 - p) / n
    mean = paths.total[arm] / n
    return mean, (paths.total_sq[arm] - n * mean**2) / (n - 1) / n


def sequential_p_values(paths: Paths, design: Design) -> np.ndarray:
    """Always-valid p-value of every run and look, as `_compare` gets it from `msprt_test`."""
    (m_t, v_t), (m_c, v_c) = _means(paths, 0, design.revenue), _means(paths, 1, design.revenue)
    tau_diff = sequential_tau(design.baseline, design.analysis(sequential=True))
    return msprt_p_values(m_t - m_c, v_t + v_c, tau_diff**2)


def fixed_p_values(paths: Paths, design: Design) -> np.ndarray:
    """Fixed-horizon p-value of every run and look from the report's own test function."""
    test = welch_test if design.revenue else two_proportion_test
    runs, looks = paths.successes[0].shape
    return np.array([[test(paths.stats(0, r, k, design.revenue), paths.stats(1, r, k, design.revenue)).p_value
                      for k in range(looks)] for r in range(runs)])


def disagreements(rng: np.random.Generator, paths: Paths, design: Design, p_values: np.ndarray,
                  sequential: bool) -> int:
    """How many of `CHECKED_LOOKS` random looks `analyze` decides otherwise than `p < alpha`."""
    config = design.analysis(sequential)
    runs, looks = p_values.shape
    wrong = 0
    for r, k in zip(rng.integers(runs, size=CHECKED_LOOKS), rng.integers(looks, size=CHECKED_LOOKS), strict=True):
        result = analyze(["treatment", "control"], [paths.stats(0, r, k, design.revenue),
                                                   paths.stats(1, r, k, design.revenue)],
                         kind="ab_test", control="control", expected_weights=None, config=config, rng=rng)
        wrong += int((result.arms[0].p_value_adjusted < ALPHA) != (p_values[r, k] < ALPHA))
    return wrong


def _share(measurement: str, share: float, runs: int, target: str, passed: bool | None, note: str = "") -> Row:
    se = math.sqrt(max(share * (1 - share), 1e-12) / runs)
    return Row(measurement, share, "share", None, None, target, passed, f"{runs:,} runs, MC se {se:.3f}; {note}")


@dataclass(frozen=True)
class Scenario:
    """One simulated figure: `sequential` picks the test and horizon, `looks` how often it is read."""

    label: str
    sequential: bool
    looks: int
    lift: float
    target: str
    check: Callable[[float], bool] | None


SCENARIOS = (
    Scenario("A/A false positives, fixed horizon, 1 look at planned n", False, 1, 0.0, "0.035-0.065",
             lambda s: 0.035 <= s <= 0.065),
    Scenario("A/A false positives, fixed horizon read at 30 looks (peeking)", False, LOOKS, 0.0,
             "> 0.05 (why sequential exists)", lambda s: s > ALPHA),
    Scenario("A/A false positives, sequential, 30 looks", True, LOOKS, 0.0, "0.02-0.05",
             lambda s: 0.02 <= s <= 0.05),
    Scenario("power at MDE, fixed horizon, planned n", False, 1, MDE, "0.76-0.84", lambda s: 0.76 <= s <= 0.84),
    Scenario("power at MDE, sequential, 30 looks up to sequential n", True, LOOKS, MDE, "0.76-0.84",
             lambda s: 0.76 <= s <= 0.84),
)


def _run_scenario(config: Config, design: Design, scenario: Scenario, offset: int) -> tuple[Row, int]:
    rng = np.random.default_rng([config.seed, offset])
    horizon = design.sequential_n() if scenario.sequential else design.fixed_n()
    paths = simulate(rng, design, config.runs, horizon, scenario.looks, scenario.lift)
    p_values = sequential_p_values(paths, design) if scenario.sequential else fixed_p_values(paths, design)
    differs = disagreements(rng, paths, design, p_values, scenario.sequential)
    rejected = p_values < ALPHA
    if scenario.lift > 0:  # power counts the right winner only: the treatment better than the control
        (m_t, _), (m_c, _) = _means(paths, 0, design.revenue), _means(paths, 1, design.revenue)
        rejected &= m_t > m_c
    share = float(rejected.any(axis=1).mean())
    row = _share(f"{design.name}: {scenario.label}", share, config.runs, scenario.target,
                 None if scenario.check is None else scenario.check(share), f"horizon {horizon:,} per arm")
    return row, differs


def measure_design(design: Design, index: int) -> Callable[[Config], list[Row]]:
    """Every scenario of one design, its sample ratio and the `analyze` cross-check."""

    def measure(config: Config) -> list[Row]:
        outcomes = [_run_scenario(config, design, s, 10 * index + i) for i, s in enumerate(SCENARIOS)]
        ratio = design.sequential_n() / design.fixed_n()
        checked = CHECKED_LOOKS * len(SCENARIOS)
        differs = sum(d for _, d in outcomes)
        return [
            *(row for row, _ in outcomes),
            Row(f"{design.name}: sequential n / fixed n", ratio, "x", None, None, "<= 2.0 (aim 1.5)", ratio <= 2.0,
                f"{design.sequential_n():,} / {design.fixed_n():,} per arm"),
            Row(f"{design.name}: looks where analyze disagrees", differs, "looks", None, None, "0", differs == 0,
                f"{checked} random looks re-decided by analyze"),
        ]

    measure.__name__ = f"measure_{design.name.split()[0]}"
    return measure


MEASUREMENTS = [measure_design(d, i) for i, d in enumerate(DESIGNS)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 runs")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "bench_inference.json")
    args = parser.parse_args(argv)
    config = replace(Config(), quick=True, runs=300) if args.quick else Config()
    return run_and_report(MEASUREMENTS, config, name="inference", script="bench_inference.py", out=args.out,
                          packages=("numpy", "scipy", "statsmodels"))


if __name__ == "__main__":
    raise SystemExit(main())
