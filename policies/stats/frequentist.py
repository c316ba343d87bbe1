"""Fixed-horizon significance tests and intervals on sufficient statistics.

Binary metrics: the pooled two-proportion z-test (as `statsmodels.stats.proportion.
proportions_ztest`), replaced by Fisher's exact test (`scipy.stats.fisher_exact`) whenever an
expected cell count of the 2x2 table is below 5 — Cochran's rule for when the normal
approximation stops being trustworthy. Wilson intervals for rates and Newcombe's hybrid score
interval for the difference of rates. Revenue metrics: Welch's unequal-variance t-test and
t-interval. Omnibus tests across all arms: Pearson's chi-square on the k x 2 table (binary) or
Welch's one-way ANOVA (revenue).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps
from statsmodels.stats.oneway import anova_generic
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from policies.stats.effects import Interval, absolute_difference, mean_effect
from policies.sufficient import ArmStats, BinaryStats, MeanStats

TestMethod = Literal["z_test", "fisher_exact", "welch_t_test", "chi_square", "welch_anova", "msprt"]

MIN_EXPECTED_COUNT = 5.0
"""Below this expected count in any cell of the 2x2 table, `two_proportion_test` is exact."""


@dataclass(frozen=True, slots=True)
class TestResult:
    """Outcome of one hypothesis test.

    `statistic` is z, t, chi-square, F, the sample odds ratio (Fisher) or the mixture
    likelihood ratio (mSPRT); None when it is undefined (e.g. zero variance).
    """

    __test__: ClassVar[bool] = False  # not a pytest test class, despite the name

    method: TestMethod
    statistic: float | None
    p_value: float


def proportions_z_test(
    successes_t: ArrayLike, n_t: ArrayLike, successes_c: ArrayLike, n_c: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Vectorised pooled two-sided z-test of p_t = p_c: (z, p_value) arrays.

    Same formula as `statsmodels.stats.proportion.proportions_ztest([x_t, x_c], [n_t, n_c])`:
    z = (p_t - p_c) / sqrt(p (1 - p) (1/n_t + 1/n_c)) with the pooled rate p. Where the pooled
    variance is 0 (no or only conversions) statsmodels returns NaN; here z = 0, p = 1.
    """
    x_t, x_c = np.asarray(successes_t, float), np.asarray(successes_c, float)
    m_t, m_c = np.asarray(n_t, float), np.asarray(n_c, float)
    pooled = (x_t + x_c) / (m_t + m_c)
    se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / m_t + 1.0 / m_c))
    safe_se = np.where(se > 0, se, 1.0)
    z = np.where(se > 0, (x_t / m_t - x_c / m_c) / safe_se, 0.0)
    return z, 2.0 * sps.norm.sf(np.abs(z))


def needs_exact_test(treatment: BinaryStats, control: BinaryStats) -> bool:
    """True when some expected count of the 2x2 table is below `MIN_EXPECTED_COUNT`."""
    n = treatment.n + control.n
    successes = treatment.successes + control.successes
    smallest_margin = min(successes, n - successes)
    return min(treatment.n, control.n) * smallest_margin / n < MIN_EXPECTED_COUNT


def two_proportion_test(treatment: BinaryStats, control: BinaryStats) -> TestResult:
    """Two-sided test of equal conversion rates: z-test, or Fisher's exact test for small counts."""
    if treatment.n == 0 or control.n == 0:
        raise ValueError("both arms need n > 0")
    if needs_exact_test(treatment, control):
        table = [[treatment.successes, treatment.failures], [control.successes, control.failures]]
        odds_ratio, p_value = sps.fisher_exact(table, alternative="two-sided")
        return TestResult("fisher_exact", float(odds_ratio), float(p_value))
    z, p_value = proportions_z_test(treatment.successes, treatment.n, control.successes, control.n)
    return TestResult("z_test", float(z), float(p_value))


def _welch_se_df(treatment: MeanStats, control: MeanStats) -> tuple[float, float]:
    """Standard error of the difference of means and Welch–Satterthwaite degrees of freedom."""
    t, c = mean_effect(treatment), mean_effect(control)
    se_sq = t.variance + c.variance
    if se_sq == 0:
        return 0.0, float("nan")
    df = se_sq**2 / (t.variance**2 / (treatment.n - 1) + c.variance**2 / (control.n - 1))
    return se_sq**0.5, df


def welch_test(treatment: MeanStats, control: MeanStats) -> TestResult:
    """Welch's two-sided t-test of equal means from (n, total, total_sq).

    Matches `scipy.stats.ttest_ind_from_stats(..., equal_var=False)`. With zero variance in both
    arms, t is undefined: p = 1 if the means are equal, else 0.
    """
    diff = absolute_difference(treatment, control).estimate
    se, df = _welch_se_df(treatment, control)
    if se == 0:
        return TestResult("welch_t_test", None, 1.0 if diff == 0 else 0.0)
    t = diff / se
    return TestResult("welch_t_test", t, float(2.0 * sps.t.sf(abs(t), df)))


def rate_interval(stats: ArmStats, alpha: float) -> Interval:
    """1-alpha interval for an arm's mean: Wilson score (binary) or Student t (real-valued).

    Wilson: `statsmodels.stats.proportion.proportion_confint(x, n, alpha, method="wilson")`.
    """
    if isinstance(stats, BinaryStats):
        low, high = proportion_confint(stats.successes, stats.n, alpha=alpha, method="wilson")
        return Interval(stats.successes / stats.n, float(low), float(high))
    m = mean_effect(stats)
    half = float(sps.t.ppf(1.0 - alpha / 2.0, stats.n - 1)) * m.variance**0.5
    return Interval(m.estimate, m.estimate - half, m.estimate + half)


def difference_interval(treatment: ArmStats, control: ArmStats, alpha: float) -> Interval:
    """1-alpha interval for mean_t - mean_c.

    Binary: Newcombe's hybrid score interval from the two Wilson intervals (Newcombe 1998,
    method 10), as `statsmodels.stats.proportion.confint_proportions_2indep(..., method="newcomb",
    compare="diff")`. Real-valued: Welch's t-interval, consistent with `welch_test`.
    """
    diff = absolute_difference(treatment, control).estimate
    if isinstance(treatment, BinaryStats) and isinstance(control, BinaryStats):
        low, high = confint_proportions_2indep(
            treatment.successes,
            treatment.n,
            control.successes,
            control.n,
            method="newcomb",
            compare="diff",
            alpha=alpha,
        )
        return Interval(diff, float(low), float(high))
    if isinstance(treatment, MeanStats) and isinstance(control, MeanStats):
        se, df = _welch_se_df(treatment, control)
        half = float(sps.t.ppf(1.0 - alpha / 2.0, df)) * se if se > 0 else 0.0
        return Interval(diff, diff - half, diff + half)
    raise ValueError("both arms must hold the same kind of statistics")


def omnibus_test(stats: Sequence[ArmStats]) -> TestResult | None:
    """Test that all arms share one mean; None when it is undefined.

    Binary: Pearson's chi-square on the k x 2 table, `scipy.stats.chi2_contingency(table,
    correction=False)` — no Yates correction, so with two arms chi-square = z^2 and the omnibus
    agrees with the z-test. Undefined when nobody (or everybody) converted.
    Revenue: Welch's heteroscedastic one-way ANOVA from summary statistics,
    `statsmodels.stats.oneway.anova_generic(means, variances, nobs, use_var="unequal")`;
    undefined when an arm has zero variance.
    """
    if len(stats) < 2:
        raise ValueError("an omnibus test needs at least two arms")
    binary = [s for s in stats if isinstance(s, BinaryStats)]
    if len(binary) == len(stats):
        table = np.array([[s.successes, s.failures] for s in binary], dtype=float)
        if np.any(table.sum(axis=0) == 0) or np.any(table.sum(axis=1) == 0):
            return None
        chi2, p_value, _, _ = sps.chi2_contingency(table, correction=False)
        return TestResult("chi_square", float(chi2), float(p_value))
    means = [s for s in stats if isinstance(s, MeanStats)]
    if len(means) == len(stats):
        if any(s.n < 2 for s in means):
            raise ValueError("Welch's ANOVA needs n >= 2 in every arm")
        variances = np.array([s.variance for s in means], dtype=float)
        if np.any(variances == 0):
            return None
        result = anova_generic(
            np.array([s.total / s.n for s in means]),
            variances,
            np.array([s.n for s in means], dtype=float),
            use_var="unequal",
        )
        return TestResult("welch_anova", float(result.statistic), float(result.pvalue))
    raise ValueError("all arms must hold the same kind of statistics")
