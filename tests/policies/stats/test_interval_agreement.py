"""Every interval beside a verdict agrees with the test that decides it (issue: honest inference).

Through the public API `analyze`: the regression cases named in the issue, then a property over
random binary and revenue data, 2-4 arms, fixed horizon and sequential.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy import optimize
from scipy import stats as sps

from policies.stats.analysis import Analysis, AnalysisConfig, analyze
from policies.sufficient import BinaryStats, MeanStats


def _ab(stats: list[BinaryStats] | list[MeanStats], config: AnalysisConfig) -> Analysis:
    names = ["control", "b", "c", "d"][: len(stats)]
    return analyze(names, stats, kind="ab_test", control="control", expected_weights=None, config=config,
                   rng=np.random.default_rng(0))


REVENUE_CONTROL = MeanStats(3407, 1396.87, 52377.9767)
REVENUE_VARIANT = MeanStats(3461, 2422.7, 134698.29)


@pytest.mark.parametrize("sequential", [False, True])
def test_no_conversions_in_a_variant_give_an_interval_not_a_point(sequential: bool) -> None:
    """Issue: control 1/40, variant 0/40 showed lift -100% with interval [-100%, -100%]."""
    result = _ab([BinaryStats(40, 1), BinaryStats(40, 0)], AnalysisConfig(draws=200, sequential=sequential))
    b = result.arms[1]
    assert b.lift == -1.0
    assert b.lift_ci_low == -1.0  # a rate ratio cannot go below 0
    assert b.lift_ci_high is not None and b.lift_ci_high > 1.0  # 1 conversion in 40 says little
    comparison = result.comparisons[0]
    assert comparison.difference_ci_low < -0.025 < 0 < comparison.difference_ci_high


def test_no_conversions_reference_score_interval() -> None:
    # statsmodels.stats.proportion.confint_proportions_2indep(0, 40, 1, 40, method="score",
    #     compare="ratio", correction=False) -> (0.0, 3.7664381060466847): lift [-1, 2.7664...]
    b = _ab([BinaryStats(40, 1), BinaryStats(40, 0)], AnalysisConfig(draws=200)).arms[1]
    assert_allclose([b.lift_ci_low, b.lift_ci_high], [-1.0, 2.7664381060466847], rtol=1e-7)


def test_revenue_winner_has_a_lift_interval_that_excludes_zero() -> None:
    """Issue: "winner, lift +70.7%, p = 0.0202" beside a lift interval of (-3.5%, +145%)."""
    result = _ab([REVENUE_CONTROL, REVENUE_VARIANT], AnalysisConfig(metric_type="revenue", mde=1.0, draws=200))
    assert (result.verdict.status, result.verdict.winner) == ("winner", "b")
    b, comparison = result.arms[1], result.comparisons[0]
    assert_allclose(b.lift, 2422.7 / 3461 / (1396.87 / 3407) - 1, rtol=1e-12)
    assert b.p_value is not None and b.p_value == pytest.approx(0.0202, abs=5e-5)
    assert b.lift_ci_low is not None and b.lift_ci_low > 0
    assert comparison.difference_ci_low > 0
    # Fieller's bounds solve (m_t - rho m_c)^2 = q^2 (v_t + rho^2 v_c) with q the t quantile at
    # Welch's degrees of freedom; found here independently by scipy.optimize.brentq.
    m_t, m_c = REVENUE_VARIANT.mean, REVENUE_CONTROL.mean
    v_t, v_c = REVENUE_VARIANT.variance / 3461, REVENUE_CONTROL.variance / 3407  # type: ignore[operator]
    df = (v_t + v_c) ** 2 / (v_t**2 / 3460 + v_c**2 / 3406)
    q = sps.t.ppf(0.975, df)
    ref = sps.ttest_ind_from_stats(m_t, math.sqrt(v_t * 3461), 3461, m_c, math.sqrt(v_c * 3407), 3407,
                                   equal_var=False)
    assert_allclose(b.p_value, ref.pvalue, rtol=1e-9)

    def excess(rho: float) -> float:
        return abs(m_t - rho * m_c) / math.sqrt(v_t + rho**2 * v_c) - q

    low = optimize.brentq(excess, 0.5, m_t / m_c)
    high = optimize.brentq(excess, m_t / m_c, 10.0)
    assert_allclose([b.lift_ci_low, b.lift_ci_high], [low - 1, high - 1], rtol=1e-9)


def test_revenue_lift_interval_uses_welch_t_not_the_normal_quantile() -> None:
    """Issue: the lift interval used z_{0.975}; with few units the t quantile is visibly wider."""
    control, variant = MeanStats(31, 62.0, 400.0), MeanStats(33, 99.0, 900.0)
    b = _ab([control, variant], AnalysisConfig(metric_type="revenue", draws=200)).arms[1]
    m_t, m_c = variant.mean, control.mean
    v_t, v_c = variant.variance / 33, control.variance / 31  # type: ignore[operator]
    df = (v_t + v_c) ** 2 / (v_t**2 / 32 + v_c**2 / 30)

    def bound(q: float) -> float:  # upper Fieller bound at quantile q, by scipy.optimize.brentq
        return optimize.brentq(lambda rho: (m_t - rho * m_c) / math.sqrt(v_t + rho**2 * v_c) + q, m_t / m_c, 50) - 1

    assert b.lift_ci_high == pytest.approx(bound(sps.t.ppf(0.975, df)), rel=1e-9)
    assert b.lift_ci_high > bound(sps.norm.ppf(0.975)) + 1e-3


def test_unbounded_fieller_set_is_reported_as_null() -> None:
    """A control mean not distinguishable from 0 leaves the ratio unbounded: null, not invented."""
    control, variant = MeanStats(40, 4.0, 400.0), MeanStats(40, 6.0, 300.0)
    result = _ab([control, variant], AnalysisConfig(metric_type="revenue", draws=200))
    b = result.to_dict()["arms"][1]
    assert b["lift_ci_high"] is None and b["lift_ci_low"] == -1.0
    signed = _ab([control, variant], AnalysisConfig(metric_type="revenue", draws=200, negative_values=True))
    assert (signed.to_dict()["arms"][1]["lift_ci_low"], signed.to_dict()["arms"][1]["lift_ci_high"]) == (None, None)


def test_revenue_variant_without_any_value_gets_an_interval_not_a_point() -> None:
    """No revenue at all in the variant: s^2 = 0 is no variance estimate; Student's pooled t."""
    result = _ab([MeanStats(60, 600.0, 30_000.0), MeanStats(60, 0.0, 0.0)],
                 AnalysisConfig(metric_type="revenue", draws=200))
    b, comparison = result.arms[1], result.comparisons[0]
    assert comparison.method == "student_t_test"
    assert b.lift == -1.0 and b.lift_ci_low == -1.0
    assert b.lift_ci_high is not None and -1.0 < b.lift_ci_high < 0
    assert comparison.difference_ci_low < comparison.difference_ci_high < 0


# --- the property --------------------------------------------------------------------------------

def _binary_arm(draw: st.DrawFn) -> BinaryStats:
    n = draw(st.integers(30, 4000))
    rate = draw(st.sampled_from([0.005, 0.02, 0.05, 0.1, 0.3, 0.6, 0.95, 1.0]))
    spread = draw(st.integers(-20, 20))
    return BinaryStats(n, min(max(round(n * rate) + spread, 0), n))


def _revenue_arm(draw: st.DrawFn) -> MeanStats:
    """n units of which k bought, with mean m and standard deviation s among buyers (values >= 0
    when s <= m, the case the product stores; larger s stands in for heavy tails)."""
    n = draw(st.integers(30, 4000))
    k = draw(st.integers(0, n))
    m = draw(st.floats(0.5, 200.0))
    s = draw(st.sampled_from([0.0, 0.1, 1.0])) * m
    return MeanStats(n, k * m, k * (s * s + m * m))


@st.composite
def experiments(draw: st.DrawFn) -> tuple[list[BinaryStats] | list[MeanStats], AnalysisConfig]:
    revenue = draw(st.booleans())
    arms = draw(st.integers(2, 4))
    make = _revenue_arm if revenue else _binary_arm
    stats = [make(draw) for _ in range(arms)]
    config = AnalysisConfig(
        metric_type="revenue" if revenue else "binary",
        alpha=draw(st.sampled_from([0.05, 0.1, 0.01])),
        mde=draw(st.sampled_from([0.05, 0.5, 0.9, 2.0])),  # large ones plan few units: fixed-horizon verdicts
        power=draw(st.sampled_from([0.5, 0.8])),
        correction=draw(st.sampled_from(["holm", "none", "bonferroni", "bh"])),
        sequential=draw(st.booleans()),
        baseline=draw(st.sampled_from([None, None, 0.3 if not revenue else 1.0])),
        draws=50,
    )
    return stats, config


def _excludes_zero(low: float | None, high: float | None) -> bool:
    return (low is not None and low > 0) or (high is not None and high < 0)


@settings(max_examples=200, deadline=None)
@given(experiments())
def test_intervals_agree_with_the_test_that_decides(case: tuple[list[BinaryStats] | list[MeanStats],
                                                                AnalysisConfig]) -> None:
    stats, config = case
    result = _ab(stats, config).to_dict()
    rows = {row["arm"]: row for row in result["arms"]}
    varied = [not isinstance(s, MeanStats) or (s.variance or 0) > 0 for s in stats]
    for i, comparison in enumerate(result["comparisons"], start=1):
        row = rows[comparison["arm"]]
        lift_out = _excludes_zero(row["lift_ci_low"], row["lift_ci_high"])
        diff_out = _excludes_zero(comparison["difference_ci_low"], comparison["difference_ci_high"])
        # Both intervals exclude "no effect" exactly when the raw test rejects at alpha.
        assert lift_out == diff_out == (row["p_value"] < config.alpha), (row, comparison)
        assert row["lift_ci_low"] is not None and row["lift_ci_low"] >= -1.0  # values >= 0 here
        high = math.inf if row["lift_ci_high"] is None else row["lift_ci_high"]
        assert row["lift_ci_low"] <= row["lift"] <= high
        assert comparison["difference_ci_low"] <= comparison["difference"] <= comparison["difference_ci_high"]
        if varied[0] or varied[i]:  # with any variation in the data no interval is a point
            assert row["lift_ci_low"] < high
            assert comparison["difference_ci_low"] < comparison["difference_ci_high"]
    verdict = result["verdict"]
    if verdict["status"] == "winner" and verdict["winner"] != "control":
        row = rows[verdict["winner"]]
        comparison = next(c for c in result["comparisons"] if c["arm"] == verdict["winner"])
        assert row["lift_ci_low"] > 0 and comparison["difference_ci_low"] > 0
    if verdict["status"] == "winner" and verdict["winner"] == "control":
        for comparison in result["comparisons"]:
            assert comparison["difference_ci_high"] < 0 and rows[comparison["arm"]]["lift_ci_high"] < 0
