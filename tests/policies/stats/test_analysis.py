"""The report's analysis: contract shape, field applicability, verdicts end to end."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from statsmodels.stats.proportion import confint_proportions_2indep

from policies.stats.analysis import Analysis, AnalysisConfig, analyze, sequential_tau
from policies.stats.corrections import adjust_p_values
from policies.stats.effects import Effect, absolute_difference
from policies.stats.frequentist import pooled_variance, two_proportion_test
from policies.stats.planning import plan_mean_sample_size
from policies.stats.sequential import msprt_test
from policies.stats.sequential_planning import plan_sequential_sample_size
from policies.sufficient import BinaryStats, MeanStats

ARM_KEYS = [
    "arm", "exposures", "conversions", "rate", "ci_low", "ci_high", "lift", "lift_ci_low",
    "lift_ci_high", "p_value", "p_value_adjusted", "prob_beat_control", "prob_best",
    "expected_loss",
]  # fmt: skip
FAST = AnalysisConfig(draws=4000)


def _ab(
    stats: list[BinaryStats] | list[MeanStats],
    config: AnalysisConfig = FAST,
    weights: list[float] | None = None,
    seed: int = 0,
) -> Analysis:
    names = ["control", "b", "c", "d"][: len(stats)]
    return analyze(
        names,
        stats,
        kind="ab_test",
        control="control",
        expected_weights=weights,
        config=config,
        rng=np.random.default_rng(seed),
    )


def test_to_dict_is_plain_json_with_the_contract_keys() -> None:
    stats = [BinaryStats(40_000, 2000), BinaryStats(40_100, 2250), BinaryStats(39_900, 1990)]
    result = _ab(stats, weights=[1, 1, 1]).to_dict()
    json.dumps(result, allow_nan=False)
    assert list(result) == [
        "kind", "metric_type", "control", "arms", "comparisons", "test", "srm", "omnibus",
        "planning", "verdict", "cuped",
    ]  # fmt: skip
    assert result["cuped"] is None  # no covariate given
    assert [list(arm) for arm in result["arms"]] == [ARM_KEYS] * 3
    assert result["test"] == {"method": "z_test", "alpha": 0.05, "correction": "holm", "sequential": False}
    assert set(result["srm"]) >= {"p_value", "flagged"}
    assert set(result["planning"]) == {"planned_n_per_arm", "share_reached", "sequential_n_per_arm"}
    assert set(result["verdict"]) == {"status", "winner", "reason"}
    assert result["verdict"]["status"] == "winner" and result["verdict"]["winner"] == "b"


def test_ab_fields_come_from_the_tests_and_do_not_apply_to_the_control() -> None:
    stats = [BinaryStats(4000, 200), BinaryStats(4000, 260), BinaryStats(4000, 215)]
    result = _ab(stats)
    control, b, c = result.arms
    for field in ("lift", "lift_ci_low", "lift_ci_high", "p_value", "p_value_adjusted", "prob_beat_control"):
        assert getattr(control, field) is None
    raw = [two_proportion_test(s, stats[0]).p_value for s in stats[1:]]
    assert_allclose([b.p_value, c.p_value], raw, rtol=1e-12)
    assert_allclose([b.p_value_adjusted, c.p_value_adjusted], adjust_p_values(raw, "holm"), rtol=1e-12)
    assert_allclose(b.lift, 0.3, rtol=1e-12)
    assert b.lift_ci_low is not None and b.lift_ci_low > 0
    assert result.omnibus is not None and result.omnibus.method == "chi_square"
    assert result.srm is None
    assert [c.arm for c in result.comparisons] == ["b", "c"]


def test_keep_running_until_the_planned_sample() -> None:
    result = _ab([BinaryStats(4000, 200), BinaryStats(4000, 260)])
    assert result.verdict.status == "keep_running"
    assert result.planning.planned_n_per_arm == 31218  # see test_planning
    assert result.planning.share_reached == pytest.approx(4000 / 31218)
    assert result.verdict.reason.startswith("13% of planned sample")


def test_configured_baseline_drives_the_plan() -> None:
    config = AnalysisConfig(draws=1000, baseline=0.05)
    assert _ab([BinaryStats(4000, 100), BinaryStats(4000, 100)], config).planning.planned_n_per_arm == 31218


@pytest.mark.parametrize(
    ("stats", "reason"),
    [
        ([BinaryStats(29, 3), BinaryStats(5000, 300)], "'control' has 29 exposures"),
        ([BinaryStats(500, 0), BinaryStats(500, 4)], "'control' has no conversions"),
        ([BinaryStats(0, 0), BinaryStats(0, 0)], "'control' has 0 exposures"),
    ],
)
def test_insufficient_data(stats: list[BinaryStats], reason: str) -> None:
    result = _ab(stats)
    assert result.verdict.status == "insufficient_data"
    assert reason in result.verdict.reason
    assert all(arm.p_value is None and arm.lift is None for arm in result.arms)
    json.dumps(result.to_dict(), allow_nan=False)


def test_srm_invalid_beats_a_significant_winner() -> None:
    stats = [BinaryStats(40_000, 2000), BinaryStats(36_000, 2250)]
    result = _ab(stats, weights=[0.5, 0.5])
    assert result.srm is not None and result.srm.flagged
    assert result.verdict.status == "srm_invalid" and result.verdict.winner is None


def test_sequential_mode_can_stop_early() -> None:
    stats = [BinaryStats(4000, 200), BinaryStats(4000, 320)]
    config = AnalysisConfig(draws=1000, sequential=True)
    result = _ab(stats, config)
    assert result.test.method == "msprt" and result.test.sequential
    assert result.planning.share_reached is not None and result.planning.share_reached < 1
    assert result.verdict.status == "winner" and result.verdict.winner == "b"
    fixed = _ab(stats)
    assert fixed.verdict.status == "keep_running"
    seq_b, fixed_b = result.arms[1], fixed.arms[1]
    assert seq_b.lift == fixed_b.lift
    assert seq_b.lift_ci_low < fixed_b.lift_ci_low  # type: ignore[operator]
    assert seq_b.p_value > fixed_b.p_value  # type: ignore[operator]


def test_control_wins_when_every_variant_is_significantly_worse() -> None:
    stats = [BinaryStats(40_000, 2400), BinaryStats(40_000, 2000), BinaryStats(40_000, 1950)]
    result = _ab(stats)
    assert (result.verdict.status, result.verdict.winner) == ("winner", "control")


def test_no_difference_at_the_planned_sample() -> None:
    result = _ab([BinaryStats(40_000, 2000), BinaryStats(40_000, 2010)])
    assert result.verdict.status == "no_difference"


def test_small_counts_keep_the_z_test_and_its_score_intervals() -> None:
    result = _ab([BinaryStats(60, 1), BinaryStats(60, 4)])
    assert result.comparisons[0].method == "z_test" and result.test.method == "z_test"
    # statsmodels.stats.proportion.confint_proportions_2indep(4, 60, 1, 60, method="score",
    #     compare="ratio", correction=False)
    ref = confint_proportions_2indep(4, 60, 1, 60, method="score", compare="ratio", correction=False)
    assert_allclose([result.arms[1].lift_ci_low, result.arms[1].lift_ci_high], np.array(ref) - 1, rtol=1e-7)


def test_revenue_metric() -> None:
    stats = [MeanStats(4000, 2000.0, 9000.0), MeanStats(4010, 2400.0, 10_000.0)]
    result = _ab(stats, AnalysisConfig(metric_type="revenue", draws=1000))
    control, b = result.arms
    assert control.conversions is None and control.rate == 0.5
    assert result.test.method == "welch_t_test"
    assert result.omnibus is not None and result.omnibus.method == "welch_anova"
    assert b.p_value is not None and b.p_value < 0.01
    assert result.planning.planned_n_per_arm is not None


def test_revenue_from_binary_stats_keeps_conversions() -> None:
    result = _ab([BinaryStats(400, 20), BinaryStats(400, 30)], AnalysisConfig(metric_type="revenue", draws=1000))
    assert result.arms[1].conversions == 30
    assert result.test.method == "welch_t_test"


def _bandit(stats: list[BinaryStats], control: str | None = None, **config: float) -> Analysis:
    return analyze(
        ["a", "b", "c"],
        stats,
        kind="bandit",
        control=control,
        expected_weights=None,
        config=AnalysisConfig(draws=20_000, **config),  # type: ignore[arg-type]
        rng=np.random.default_rng(9),
    )


def test_bandit_reads_posteriors_only() -> None:
    result = _bandit([BinaryStats(2000, 100), BinaryStats(2000, 160), BinaryStats(2000, 95)])
    assert (result.verdict.status, result.verdict.winner) == ("winner", "b")
    for arm in result.arms:
        assert arm.p_value is None and arm.p_value_adjusted is None and arm.lift is None
        assert arm.prob_beat_control is None
        assert arm.ci_low is not None and arm.ci_low < arm.rate < arm.ci_high  # type: ignore[operator]
    # Partial pooling draws each arm toward the common mean: a (101 / 2002) and c up, b down.
    own = [101 / 2002, 161 / 2002, 96 / 2002]
    assert own[0] < result.arms[0].rate < own[1] and own[2] < result.arms[2].rate < own[1]
    assert own[0] < result.arms[1].rate < own[1]
    assert result.srm is None and result.omnibus is None
    assert result.test.correction is None
    json.dumps(result.to_dict(), allow_nan=False)


def test_bandit_with_control_adds_posterior_lift() -> None:
    result = _bandit([BinaryStats(2000, 100), BinaryStats(2000, 160), BinaryStats(2000, 95)], "a")
    b = result.arms[1]
    assert b.prob_beat_control is not None and b.prob_beat_control > 0.99
    assert b.lift is not None and b.lift_ci_low is not None and 0 < b.lift_ci_low < b.lift


def test_bandit_needs_enough_data_in_every_arm() -> None:
    result = _bandit([BinaryStats(2000, 100), BinaryStats(2000, 160), BinaryStats(99, 1)])
    assert result.arms[1].prob_best is not None and result.arms[1].prob_best > 0.95
    assert result.verdict.status == "keep_running"
    assert "'c' has 99 of the 100 exposures" in result.verdict.reason


def test_revenue_bandit_without_posterior_is_insufficient() -> None:
    result = analyze(
        ["a", "b"],
        [MeanStats(1, 3.0, 9.0), MeanStats(10, 30.0, 100.0)],
        kind="bandit",
        control=None,
        expected_weights=None,
        config=AnalysisConfig(metric_type="revenue"),
        rng=np.random.default_rng(0),
    )
    assert result.verdict.status == "insufficient_data"
    assert result.arms[0].ci_low is None and result.arms[0].rate == 3.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"arms": ["a"], "stats": [BinaryStats(10, 1)]},
        {"arms": ["a", "a"]},
        {"arms": ["a", "b"], "stats": [BinaryStats(10, 1)]},
        {"control": "z"},
        {"control": None},
        {"expected_weights": [1.0]},
        {"stats": [MeanStats(10, 1.0, 1.0), MeanStats(10, 1.0, 1.0)]},
        {"kind": "multi"},
    ],
)
def test_caller_bugs_raise(kwargs: dict[str, object]) -> None:
    call: dict[str, object] = {
        "arms": ["a", "b"],
        "stats": [BinaryStats(100, 5), BinaryStats(100, 6)],
        "kind": "ab_test",
        "control": "a",
        "expected_weights": None,
        "config": FAST,
        "rng": np.random.default_rng(0),
    } | kwargs
    arms, stats = call.pop("arms"), call.pop("stats")
    with pytest.raises(ValueError):
        analyze(arms, stats, **call)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": 0.0},
        {"correction": "holm-bonferroni"},
        {"metric_type": "count"},
        {"mde": 0.0},
        {"baseline": 1.5},
        {"prior_alpha": 0.0},
    ],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AnalysisConfig(**kwargs)  # type: ignore[arg-type]


arm_counts = st.integers(min_value=40, max_value=3000).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min_value=1, max_value=n // 4))
)


@settings(max_examples=30, deadline=None)
@given(st.lists(arm_counts, min_size=3, max_size=4), st.permutations(range(4)), st.booleans())
def test_relabelling_arms_permutes_results(
    counts: list[tuple[int, int]], permutation: list[int], sequential: bool
) -> None:
    order = [i for i in permutation if i < len(counts)]
    stats = [BinaryStats(n, x) for n, x in counts]
    names = [f"arm{i}" for i in range(len(stats))]
    config = AnalysisConfig(draws=500, sequential=sequential)
    base = analyze(
        names,
        stats,
        kind="ab_test",
        control="arm0",
        expected_weights=[1.0] * len(stats),
        config=config,
        rng=np.random.default_rng(0),
    )
    permuted = analyze(
        [names[i] for i in order],
        [stats[i] for i in order],
        kind="ab_test",
        control="arm0",
        expected_weights=[1.0] * len(stats),
        config=config,
        rng=np.random.default_rng(0),
    )
    assert [arm.arm for arm in permuted.arms] == [names[i] for i in order]
    exact = [
        "exposures",
        "rate",
        "ci_low",
        "ci_high",
        "lift",
        "lift_ci_low",
        "lift_ci_high",
        "p_value",
        "p_value_adjusted",
    ]
    for new, old in enumerate(order):
        a, b = permuted.arms[new].to_dict(), base.arms[old].to_dict()
        for key in exact:
            assert (a[key] is None) == (b[key] is None), key
            if a[key] is not None:
                assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-15), key
    assert permuted.verdict == base.verdict or permuted.verdict.status == base.verdict.status
    for part in ("omnibus", "srm"):
        new_part, old_part = getattr(permuted, part), getattr(base, part)
        assert (new_part is None) == (old_part is None)
        if new_part is not None:
            assert new_part.p_value == pytest.approx(old_part.p_value, rel=1e-9)


@pytest.mark.slow
def test_aa_false_positive_rate_through_analyze() -> None:
    """2,000 A/A experiments through the report path: 'winner' is a false positive."""
    rng = np.random.default_rng(42)
    n = 40_000  # beyond the plan for a 5% baseline, so significant results are final
    conversions = rng.binomial(n, 0.05, size=(2000, 2))
    config = AnalysisConfig(draws=200, baseline=0.05)
    winners = [
        _ab([BinaryStats(n, int(x)), BinaryStats(n, int(y))], config, seed=i).verdict.status == "winner"
        for i, (x, y) in enumerate(conversions)
    ]
    assert 0.035 <= np.mean(winners) <= 0.065


def test_near_zero_variance_revenue_control_gives_a_verdict_and_no_warning() -> None:
    """Every exposure of the control brought 0.1: its variance is 1e-18 by rounding, the planned
    effect size enormous, and the power solver used to leak a ConvergenceWarning into `report`."""
    stats = [MeanStats(1000, 100.0, 10.0), MeanStats(1000, 200.0, 100.0)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _ab(stats, AnalysisConfig(metric_type="revenue", draws=1000))
    assert [str(w.message) for w in caught] == []
    assert result.planning.planned_n_per_arm is None and result.verdict.status == "keep_running"


def _null_effect(treatment: BinaryStats, control: BinaryStats) -> Effect:
    return Effect(absolute_difference(treatment, control).estimate, pooled_variance(treatment, control))


def test_sequential_tau_comes_from_the_declared_baseline_not_the_data() -> None:
    """Two different observed controls, one declared 5% baseline: both p-values are the mSPRT's
    (of the difference, with the variance under no effect) with tau = 10% of 5%, so the mixture
    did not move with the data."""
    config = AnalysisConfig(draws=500, sequential=True, baseline=0.05)
    declared_tau_sq = (0.10 * 0.05) ** 2
    for control in (BinaryStats(8000, 400), BinaryStats(8000, 560)):
        variant = BinaryStats(8000, 470)
        result = _ab([control, variant], config)
        expected = msprt_test(_null_effect(variant, control), declared_tau_sq)
        assert result.arms[1].p_value == expected.p_value
        assert sequential_tau(0.05, config) ** 2 == pytest.approx(declared_tau_sq, rel=1e-12)
    # without a declared baseline the observed control rate (7%) is the fallback
    fallback = _ab([BinaryStats(8000, 560), BinaryStats(8000, 470)], AnalysisConfig(draws=500, sequential=True))
    expected = msprt_test(_null_effect(BinaryStats(8000, 470), BinaryStats(8000, 560)), (0.10 * 0.07) ** 2)
    assert fallback.arms[1].p_value == pytest.approx(expected.p_value, rel=1e-12)


def test_sequential_planning_is_reported_and_states_its_share() -> None:
    config = AnalysisConfig(draws=500, sequential=True, baseline=0.05)
    result = _ab([BinaryStats(4000, 200), BinaryStats(4000, 204)], config)
    sequential_n = plan_sequential_sample_size(0.05, 0.10).n_per_arm  # 47,108 (test_sequential_planning)
    assert result.planning.planned_n_per_arm == 31218  # the fixed-horizon plan stays (see test_planning)
    assert result.planning.sequential_n_per_arm == sequential_n
    assert result.planning.share_reached == pytest.approx(4000 / sequential_n)
    assert result.verdict.status == "keep_running"
    assert f"8% of sequential planned sample (4,000 of {sequential_n:,} per arm)" in result.verdict.reason
    assert _ab([BinaryStats(4000, 200), BinaryStats(4000, 204)]).planning.sequential_n_per_arm is None


def test_sequential_mode_ends_without_difference_at_the_sequential_n() -> None:
    config = AnalysisConfig(draws=500, sequential=True, baseline=0.05)
    n = plan_sequential_sample_size(0.05, 0.10).n_per_arm
    result = _ab([BinaryStats(n, n // 20), BinaryStats(n, n // 20 + 10)], config)
    assert result.verdict.status == "no_difference"
    early = _ab([BinaryStats(n - 1, n // 20), BinaryStats(n - 1, n // 20 + 10)], config)
    assert early.verdict.status == "keep_running"


def test_declared_sd_fixes_the_revenue_plans() -> None:
    config = AnalysisConfig(metric_type="revenue", draws=500, sequential=True, baseline=2.0, baseline_sd=7.0)
    plans = set()
    for total_sq in (60_000.0, 90_000.0):  # two observed spreads
        result = _ab([MeanStats(1000, 2000.0, total_sq), MeanStats(1000, 2100.0, total_sq)], config)
        plans.add((result.planning.planned_n_per_arm, result.planning.sequential_n_per_arm))
    assert plans == {(plan_mean_sample_size(2.0, 7.0, 0.10).n_per_arm,
                      plan_sequential_sample_size(2.0, 0.10, std=7.0).n_per_arm)}


@pytest.mark.parametrize("kwargs", [{"baseline_sd": 0.0}, {"baseline_sd": float("nan")}, {"sequential_looks": 0},
                                    {"sequential_looks": 1000}])
def test_sequential_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AnalysisConfig(**kwargs)  # type: ignore[arg-type]
