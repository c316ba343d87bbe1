"""Fixed-horizon significance tests and intervals on sufficient statistics.

Binary metrics: the pooled two-proportion z-test (as `statsmodels.stats.proportion.
proportions_ztest`) at every sample size, Wilson intervals for rates, and for the difference and
the ratio of rates the score intervals that invert that same test (`score_interval`), so an
interval excludes "no effect" exactly when the test rejects. Revenue metrics: Welch's
unequal-variance t-test and t-interval (Student's pooled t when an arm shows no variation, see
`mean_variances`). Omnibus tests across all arms: Pearson's chi-square on the k x 2 table (binary)
or Welch's one-way ANOVA (revenue).

Why no Fisher exact test for small counts: it is conditional on both margins and tests the odds
ratio, so no interval for the difference or the ratio of rates inverts it, and a Fisher verdict
could sit beside an interval that disagrees with it. The score test keeps near-nominal size and
its intervals near-nominal coverage down to small counts (Miettinen & Nurminen 1985; Newcombe
1998, "Interval estimation for the difference between independent proportions", Stat. Med. 17,
873-890; Agresti & Caffo 2000), where Fisher's test is conservative.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize
from scipy import stats as sps
from statsmodels.stats.oneway import anova_generic
from statsmodels.stats.proportion import proportion_confint

from policies.stats.effects import Effect, Interval, absolute_difference, fieller_interval, mean_effect
from policies.sufficient import ArmStats, BinaryStats, MeanStats

TestMethod = Literal["z_test", "welch_t_test", "student_t_test", "chi_square", "welch_anova", "msprt"]
Compare = Literal["diff", "ratio"]


@dataclass(frozen=True, slots=True)
class TestResult:
    """Outcome of one hypothesis test.

    `statistic` is z, t, chi-square, F or the mixture likelihood ratio (mSPRT); None when it is
    undefined (e.g. zero variance).
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


def pooled_variance(treatment: BinaryStats, control: BinaryStats) -> float:
    """Variance of p_t - p_c under p_t = p_c: p (1 - p) (1/n_t + 1/n_c) with the pooled rate p."""
    pooled = (treatment.successes + control.successes) / (treatment.n + control.n)
    return pooled * (1.0 - pooled) * (1.0 / treatment.n + 1.0 / control.n)


def two_proportion_test(treatment: BinaryStats, control: BinaryStats) -> TestResult:
    """Two-sided pooled z-test of equal conversion rates (the score test at p_t - p_c = 0)."""
    if treatment.n == 0 or control.n == 0:
        raise ValueError("both arms need n > 0")
    z, p_value = proportions_z_test(treatment.successes, treatment.n, control.successes, control.n)
    return TestResult("z_test", float(z), float(p_value))


_NULL = {"diff": 0.0, "ratio": 1.0}


def _constrained_rates(treatment: BinaryStats, control: BinaryStats, value: float,
                       compare: Compare) -> tuple[float, float]:
    """Maximum-likelihood rates (p_t, p_c) under p_t - p_c = value (diff) or p_t = value p_c (ratio).

    The stationary points of the log-likelihood in p_c solve a cubic (diff) or a quadratic
    (ratio) (Miettinen & Nurminen 1985, appendix; with n = n_t + n_c, x = x_t + x_c):
    diff:  n p^3 + ((n_t + 2 n_c) d - n - x) p^2 + ((n_c d - n - 2 x_c) d + x) p + x_c d (1 - d) = 0,
    ratio: n r p^2 - (n_t r + x_t + n_c + x_c r) p + x = 0.
    The maximum over the real roots in the feasible range and its end points (where it sits
    when a count is 0 or n) is taken, so no closed-form branch can return NaN or a complex
    number. (statsmodels' closed form for the difference has x_c where the cubic has n_c in
    its third coefficient, so its constrained rates, and score intervals, differ slightly.)
    """
    n_t, x_t, n_c, x_c = treatment.n, treatment.successes, control.n, control.successes
    n, x = n_t + n_c, x_t + x_c
    if compare == "diff":
        low, high = max(0.0, -value), min(1.0, 1.0 - value)
        cubic = [n, (n_t + 2 * n_c) * value - n - x, (n_c * value - n - 2 * x_c) * value + x, x_c * value * (1 - value)]
        roots = [float(r.real) for r in np.roots(cubic) if abs(r.imag) <= 1e-9 * max(1.0, abs(r.real))]
    else:
        low, high = 0.0, min(1.0, 1.0 / value) if value > 0 else 1.0
        a, b = n * value, -(n_t * value + x_t + n_c + x_c * value)
        disc = math.sqrt(max(b * b - 4 * a * x, 0.0))
        roots = [2 * x / (disc - b)] if disc > b else []  # the smaller root, in a form without cancellation
        roots += [(disc - b) / (2 * a)] if a > 0 else []

    def treated(p_c: float) -> float:
        return min(max(p_c + value if compare == "diff" else value * p_c, 0.0), 1.0)

    def log_lik(p_c: float) -> float:
        p_t = treated(p_c)
        return _xlogy(x_t, p_t) + _xlogy(n_t - x_t, 1 - p_t) + _xlogy(x_c, p_c) + _xlogy(n_c - x_c, 1 - p_c)

    best = max((*(r for r in roots if low <= r <= high), low, high), key=log_lik)
    return treated(best), best


def _xlogy(k: int, p: float) -> float:
    """k log p with 0 log 0 = 0, as `scipy.special.xlogy`, at Python-float speed."""
    if k == 0:
        return 0.0
    return k * math.log(p) if p > 0 else -math.inf


def score_statistic(treatment: BinaryStats, control: BinaryStats, value: float, compare: Compare) -> float:
    """Score z for p_t - p_c = value (diff) or p_t / p_c = value (ratio), as
    `statsmodels.stats.proportion.score_test_proportions_2indep(..., correction=False)`.

    z = (p_t - p_c - value) / sqrt(v) or (p_t - value p_c) / sqrt(v), with v the variance of the
    numerator at the rates that maximise the likelihood under the hypothesis (Miettinen &
    Nurminen 1985 without their n/(n-1) factor; for the ratio Koopman 1984). At no effect those
    rates are the pooled rate, so this is exactly the pooled z of `proportions_z_test`, which is
    returned there. Positive when the treatment is better than the hypothesis says.
    """
    if value == _NULL[compare]:
        return float(proportions_z_test(treatment.successes, treatment.n, control.successes, control.n)[0])
    p_t, p_c = treatment.successes / treatment.n, control.successes / control.n
    q_t, q_c = _constrained_rates(treatment, control, value, compare)
    scale = 1.0 if compare == "diff" else value
    numerator = p_t - p_c - value if compare == "diff" else p_t - value * p_c
    variance = q_t * (1.0 - q_t) / treatment.n + scale**2 * q_c * (1.0 - q_c) / control.n
    if variance <= 0.0:
        return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)
    return numerator / math.sqrt(variance)


def _bound(crosses: Callable[[float], float], inside: float, null: float, toward: Callable[[int], float],
           edge: float) -> float:
    """The edge of {v : crosses(v) <= 0} going out from `inside` (where crosses < 0): the root of
    `crosses` between them, or `edge` if it is never crossed. Steps `toward(k)`, k = 1, 2, ...,
    go out geometrically; a rejected null value, when it lies on this side, brackets the root
    directly, so the bound lies strictly between the null and the estimate whenever the test
    rejects (the interval then excludes the null by construction)."""
    lo_side = edge < inside
    if (null < inside) == lo_side and null != inside and crosses(null) > 0:
        return float(optimize.brentq(crosses, *sorted((null, inside)), xtol=1e-15, rtol=4 * np.finfo(float).eps))
    for k in range(1, 64):
        out = toward(k)
        if crosses(out) > 0:
            return float(optimize.brentq(crosses, *sorted((out, inside)), xtol=1e-15, rtol=4 * np.finfo(float).eps))
    return edge


def score_interval(treatment: BinaryStats, control: BinaryStats, critical: float, compare: Compare) -> Interval:
    """{value : |score_statistic(value)| <= critical}: the score interval for p_t - p_c (diff) or
    p_t / p_c - 1 (ratio, reported as a relative lift).

    With critical = z_{1-alpha/2} it is the score interval of Miettinen & Nurminen (1985) without
    their n/(n-1) factor (for the ratio Koopman 1984: `statsmodels.stats.proportion.
    confint_proportions_2indep(..., method="score", compare="ratio", correction=False)`, except at
    counts of 0 or n, where statsmodels' closed form fails), and it excludes no effect exactly when
    `two_proportion_test` has p < alpha: the test is this statistic at no effect. Sequential
    mode passes the mixture's boundary as `critical` (`policies.stats.sequential.mixture_boundary`).
    A diff interval lies in [-1, 1]; a ratio interval in [0, inf).
    """
    if treatment.n == 0 or control.n == 0:
        raise ValueError("both arms need n > 0")
    p_t, p_c = treatment.successes / treatment.n, control.successes / control.n
    null = _NULL[compare]

    def z(value: float) -> float:
        return score_statistic(treatment, control, value, compare)

    if compare == "diff":
        estimate = p_t - p_c

        def toward(limit: float) -> Callable[[int], float]:  # halves the way left to a limit inside (-1, 1)
            return lambda k: estimate + (limit - estimate) * (1 - 2.0**-k)

        low = _bound(lambda v: z(v) - critical, estimate, null, toward(-1.0 + 1e-12), -1.0)
        high = _bound(lambda v: -z(v) - critical, estimate, null, toward(1.0 - 1e-12), 1.0)
        return Interval(estimate, low, high)
    if p_c == 0:
        raise ValueError("the ratio of rates needs control conversions")
    ratio = p_t / p_c
    start = ratio if ratio > 0 else 1.0 / control.n
    low = 0.0 if ratio == 0 else _bound(lambda v: z(v) - critical, ratio, null, lambda k: ratio * 2.0**-k, 0.0)
    high = _bound(lambda v: -z(v) - critical, ratio, null, lambda k: start * 2.0**k, math.inf)
    return Interval(ratio - 1.0, low - 1.0, high - 1.0)


def mean_variances(treatment: MeanStats, control: MeanStats) -> tuple[float, float, float]:
    """Variances of the two sample means and the degrees of freedom of the t-test between them.

    Welch: s_t^2/n_t, s_c^2/n_c and the Welch–Satterthwaite df. When exactly one arm shows no
    variation (e.g. no revenue at all in a small arm) s^2 = 0 is no estimate of its variance and
    would make every interval built on it a point; both arms then take the pooled variance
    (Student's t, df = n_t + n_c - 2), whose standard error equals Welch's for equal arms.
    With no variation in either arm every variance is 0 and df is NaN.
    """
    s_t, s_c = treatment.variance, control.variance
    if s_t is None or s_c is None:
        raise ValueError(f"need n >= 2 in both arms, got {treatment.n} and {control.n}")
    if (s_t == 0) != (s_c == 0):
        df = treatment.n + control.n - 2
        pooled = ((treatment.n - 1) * s_t + (control.n - 1) * s_c) / df
        return pooled / treatment.n, pooled / control.n, float(df)
    v_t, v_c = s_t / treatment.n, s_c / control.n
    if v_t + v_c == 0:
        return 0.0, 0.0, math.nan
    return v_t, v_c, (v_t + v_c) ** 2 / (v_t**2 / (treatment.n - 1) + v_c**2 / (control.n - 1))


def _welch_se_df(treatment: MeanStats, control: MeanStats) -> tuple[float, float]:
    """Standard error of the difference of means and the degrees of freedom (`mean_variances`)."""
    v_t, v_c, df = mean_variances(treatment, control)
    return (v_t + v_c) ** 0.5, df


def _t_method(treatment: MeanStats, control: MeanStats) -> TestMethod:
    return "student_t_test" if (treatment.variance == 0) != (control.variance == 0) else "welch_t_test"


def welch_test(treatment: MeanStats, control: MeanStats) -> TestResult:
    """Welch's two-sided t-test of equal means from (n, total, total_sq).

    Matches `scipy.stats.ttest_ind_from_stats(..., equal_var=False)`; when one arm has no
    variation, Student's pooled t-test (`equal_var=True`; see `mean_variances`). With no
    variation in either arm, t is undefined: p = 1 if the means are equal, else 0.
    """
    diff = absolute_difference(treatment, control).estimate
    se, df = _welch_se_df(treatment, control)
    method = _t_method(treatment, control)
    if se == 0:
        return TestResult(method, None, 1.0 if diff == 0 else 0.0)
    t = diff / se
    return TestResult(method, t, float(2.0 * sps.t.sf(abs(t), df)))


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


def _z_critical(alpha: float) -> float:
    return float(sps.norm.ppf(1.0 - alpha / 2.0))


def t_critical(treatment: MeanStats, control: MeanStats, alpha: float) -> float:
    """t_{1-alpha/2} at the degrees of freedom of `welch_test` (`mean_variances`)."""
    df = mean_variances(treatment, control)[2]
    return float(sps.t.ppf(1.0 - alpha / 2.0, df)) if math.isfinite(df) else math.inf


def difference_interval(treatment: ArmStats, control: ArmStats, alpha: float) -> Interval:
    """1-alpha interval for mean_t - mean_c that inverts the test `analysis` uses at a fixed horizon.

    Binary: the score interval (`score_interval`, compare="diff"), which excludes 0 exactly when
    `two_proportion_test` has p < alpha. Real-valued: the t-interval of `welch_test` (its
    variances and degrees of freedom), which excludes 0 exactly when that test has p < alpha.
    """
    if isinstance(treatment, BinaryStats) and isinstance(control, BinaryStats):
        return score_interval(treatment, control, _z_critical(alpha), "diff")
    if isinstance(treatment, MeanStats) and isinstance(control, MeanStats):
        diff = absolute_difference(treatment, control).estimate
        se, _ = _welch_se_df(treatment, control)
        half = t_critical(treatment, control, alpha) * se if se > 0 else 0.0
        return Interval(diff, diff - half, diff + half)
    raise ValueError("both arms must hold the same kind of statistics")


def lift_interval(treatment: ArmStats, control: ArmStats, alpha: float, *, nonnegative: bool = True) -> Interval:
    """1-alpha interval for the relative lift mean_t / mean_c - 1 that inverts the same test as
    `difference_interval`: {rho - 1 : the test of mean_t = rho mean_c is not rejected}.

    Binary: the score interval for the ratio of rates (`score_interval`, compare="ratio"); at
    rho = 1 its statistic is the pooled z. Real-valued: Fieller's interval
    (`policies.stats.effects.fieller_interval`) with the t quantile of `welch_test`; at rho = 1
    Fieller's statistic is Welch's t. `nonnegative` says the values cannot be negative, so
    neither can the ratio: the interval then stops at -100%. Bounds may be infinite (the
    control's mean not distinguishable from 0).
    """
    if isinstance(treatment, BinaryStats) and isinstance(control, BinaryStats):
        return score_interval(treatment, control, _z_critical(alpha), "ratio")
    if isinstance(treatment, MeanStats) and isinstance(control, MeanStats):
        v_t, v_c, _ = mean_variances(treatment, control)
        return fieller_interval(Effect(treatment.total / treatment.n, v_t), Effect(control.total / control.n, v_c),
                                t_critical(treatment, control, alpha), nonnegative=nonnegative)
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
