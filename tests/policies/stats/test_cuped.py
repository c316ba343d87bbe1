"""CUPED from per-arm sums, checked against regressions and tests on the unit-level data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from numpy.testing import assert_allclose
from scipy import stats as sps

from policies.stats.analysis import AnalysisConfig, analyze
from policies.stats.cuped import CovariateSums, cuped_adjust
from policies.sufficient import BinaryStats, MeanStats

FAST = AnalysisConfig(draws=2000, metric_type="revenue")


def _units(rng: np.random.Generator, n: tuple[int, int], binary: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per arm: the covariate x and the outcome y (correlated; arm 1 shifted)."""
    xs, ys = [], []
    for arm, size in enumerate(n):
        x = rng.normal(20.0, 4.0, size)
        latent = 0.3 * (x - 20.0) / 4.0 + rng.normal(0, 1, size) + 0.15 * arm
        y = (latent > 0.8).astype(float) if binary else np.exp(0.4 * latent) * 3.0
        xs.append(x)
        ys.append(y)
    return xs, ys


def _sums(xs: list[np.ndarray], ys: list[np.ndarray], binary: bool) -> tuple[list, list[CovariateSums]]:
    stats = [BinaryStats(len(y), int(y.sum())) if binary else MeanStats(len(y), float(y.sum()), float((y * y).sum()))
             for y in ys]
    covs = [CovariateSums(float(x.sum()), float((x * x).sum()), float((x * y).sum()))
            for x, y in zip(xs, ys, strict=True)]
    return stats, covs


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_difference_of_adjusted_means_is_the_ancova_arm_coefficient(binary: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    xs, ys = _units(rng, (700 + 37 * seed, 650), binary)
    stats, covs = _sums(xs, ys, binary)
    result = cuped_adjust(stats, covs)
    # Reference: statsmodels.formula.api.ols("y ~ C(arm) + I(x - x.mean())").fit() on the unit rows.
    frame = pd.DataFrame({"y": np.concatenate(ys), "x": np.concatenate(xs),
                          "arm": np.repeat([0, 1], [len(y) for y in ys])})
    fit = smf.ols("y ~ C(arm) + I(x - x.mean())", data=frame).fit()
    means = [s.mean for s in result.adjusted]
    assert_allclose(means[1] - means[0], fit.params["C(arm)[T.1]"], rtol=0, atol=1e-6)
    assert_allclose(result.theta, fit.params["I(x - x.mean())"], rtol=0, atol=1e-6)
    # The control's adjusted mean is the intercept (x centred on the grand mean).
    assert_allclose(means[0], fit.params["Intercept"], rtol=0, atol=1e-6)


def test_adjusted_variance_is_the_residual_variance_per_arm_and_the_reduction_its_pooled_share() -> None:
    rng = np.random.default_rng(5)
    xs, ys = _units(rng, (900, 800), binary=False)
    stats, covs = _sums(xs, ys, binary=False)
    result = cuped_adjust(stats, covs)
    residuals = [y - result.theta * (x - x.mean()) - y.mean() for x, y in zip(xs, ys, strict=True)]
    for adjusted, r in zip(result.adjusted, residuals, strict=True):
        assert_allclose(adjusted.variance, np.var(r, ddof=1), rtol=1e-9)
    within = sum(((y - y.mean()) ** 2).sum() for y in ys)
    assert_allclose(result.variance_reduction, 1 - sum((r * r).sum() for r in residuals) / within, rtol=1e-9)
    assert 0.0 < result.variance_reduction < 1.0


@pytest.mark.parametrize("binary", [False, True])
def test_analyze_tests_the_adjusted_unit_values(binary: bool) -> None:
    """With covariates, the A/B p-value is Welch's t-test on the units' adjusted values
    y - theta (x - xbar): reference scipy.stats.ttest_ind(..., equal_var=False)."""
    rng = np.random.default_rng(11)
    xs, ys = _units(rng, (1200, 1100), binary)
    stats, covs = _sums(xs, ys, binary)
    config = AnalysisConfig(draws=2000, metric_type="binary" if binary else "revenue")
    out = analyze(["control", "b"], stats, kind="ab_test", control="control", expected_weights=None,
                  config=config, rng=np.random.default_rng(0), covariates=covs)
    grand = np.concatenate(xs).mean()
    theta = out.cuped.theta
    adjusted = [y - theta * (x - grand) for x, y in zip(xs, ys, strict=True)]
    reference = sps.ttest_ind(adjusted[1], adjusted[0], equal_var=False)
    assert_allclose(out.arms[1].p_value, reference.pvalue, rtol=1e-6)
    assert_allclose(out.comparisons[0].difference, adjusted[1].mean() - adjusted[0].mean(), rtol=1e-9)
    assert out.arms[1].conversions == (stats[1].successes if binary else None)
    assert out.cuped.variance_reduction > 0
    plain = analyze(["control", "b"], stats, kind="ab_test", control="control", expected_weights=None,
                    config=config, rng=np.random.default_rng(0))
    assert plain.cuped is None and out.to_dict()["cuped"]["theta"] == pytest.approx(theta)


def test_no_adjustment_without_spread_or_with_tiny_arms() -> None:
    stats = [MeanStats(10, 10.0, 20.0), MeanStats(10, 12.0, 30.0)]
    constant = [CovariateSums(30.0, 90.0, 30.0), CovariateSums(30.0, 90.0, 36.0)]  # x = 3 for every unit
    result = cuped_adjust(stats, constant)
    assert result.theta == 0.0 and result.variance_reduction is None and result.adjusted == tuple(stats)
    tiny = cuped_adjust([MeanStats(1, 1.0, 1.0), MeanStats(5, 5.0, 9.0)],
                        [CovariateSums(1.0, 1.0, 1.0), CovariateSums(5.0, 9.0, 7.0)])
    assert tiny.variance_reduction is None


def test_refusals() -> None:
    with pytest.raises(ValueError, match="finite"):
        CovariateSums(float("nan"), 1.0, 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        CovariateSums(1.0, -1.0, 1.0)
    with pytest.raises(ValueError, match="one covariate"):
        cuped_adjust([MeanStats(3, 1.0, 1.0), MeanStats(3, 1.0, 1.0)], [CovariateSums(1.0, 1.0, 1.0)])
    with pytest.raises(ValueError, match="bandit"):
        analyze(["a", "b"], [BinaryStats(50, 5), BinaryStats(50, 6)], kind="bandit", control=None,
                expected_weights=None, config=AnalysisConfig(draws=100), rng=np.random.default_rng(0),
                covariates=[CovariateSums(1.0, 1.0, 1.0)] * 2)


def test_relabelling_arms_permutes_the_adjusted_arms() -> None:
    rng = np.random.default_rng(3)
    xs, ys = _units(rng, (300, 350), binary=False)
    stats, covs = _sums(xs, ys, binary=False)
    forward, backward = cuped_adjust(stats, covs), cuped_adjust(stats[::-1], covs[::-1])
    assert_allclose(forward.theta, backward.theta, rtol=1e-12)
    assert_allclose([s.mean for s in forward.adjusted], [s.mean for s in backward.adjusted[::-1]], rtol=1e-12)
