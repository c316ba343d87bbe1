"""Fixed-horizon tests and intervals: reference values, live cross-checks, properties, A/A."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy import stats as sps
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from policies.stats.frequentist import (
    difference_interval,
    lift_interval,
    omnibus_test,
    proportions_z_test,
    rate_interval,
    score_interval,
    score_statistic,
    two_proportion_test,
    welch_test,
)
from policies.sufficient import BinaryStats, MeanStats

RTOL = 1e-9


def test_z_test_reference() -> None:
    # statsmodels.stats.proportion.proportions_ztest([260, 200], [4000, 4000])
    result = two_proportion_test(BinaryStats(4000, 260), BinaryStats(4000, 200))
    assert result.method == "z_test"
    assert_allclose([result.statistic, result.p_value], [2.881586461903164, 0.003956786600976492], rtol=RTOL)
    # proportions_ztest([52, 61], [1210, 1187])
    result = two_proportion_test(BinaryStats(1210, 52), BinaryStats(1187, 61))
    assert_allclose([result.statistic, result.p_value], [-0.9718769694181318, 0.33111175848686514], rtol=RTOL)


def test_small_counts_keep_the_z_test() -> None:
    # No switch to Fisher's exact test: the z-test is the score test that the intervals invert.
    # statsmodels.stats.proportion.proportions_ztest([1, 6], [100, 100])
    result = two_proportion_test(BinaryStats(100, 1), BinaryStats(100, 6))
    assert result.method == "z_test"
    assert_allclose([result.statistic, result.p_value], [-1.923788514932202, 0.05438109761638306], rtol=RTOL)


def test_z_test_size_at_small_counts_is_near_nominal() -> None:
    """Exact size of the pooled z-test at alpha 0.05 with 40 per arm (every outcome enumerated):
    0.0074, 0.043, 0.059, 0.048 at rates 0.02, 0.05, 0.1, 0.3, where Cochran's rule used to
    switch to Fisher's test, whose size there is 0.0001, 0.004, 0.017, 0.028 (the same
    enumeration with scipy.stats.fisher_exact): it paid power for nothing."""
    x = np.arange(41)
    _, p = proportions_z_test(x[:, None], 40, x[None, :], 40)
    sizes = []
    for rate in (0.02, 0.05, 0.1, 0.3):
        weight = np.outer(sps.binom.pmf(x, 40, rate), sps.binom.pmf(x, 40, rate))
        sizes.append(float(np.sum(weight * (p < 0.05))))
    assert_allclose(sizes, [0.007445955786422925, 0.04342003881868224, 0.05874988659232852, 0.04836893389696355],
                    rtol=1e-9)
    assert max(sizes) < 0.06


def test_chi_square_omnibus_reference() -> None:
    # scipy.stats.chi2_contingency([[200, 3800], [260, 3740], [215, 3785]], correction=False)
    result = omnibus_test([BinaryStats(4000, 200), BinaryStats(4000, 260), BinaryStats(4000, 215)])
    assert result is not None and result.method == "chi_square"
    assert_allclose([result.statistic, result.p_value], [9.183222958057394, 0.010136510430740885], rtol=RTOL)


def test_omnibus_undefined_without_conversions() -> None:
    assert omnibus_test([BinaryStats(100, 0), BinaryStats(100, 0)]) is None


def test_welch_anova_omnibus_reference() -> None:
    # Arms with means 2.5, 2.9, 2.7, sample variances 4.0, 5.0, 4.5 and n 480, 500, 490:
    # statsmodels.stats.oneway.anova_generic(np.array([2.5, 2.9, 2.7]),
    #     np.array([4.0, 5.0, 4.5]), np.array([480., 500., 490.]), use_var="unequal")
    arms = [
        MeanStats(n, m * n, (n - 1) * v + n * m * m) for n, m, v in [(480, 2.5, 4.0), (500, 2.9, 5.0), (490, 2.7, 4.5)]
    ]
    result = omnibus_test(arms)
    assert result is not None and result.method == "welch_anova"
    assert_allclose([result.statistic, result.p_value], [4.372693692322376, 0.012864925624978934], rtol=RTOL)


def test_wilson_interval_reference() -> None:
    # statsmodels.stats.proportion.proportion_confint(260, 4000, alpha=0.05, method="wilson")
    interval = rate_interval(BinaryStats(4000, 260), 0.05)
    assert_allclose([interval.low, interval.high], [0.0577698514733424, 0.07306486418869791], rtol=RTOL)


def test_score_difference_interval_reference() -> None:
    # Score interval (Miettinen & Nurminen 1985 without the n/(n-1) factor), bounds where the score
    # z equals -+1.959963984540054; the constrained rates from the appendix's cubic (computed by
    # hand in numpy). statsmodels' confint_proportions_2indep(260, 4000, 200, 4000, method="score",
    # compare="diff", correction=False) gives (0.0048157212, 0.0252533148): its closed form has
    # x_c where the cubic has n_c (checked by the grid search in the test below).
    interval = difference_interval(BinaryStats(4000, 260), BinaryStats(4000, 200), 0.05)
    assert_allclose([interval.estimate, interval.low, interval.high],
                    [0.015, 0.004814780973671323, 0.025274022805412244], rtol=1e-7)
    for bound, sign in ((interval.low, 1), (interval.high, -1)):
        assert_allclose(score_statistic(BinaryStats(4000, 260), BinaryStats(4000, 200), bound, "diff"),
                        sign * 1.959963984540054, rtol=1e-9)


def test_constrained_rates_maximise_the_likelihood() -> None:
    """The score statistic's rates under the hypothesis are the likelihood's maximum: a grid search
    over p_c with scipy.stats.binom.logpmf, at p_t - p_c = 0.02."""
    grid = np.linspace(0.0, 0.98, 980_001)
    p_c = grid[np.argmax(sps.binom.logpmf(260, 4000, grid + 0.02) + sps.binom.logpmf(200, 4000, grid))]
    p_t = p_c + 0.02
    z = (0.065 - 0.05 - 0.02) / np.sqrt(p_t * (1 - p_t) / 4000 + p_c * (1 - p_c) / 4000)
    assert_allclose(score_statistic(BinaryStats(4000, 260), BinaryStats(4000, 200), 0.02, "diff"), z, rtol=1e-6)


def test_score_ratio_interval_matches_statsmodels_koopman() -> None:
    # statsmodels.stats.proportion.confint_proportions_2indep(260, 4000, 200, 4000, method="score",
    #     compare="ratio", correction=False) -> (1.0872044651904695, 1.5546499104034648)
    interval = lift_interval(BinaryStats(4000, 260), BinaryStats(4000, 200), 0.05)
    assert_allclose([interval.estimate, interval.low, interval.high],
                    [0.3, 0.0872044651904695, 0.5546499104034648], rtol=1e-8)


@pytest.mark.parametrize(("treatment", "control"), [
    (BinaryStats(40, 0), BinaryStats(40, 1)),
    (BinaryStats(40, 0), BinaryStats(40, 40)),
    (BinaryStats(40, 40), BinaryStats(40, 40)),
    (BinaryStats(30, 30), BinaryStats(30, 1)),
    (BinaryStats(100_000, 0), BinaryStats(100_000, 3)),
])
def test_score_intervals_at_extreme_counts_have_width(treatment: BinaryStats, control: BinaryStats) -> None:
    for compare in ("diff", "ratio"):
        interval = score_interval(treatment, control, 1.959963984540054, compare)  # type: ignore[arg-type]
        assert interval.low <= interval.estimate <= interval.high and interval.low < interval.high
        assert interval.low >= -1.0 and (compare == "ratio" or interval.high <= 1.0)


def test_welch_reference() -> None:
    # Treatment n=500, total=1450, total_sq=9800; control n=480, total=1200, total_sq=7300:
    # scipy.stats.ttest_ind_from_stats(2.9, sqrt((9800 - 500 * 2.9**2) / 499), 500,
    #     2.5, sqrt((7300 - 480 * 2.5**2) / 479), 480, equal_var=False)
    result = welch_test(MeanStats(500, 1450.0, 9800.0), MeanStats(480, 1200.0, 7300.0))
    assert_allclose([result.statistic, result.p_value], [1.9724065630387293, 0.048845964438450615], rtol=RTOL)


def test_welch_interval_excludes_zero_exactly_when_significant() -> None:
    treatment, control = MeanStats(500, 1450.0, 9800.0), MeanStats(480, 1200.0, 7300.0)
    p_value = welch_test(treatment, control).p_value
    for alpha in (p_value * 0.99, p_value * 1.01):
        interval = difference_interval(treatment, control, alpha)
        assert (interval.low > 0) == (p_value < alpha)


def test_zero_variance_is_a_result_not_an_error() -> None:
    assert welch_test(MeanStats(50, 0.0, 0.0), MeanStats(50, 0.0, 0.0)).p_value == 1.0
    z, p = proportions_z_test(0, 100, 0, 100)
    assert (float(z), float(p)) == (0.0, 1.0)


def test_caller_bugs_raise() -> None:
    with pytest.raises(ValueError):
        two_proportion_test(BinaryStats(0, 0), BinaryStats(10, 1))
    with pytest.raises(ValueError):
        welch_test(MeanStats(1, 1.0, 1.0), MeanStats(10, 5.0, 5.0))


counts = st.integers(min_value=20, max_value=5000).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=n))
)


@given(counts, counts)
def test_z_test_matches_statsmodels_live(t: tuple[int, int], c: tuple[int, int]) -> None:
    (n_t, x_t), (n_c, x_c) = t, c
    pooled = (x_t + x_c) / (n_t + n_c)
    if pooled in (0.0, 1.0):
        return  # statsmodels returns NaN there; we return p = 1 (tested above)
    z, p = proportions_z_test(x_t, n_t, x_c, n_c)
    z_ref, p_ref = proportions_ztest([x_t, x_c], [n_t, n_c])
    assert_allclose([z, p], [z_ref, p_ref], rtol=RTOL, atol=1e-300)


@given(counts, counts)
def test_two_proportion_test_is_symmetric(t: tuple[int, int], c: tuple[int, int]) -> None:
    a, b = BinaryStats(*t), BinaryStats(*c)
    forward, backward = two_proportion_test(a, b), two_proportion_test(b, a)
    assert 0.0 <= forward.p_value <= 1.0
    assert_allclose(forward.p_value, backward.p_value, rtol=1e-9)


@given(counts, counts)
def test_two_arm_omnibus_equals_z_test(t: tuple[int, int], c: tuple[int, int]) -> None:
    a, b = BinaryStats(*t), BinaryStats(*c)
    omnibus = omnibus_test([a, b])
    if omnibus is None:
        return
    _, p = proportions_z_test(a.successes, a.n, b.successes, b.n)
    assert_allclose(omnibus.p_value, p, rtol=1e-7, atol=1e-12)


@given(
    st.tuples(st.integers(2, 2000), st.floats(0, 100), st.floats(0.1, 50)),
    st.tuples(st.integers(2, 2000), st.floats(0, 100), st.floats(0.1, 50)),
)
def test_welch_matches_scipy_live(t: tuple[int, float, float], c: tuple[int, float, float]) -> None:
    (n_t, m_t, s_t), (n_c, m_c, s_c) = t, c
    treatment = MeanStats(n_t, m_t * n_t, (n_t - 1) * s_t**2 + n_t * m_t**2)
    control = MeanStats(n_c, m_c * n_c, (n_c - 1) * s_c**2 + n_c * m_c**2)
    result = welch_test(treatment, control)
    ref = sps.ttest_ind_from_stats(
        treatment.mean,
        np.sqrt(treatment.variance),
        n_t,
        control.mean,
        np.sqrt(control.variance),
        n_c,
        equal_var=False,
    )
    assert_allclose([result.statistic, result.p_value], [ref.statistic, ref.pvalue], rtol=1e-7, atol=1e-300)


def test_aa_false_positive_rate() -> None:
    """2,000 A/A tests at alpha 0.05 (the z-test as used in reports)."""
    rng = np.random.default_rng(20240501)
    n = rng.integers(200, 5000, size=(2000, 2))
    rate = rng.uniform(0.02, 0.3, size=2000)
    successes = rng.binomial(n, rate[:, None])
    p_values = np.array(
        [
            two_proportion_test(BinaryStats(int(a), int(x)), BinaryStats(int(b), int(y))).p_value
            for (a, b), (x, y) in zip(n, successes, strict=True)
        ]
    )
    assert 0.035 <= np.mean(p_values < 0.05) <= 0.065


@settings(max_examples=60, deadline=None)
@given(counts, counts)
def test_score_ratio_interval_matches_statsmodels_live(t: tuple[int, int], c: tuple[int, int]) -> None:
    (n_t, x_t), (n_c, x_c) = t, c
    if not (0 < x_t < n_t and 0 < x_c < n_c):
        return  # statsmodels' closed form returns complex or wrong roots at 0 or n (see the test below)
    interval = lift_interval(BinaryStats(n_t, x_t), BinaryStats(n_c, x_c), 0.05)
    low, high = confint_proportions_2indep(x_t, n_t, x_c, n_c, method="score", compare="ratio", correction=False)
    assert_allclose([interval.low + 1, interval.high + 1], [low, high], rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(counts, counts, st.sampled_from([0.01, 0.05, 0.2]))
def test_score_intervals_exclude_no_effect_exactly_when_the_z_test_rejects(
    t: tuple[int, int], c: tuple[int, int], alpha: float
) -> None:
    treatment, control = BinaryStats(*t), BinaryStats(*c)
    p_value = two_proportion_test(treatment, control).p_value
    diff = difference_interval(treatment, control, alpha)
    assert (diff.low > 0 or diff.high < 0) == (p_value < alpha)
    if control.successes:
        lift = lift_interval(treatment, control, alpha)
        assert (lift.low > 0 or lift.high < 0) == (p_value < alpha)


def test_lift_intervals_cover_the_true_lift() -> None:
    """1,000 simulated experiments each (seed 11): the 95% score interval of the rate ratio and the
    95% Fieller interval of the ratio of means cover the true +15% in 93-97% of them."""
    rng = np.random.default_rng(11)
    n, p_c = 3000, 0.06
    x_t, x_c = rng.binomial(n, p_c * 1.15, 1000), rng.binomial(n, p_c, 1000)
    rates = [lift_interval(BinaryStats(n, int(a)), BinaryStats(n, int(b)), 0.05) for a, b in zip(x_t, x_c, strict=True)]
    assert 0.93 <= np.mean([i.low <= 0.15 <= i.high for i in rates]) <= 0.97
    # Revenue: 400 units per arm, log-normal values with mean 2 (control) and 2.3 (treatment).
    sigma = 1.0
    values_t = rng.lognormal(np.log(2.3) - sigma**2 / 2, sigma, size=(1000, 400))
    values_c = rng.lognormal(np.log(2.0) - sigma**2 / 2, sigma, size=(1000, 400))
    means = [
        lift_interval(MeanStats(400, float(t.sum()), float((t**2).sum())),
                      MeanStats(400, float(c.sum()), float((c**2).sum())), 0.05)
        for t, c in zip(values_t, values_c, strict=True)
    ]
    assert 0.93 <= np.mean([i.low <= 0.15 <= i.high for i in means]) <= 0.97
