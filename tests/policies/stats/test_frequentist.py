"""Fixed-horizon tests and intervals: reference values, live cross-checks, properties, A/A."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy import stats as sps
from statsmodels.stats.proportion import proportions_ztest

from policies.stats.frequentist import (
    difference_interval,
    needs_exact_test,
    omnibus_test,
    proportions_z_test,
    rate_interval,
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


def test_fisher_reference_when_expected_counts_are_small() -> None:
    # 7 conversions in 200: expected successes per arm 3.5 < 5, so the exact test is used.
    # scipy.stats.fisher_exact([[1, 99], [6, 94]], alternative="two-sided")
    result = two_proportion_test(BinaryStats(100, 1), BinaryStats(100, 6))
    assert result.method == "fisher_exact"
    assert_allclose([result.statistic, result.p_value], [0.15824915824915825, 0.11840538106385107], rtol=RTOL)


@pytest.mark.parametrize(
    ("treatment", "control", "exact"),
    [
        (BinaryStats(100, 5), BinaryStats(100, 5), False),  # expected successes 5.0 each
        (BinaryStats(100, 5), BinaryStats(100, 4), True),  # 4.5
        (BinaryStats(100, 96), BinaryStats(100, 95), True),  # expected failures 4.5
        (BinaryStats(10, 0), BinaryStats(10_000, 0), True),  # nobody converted
    ],
)
def test_exact_test_threshold(treatment: BinaryStats, control: BinaryStats, exact: bool) -> None:
    assert needs_exact_test(treatment, control) is exact


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


def test_newcombe_difference_interval_reference() -> None:
    # statsmodels.stats.proportion.confint_proportions_2indep(260, 4000, 200, 4000,
    #     method="newcomb", compare="diff", alpha=0.05)
    interval = difference_interval(BinaryStats(4000, 260), BinaryStats(4000, 200), 0.05)
    assert_allclose(
        [interval.estimate, interval.low, interval.high],
        [0.015, 0.0047988895753926526, 0.025254129469704567],
        rtol=RTOL,
    )


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
    """2,000 A/A tests at alpha 0.05 (the z-test / Fisher switch as used in reports)."""
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
