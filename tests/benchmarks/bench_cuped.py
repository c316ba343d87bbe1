"""Statistical benchmark of CUPED (`analysis.covariate`), by simulation against a known truth.

    python tests/benchmarks/bench_cuped.py [--quick] [--out FILE.json]

Prints a table and writes JSON (default `bench-results/bench_cuped.json`). Each run draws two
arms of units with a pre-period covariate x and an outcome y, sums them as the store does
(n, sum y, sum y^2, sum x, sum x^2, sum x y per arm) and runs the report's analysis
(`policies.stats.analysis.analyze(..., covariates=...)`). Rows:

- variance reduction on a population whose covariate correlates 0.5 with the outcome (revenue
  per unit = 10 + 4 (0.5 z_x + sqrt(0.75) e)): the reported `variance_reduction` (mean over
  runs) and the realised one, 1 - Var(adjusted difference) / Var(plain difference) across
  runs, against the expected rho^2 = 0.25;
- the A/A false-positive rate with CUPED (revenue, and a binary metric whose latent score
  correlates with x) against [0.035, 0.065], with the unadjusted test's rate beside it;
- power at a true +2.5% lift (revenue) with and without CUPED (no target: the gain);
- the adjusted difference against statsmodels OLS `y ~ C(arm) + I(x - x.mean())` on random
  data sets: the largest absolute difference of the arm coefficient.

The full run takes about ten minutes on one core (the report's sample-size plan dominates);
`--quick` is a smoke run (fewer runs) and its figures are not the reported ones.
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

from policies.stats.analysis import AnalysisConfig, analyze  # noqa: E402
from policies.stats.cuped import CovariateSums, cuped_adjust  # noqa: E402
from policies.stats.frequentist import two_proportion_test, welch_test  # noqa: E402
from policies.sufficient import BinaryStats, MeanStats  # noqa: E402
from tests.benchmarks.harness import Row, run_and_report  # noqa: E402

ALPHA = 0.05
RHO = 0.5
REVENUE = AnalysisConfig(metric_type="revenue", alpha=ALPHA, draws=500)
BINARY = AnalysisConfig(metric_type="binary", alpha=ALPHA, draws=500)


@dataclass(frozen=True)
class Config:
    quick: bool
    runs: int
    units: int
    ols_sets: int
    seed: int = 2013


def _draw(rng: np.random.Generator, units: int, lift: float, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one arm: x the pre-period covariate, y correlated RHO with it (revenue) or a
    conversion whose latent score is (binary); `lift` multiplies the mean outcome."""
    z = rng.standard_normal(units)
    x = 50.0 + 10.0 * z
    score = RHO * z + math.sqrt(1 - RHO**2) * rng.standard_normal(units)
    if binary:
        return x, (score > 1.2 - lift).astype(float)
    return x, (10.0 + 4.0 * score) * (1.0 + lift)


def _sums(x: np.ndarray, y: np.ndarray, binary: bool) -> tuple[BinaryStats | MeanStats, CovariateSums]:
    stats = BinaryStats(y.size, int(y.sum())) if binary else MeanStats(y.size, float(y.sum()), float(y @ y))
    return stats, CovariateSums(float(x.sum()), float(x @ x), float(x @ y))


def _p_values(rng: np.random.Generator, units: int, lift: float, binary: bool) -> tuple[float, float, float | None]:
    """(p with CUPED, p without, reported variance reduction) of one simulated experiment."""
    control, variant = (_sums(*_draw(rng, units, d, binary), binary) for d in (0.0, lift))
    stats, covariates = [control[0], variant[0]], [control[1], variant[1]]
    config = BINARY if binary else REVENUE
    common = dict(kind="ab_test", control="control", expected_weights=None, config=config,
                  rng=np.random.default_rng(0))
    adjusted = analyze(["control", "b"], stats, covariates=covariates, **common)  # type: ignore[arg-type]
    assert adjusted.cuped is not None
    # The unadjusted test analyze would run (without re-running its slow sample-size plan).
    plain = (two_proportion_test(stats[1], stats[0]) if binary  # type: ignore[arg-type]
             else welch_test(stats[1], stats[0]))  # type: ignore[arg-type]
    return adjusted.arms[1].p_value or 1.0, plain.p_value, adjusted.cuped.variance_reduction


def _share_row(measurement: str, share: float, runs: int, *, target: str | None, passed: bool | None,
               peer: float | None = None, peer_name: str | None = None, note: str = "") -> Row:
    mc_se = math.sqrt(max(share * (1 - share), 1e-12) / runs)
    return Row(measurement, share, "share", peer, peer_name, target, passed,
               (note + "; " if note else "") + f"{runs:,} runs, Monte Carlo s.e. {mc_se:.4f}")


def measure_variance_reduction(config: Config) -> list[Row]:
    rng = np.random.default_rng(config.seed)
    reported, adjusted_diffs, plain_diffs = [], [], []
    for _ in range(config.runs):
        arms = [_draw(rng, config.units, 0.0, binary=False) for _ in range(2)]
        sums = [_sums(x, y, binary=False) for x, y in arms]
        result = cuped_adjust([s for s, _ in sums], [c for _, c in sums])
        reported.append(result.variance_reduction)
        adjusted_diffs.append(result.adjusted[1].mean - result.adjusted[0].mean)
        plain_diffs.append(arms[1][1].mean() - arms[0][1].mean())
    mean_reported = float(np.mean(reported))
    realised = 1.0 - float(np.var(adjusted_diffs, ddof=1) / np.var(plain_diffs, ddof=1))
    # The ratio of two sample variances over R runs has relative s.e. about sqrt(4 / R) (normal data).
    realised_se = (1 - realised) * math.sqrt(4 / config.runs)
    return [
        Row("variance reduction reported (mean over runs), rho = 0.5", mean_reported, "share", RHO**2,
            "expected rho^2", "in [0.23, 0.27]", 0.23 <= mean_reported <= 0.27,
            f"{config.runs:,} runs of {config.units:,} units per arm"),
        Row("variance reduction realised: 1 - Var(adj. diff) / Var(diff) across runs", realised, "share", RHO**2,
            "expected rho^2", "within 0.25 +- 3 s.e.", bool(abs(realised - RHO**2) <= 3 * realised_se),
            f"s.e. about {realised_se:.3f}"),
    ]


def measure_false_positives(config: Config) -> list[Row]:
    rows = []
    for k, binary in enumerate((False, True)):
        rng = np.random.default_rng(config.seed + 10 + k)
        runs = [_p_values(rng, config.units, 0.0, binary) for _ in range(config.runs)]
        cuped = float(np.mean([p < ALPHA for p, _, _ in runs]))
        plain = float(np.mean([p < ALPHA for _, p, _ in runs]))
        reduction = float(np.mean([r for _, _, r in runs if r is not None]))
        rows.append(_share_row(f"A/A false-positive rate with CUPED, {'binary' if binary else 'revenue'}", cuped,
                               config.runs, target="in [0.035, 0.065]", passed=0.035 <= cuped <= 0.065, peer=plain,
                               peer_name="the same runs without CUPED",
                               note=f"mean variance reduction {reduction:.3f}"))
    return rows


def measure_power(config: Config) -> list[Row]:
    rng = np.random.default_rng(config.seed + 20)
    runs = [_p_values(rng, config.units, 0.025, binary=False) for _ in range(config.runs)]
    cuped = float(np.mean([p < ALPHA for p, _, _ in runs]))
    plain = float(np.mean([p < ALPHA for _, p, _ in runs]))
    return [_share_row("power at a true +2.5% lift with CUPED (revenue)", cuped, config.runs, target=None,
                       passed=None, peer=plain, peer_name="the same runs without CUPED")]


def measure_ols(config: Config) -> list[Row]:
    import pandas as pd
    import statsmodels.formula.api as smf

    rng = np.random.default_rng(config.seed + 30)
    worst = 0.0
    for _ in range(config.ols_sets):
        sizes, binary = rng.integers(50, 2000, 2), bool(rng.integers(2))
        arms = [_draw(rng, int(n), 0.05 * i, binary) for i, n in enumerate(sizes)]
        sums = [_sums(x, y, binary) for x, y in arms]
        result = cuped_adjust([s for s, _ in sums], [c for _, c in sums])
        frame = pd.DataFrame({"y": np.concatenate([y for _, y in arms]), "x": np.concatenate([x for x, _ in arms]),
                              "arm": np.repeat([0, 1], sizes)})
        coefficient = smf.ols("y ~ C(arm) + I(x - x.mean())", data=frame).fit().params["C(arm)[T.1]"]
        worst = max(worst, float(abs(result.adjusted[1].mean - result.adjusted[0].mean - coefficient)))
    return [Row("adjusted difference vs statsmodels OLS arm coefficient, max |diff|", worst, "abs", None,
                "statsmodels ols('y ~ C(arm) + I(x - x.mean())')", "<= 1e-6", bool(worst <= 1e-6),
                f"{config.ols_sets:,} random data sets, binary and revenue")]


MEASUREMENTS: list[Callable[[Config], list[Row]]] = [measure_variance_reduction, measure_false_positives,
                                                     measure_power, measure_ols]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs: a smoke run")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "bench_cuped.json")
    args = parser.parse_args(argv)
    config = Config(True, 200, 1000, 50) if args.quick else Config(False, 2000, 1000, 500)
    return run_and_report(MEASUREMENTS, config, name="cuped", script="bench_cuped.py", out=args.out,
                          packages=("numpy", "scipy", "statsmodels"))


if __name__ == "__main__":
    raise SystemExit(main())
