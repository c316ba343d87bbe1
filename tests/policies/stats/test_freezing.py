"""Fixed plans and kept verdicts: the freeze and keep rules, and planning from a fixed baseline."""

from __future__ import annotations

import numpy as np
import pytest

from policies.stats.analysis import AnalysisConfig, analyze, planned_n_per_arm
from policies.stats.freezing import awaiting_plan, disagrees, freeze_pending, is_final, observed_baseline
from policies.stats.planning import plan_binary_sample_size, plan_mean_sample_size
from policies.stats.verdicts import Verdict
from policies.sufficient import BinaryStats, MeanStats


def test_the_observed_baseline_is_a_rate_inside_0_1_or_a_positive_mean_and_sd() -> None:
    assert observed_baseline(BinaryStats(200, 10)) == (0.05, None)
    assert observed_baseline(BinaryStats(200, 0)) is None  # no conversions yet: no plan from it
    assert observed_baseline(BinaryStats(200, 200)) is None
    assert observed_baseline(BinaryStats(0, 0)) is None
    mean, sd = observed_baseline(MeanStats(4, 10.0, 30.0))  # values 1, 2, 3, 4
    assert mean == 2.5 and sd == pytest.approx(np.std([1, 2, 3, 4], ddof=1), rel=1e-12)
    assert observed_baseline(MeanStats(4, 0.0, 0.0)) is None
    assert observed_baseline(MeanStats(3, 6.0, 12.0)) is None  # 2, 2, 2: no spread


def test_the_freeze_waits_for_every_arm_to_reach_min_sample_per_arm() -> None:
    why = freeze_pending(["a", "b", "c"], [150, 99, 120], 100)
    assert why is not None and "arm 'b' has 99" in why and "100 units" in why and "analysis.baseline" in why
    assert freeze_pending(["a", "b"], [100, 100], 100) is None


@pytest.mark.parametrize(("status", "winner", "after"), [
    ("winner", "b", "keep_running"), ("no_difference", None, "keep_running"), ("keep_running", None, "keep_running"),
    ("insufficient_data", None, "insufficient_data"), ("srm_invalid", None, "srm_invalid"),
])
def test_before_the_freeze_nothing_is_final(status: str, winner: str | None, after: str) -> None:
    verdict = awaiting_plan(Verdict(status, winner, "as analysed"), "no plan yet")  # type: ignore[arg-type]
    assert verdict.status == after
    assert verdict.reason == ("no plan yet" if after == "keep_running" else "as analysed")
    assert verdict.winner is None


def test_final_verdicts_and_disagreement() -> None:
    assert is_final("ab_test", Verdict("winner", "b", "")) and is_final("ab_test", Verdict("no_difference", None, ""))
    assert not is_final("ab_test", Verdict("keep_running", None, ""))
    assert not is_final("ab_test", Verdict("guardrail_failed", None, ""))
    assert is_final("bandit", Verdict("winner", "b", "")) and not is_final("bandit", Verdict("no_difference", None, ""))
    kept = Verdict("winner", "b", "significant")
    assert not disagrees(kept, Verdict("winner", "b", "another reason, same call"))
    assert disagrees(kept, Verdict("winner", "c", ""))
    assert disagrees(kept, Verdict("no_difference", None, ""))


def test_a_declared_rate_plans_as_plan_binary_sample_size_whatever_the_control_shows() -> None:
    config = AnalysisConfig(baseline=0.05, mde=0.2, draws=1000)
    expected = plan_binary_sample_size(0.05, 0.2).n_per_arm
    for control in (BinaryStats(500, 25), BinaryStats(500, 60)):
        analysis = analyze(["a", "b"], [control, BinaryStats(500, 30)], kind="ab_test", control="a",
                           expected_weights=None, config=config, rng=np.random.default_rng(0))
        assert analysis.planning.planned_n_per_arm == expected
        assert planned_n_per_arm(control, 2, config) == expected


def test_a_declared_sd_plans_revenue_instead_of_the_observed_sd() -> None:
    control = MeanStats(400, 2000.0, 2000.0 * 5 + 400 * 100.0)  # mean 5, sd about 10
    config = AnalysisConfig(metric_type="revenue", baseline=5.0, baseline_sd=3.0, draws=1000)
    expected = plan_mean_sample_size(5.0, 3.0, 0.1).n_per_arm
    assert planned_n_per_arm(control, 2, config) == expected
    observed = planned_n_per_arm(control, 2, AnalysisConfig(metric_type="revenue", baseline=5.0))
    assert observed == plan_mean_sample_size(5.0, control.variance ** 0.5, 0.1).n_per_arm != expected


@pytest.mark.parametrize("sd", [0.0, -1.0, float("nan"), float("inf")])
def test_a_baseline_sd_must_be_finite_and_positive(sd: float) -> None:
    with pytest.raises(ValueError, match="baseline_sd"):
        AnalysisConfig(metric_type="revenue", baseline=5.0, baseline_sd=sd)
