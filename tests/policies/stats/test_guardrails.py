"""Guardrail non-inferiority tests, their always-valid form, and the ship decision with guardrails."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from policies.stats.guardrails import GuardrailResult, GuardrailStatus, guardrail_test, guardrail_verdict
from policies.stats.verdicts import VariantOutcome, Verdict, VerdictStatus
from policies.sufficient import ArmStats, BinaryStats, MeanStats

Z_975 = 1.959963984540054  # scipy.stats.norm.ppf(0.975)


def test_binary_reference_harm_is_an_increase() -> None:
    # statsmodels.stats.proportion.test_proportions_2indep(236, 12000, 210, 11800, value=1.2,
    #     method="log", compare="ratio", alternative="smaller").pvalue == 0.1902745389875095
    # confint_proportions_2indep(236, 12000, 210, 11800, method="log", compare="ratio",
    #     alpha=0.05) == (0.9191844116213376, 1.32856953151561)
    result = guardrail_test(BinaryStats(12000, 236), BinaryStats(11800, 210), metric="unsubscribe", arm="b",
                            margin=0.2, direction="decrease")
    assert_allclose(result.p_value, 0.1902745389875095, rtol=1e-9)
    assert_allclose([result.ci_low, result.ci_high], [0.9191844116213376 - 1, 1.32856953151561 - 1], rtol=1e-9)
    assert_allclose(result.relative_difference, (236 / 12000) / (210 / 11800) - 1, rtol=1e-12)
    assert result.bound == result.ci_high and result.boundary == pytest.approx(0.2)
    assert (result.status, result.non_inferior, result.failed, result.level) == ("inconclusive", False, False, 0.025)
    assert result.reason == "+10.5% [-8.1%, +32.9%] overlaps the margin +20.0%"


def test_binary_reference_harm_is_a_decrease() -> None:
    # test_proportions_2indep(1890, 9000, 2010, 9100, value=0.9, method="log", compare="ratio",
    #     alternative="larger").pvalue == 0.026645151886131632
    # confint_proportions_2indep(1890, 9000, 2010, 9100, method="log", compare="ratio",
    #     alpha=0.10) == (0.907379565769595, 0.9961856112530039)
    result = guardrail_test(BinaryStats(9000, 1890), BinaryStats(9100, 2010), metric="retention", arm="b",
                            margin=0.1, direction="increase", alpha=0.10)
    assert_allclose(result.p_value, 0.026645151886131632, rtol=1e-9)
    assert_allclose([result.ci_low, result.ci_high], [0.907379565769595 - 1, 0.9961856112530039 - 1], rtol=1e-9)
    assert result.bound == result.ci_low and result.boundary == pytest.approx(-0.1)
    assert (result.status, result.non_inferior) == ("non_inferior", True)


def test_mean_reference_by_delta_method() -> None:
    # Delta method on log(mean_t / mean_c), by hand: mean_t = 3.3, s_t^2 = (9000 - 400 * 3.3^2) / 399,
    # mean_c = 3.0, s_c^2 = (8000 - 380 * 3^2) / 379; Var = s_t^2 / (400 * 3.3^2) + s_c^2 / (380 * 3^2).
    treatment, control = MeanStats(400, 1320.0, 9000.0), MeanStats(380, 1140.0, 8000.0)
    var = (4644 / 399) / (400 * 3.3**2) + (4580 / 379) / (380 * 9)
    theta = math.log(1.1)
    result = guardrail_test(treatment, control, metric="revenue", arm="b", margin=0.1, direction="increase")
    assert_allclose(result.relative_difference, 0.1, rtol=1e-12)
    half = Z_975 * math.sqrt(var)
    assert_allclose([result.ci_low, result.ci_high], [math.exp(theta - half) - 1, math.exp(theta + half) - 1],
                    rtol=1e-9)
    # one-sided test of H0: theta <= log(0.9): p = P(Z > (theta - log 0.9) / se)
    assert_allclose(result.p_value, 0.5 * math.erfc((theta - math.log(0.9)) / math.sqrt(var) / math.sqrt(2)),
                    rtol=1e-9)


def test_failed_when_the_interval_lies_beyond_the_margin() -> None:
    result = guardrail_test(BinaryStats(10000, 320), BinaryStats(10000, 200), metric="unsubscribe", arm="b",
                            margin=0.2, direction="decrease")
    assert (result.status, result.failed, result.non_inferior) == ("failed", True, False)
    assert result.ci_low is not None and result.ci_low > 0.2
    assert result.p_value is not None and result.p_value > 1 - result.level


def _arms(draw: st.DrawFn) -> tuple[BinaryStats, BinaryStats]:
    n_t, n_c = draw(st.integers(50, 50_000)), draw(st.integers(50, 50_000))
    return (BinaryStats(n_t, draw(st.integers(1, n_t))), BinaryStats(n_c, draw(st.integers(1, n_c))))


arm_pairs = st.composite(_arms)


@given(arm_pairs(), st.floats(0.01, 0.9), st.sampled_from(["increase", "decrease"]), st.floats(0.001, 0.3),
       st.booleans())
def test_shown_interval_agrees_with_the_verdict(
    arms: tuple[BinaryStats, BinaryStats], margin: float, direction: str, alpha: float, sequential: bool
) -> None:
    result = guardrail_test(*arms, metric="m", arm="b", margin=margin, direction=direction,  # type: ignore[arg-type]
                            alpha=alpha, sequential=sequential)
    if result.status == "not_testable":  # every conversion in both arms: no variation
        return
    assert result.ci_low is not None and result.ci_high is not None and result.p_value is not None
    assert result.ci_low <= result.relative_difference <= result.ci_high  # type: ignore[operator]
    harm_up = direction == "decrease"
    inside = result.ci_high < result.boundary if harm_up else result.ci_low > result.boundary
    beyond = result.ci_low > result.boundary if harm_up else result.ci_high < result.boundary
    if min(abs(result.ci_low - result.boundary), abs(result.ci_high - result.boundary)) > 1e-9:
        assert result.non_inferior == inside
        assert result.failed == beyond
    if abs(result.p_value - result.level) > 1e-9:
        assert result.non_inferior == (result.p_value < result.level)
    assert not (result.non_inferior and result.failed)


def test_always_valid_interval_is_wider_and_agrees_with_its_p_value() -> None:
    arms = (BinaryStats(40_000, 800), BinaryStats(40_000, 790))
    fixed = guardrail_test(*arms, metric="m", arm="b", margin=0.2, direction="decrease")
    sequential = guardrail_test(*arms, metric="m", arm="b", margin=0.2, direction="decrease", sequential=True)
    assert sequential.method == "log_ratio_msprt" and sequential.level == 0.05
    assert sequential.ci_low < fixed.ci_low and sequential.ci_high > fixed.ci_high  # type: ignore[operator]
    assert fixed.non_inferior and sequential.non_inferior
    assert sequential.p_value is not None and sequential.p_value < 0.05


@pytest.mark.parametrize(
    ("treatment", "control", "why"),
    [
        (BinaryStats(100, 3), BinaryStats(0, 0), "the control has 0 exposures"),
        (BinaryStats(0, 0), BinaryStats(100, 3), "the variant has 0 exposures"),
        (BinaryStats(100, 3), BinaryStats(100, 0), "the control has no conversions"),
        (BinaryStats(100, 0), BinaryStats(100, 3), "the variant has no conversions"),
        (MeanStats(1, 2.0, 4.0), MeanStats(50, 100.0, 400.0), "at least 2"),
        (MeanStats(50, 100.0, 400.0), MeanStats(50, 0.0, 0.0), "mean <= 0"),
        (MeanStats(50, -10.0, 400.0), MeanStats(50, 100.0, 400.0), "mean <= 0"),
        (MeanStats(50, 100.0, 200.0), MeanStats(50, 100.0, 200.0), "no interval"),  # every value 2.0
        (BinaryStats(100, 100), BinaryStats(100, 100), "no interval"),
    ],
)
def test_not_testable_states_invent_no_numbers(treatment: ArmStats, control: ArmStats, why: str) -> None:
    result = guardrail_test(treatment, control, metric="m", arm="b", margin=0.2, direction="decrease")
    assert (result.status, result.non_inferior, result.failed) == ("not_testable", False, False)
    assert (result.relative_difference, result.bound, result.ci_low, result.ci_high, result.p_value) == (None,) * 5
    assert why in result.reason


@pytest.mark.parametrize(
    "kwargs",
    [
        {"margin": 0.0},
        {"margin": -0.1},
        {"margin": math.nan},
        {"margin": 1.0, "direction": "increase"},
        {"direction": "down"},
        {"alpha": 0.0},
        {"alpha": 1.0},
    ],
)
def test_caller_bugs_raise(kwargs: dict[str, object]) -> None:
    options: dict[str, object] = {"margin": 0.2, "direction": "decrease"} | kwargs
    with pytest.raises(ValueError):
        guardrail_test(BinaryStats(100, 10), BinaryStats(100, 10), metric="m", arm="b", **options)  # type: ignore[arg-type]


def test_mixed_kinds_of_statistics_raise() -> None:
    with pytest.raises(ValueError, match="same kind"):
        guardrail_test(BinaryStats(100, 10), MeanStats(100, 10.0, 10.0), metric="m", arm="b", margin=0.2,
                       direction="decrease")


def _rejection_rates(rng: np.random.Generator, true_ratio: float, *, sequential: bool, reps: int, looks: int,
                     daily: int) -> tuple[float, float]:
    """Share of experiments that ever show non-inferiority / ever fail over `looks` daily looks
    (unsubscribe rate 2% in the control, margin 20%, harm is an increase)."""
    x_c = rng.binomial(daily, 0.02, size=(reps, looks)).cumsum(axis=1)
    x_t = rng.binomial(daily, 0.02 * true_ratio, size=(reps, looks)).cumsum(axis=1)
    shown, failed = np.zeros(reps, bool), np.zeros(reps, bool)
    for rep in range(reps):
        for look in range(looks):
            n = daily * (look + 1)
            result = guardrail_test(BinaryStats(n, int(x_t[rep, look])), BinaryStats(n, int(x_c[rep, look])),
                                    metric="unsubscribe", arm="b", margin=0.2, direction="decrease",
                                    sequential=sequential)
            shown[rep] |= result.non_inferior
            failed[rep] |= result.failed
    return float(shown.mean()), float(failed.mean())


def test_fixed_horizon_non_inferiority_has_level_alpha_over_two_at_the_margin() -> None:
    """One look at 20,000 per arm with the variant exactly at the margin (ratio 1.2)."""
    shown, failed = _rejection_rates(np.random.default_rng(11), 1.2, sequential=False, reps=4000, looks=1,
                                     daily=20_000)
    assert 0.015 <= shown <= 0.035  # nominal 0.025; binomial sd 0.0025
    assert 0.015 <= failed <= 0.035  # the other side of the same interval


@pytest.mark.slow
def test_always_valid_harm_test_survives_fifty_looks() -> None:
    """Bandit guardrail: 50 looks at 1,000 more exposures per arm each; harm is flagged when the
    always-valid interval lies beyond the margin. Without harm, and even at the margin itself,
    the chance of ever flagging stays below alpha = 0.05; real harm (ratio 1.6) is caught."""
    rng = np.random.default_rng(2024)
    _, no_harm = _rejection_rates(rng, 1.0, sequential=True, reps=400, looks=50, daily=1000)
    shown_at_margin, at_margin = _rejection_rates(rng, 1.2, sequential=True, reps=400, looks=50, daily=1000)
    _, harmful = _rejection_rates(rng, 1.6, sequential=True, reps=100, looks=50, daily=1000)
    assert no_harm <= 0.05  # 0.000
    assert at_margin <= 0.05  # 0.003
    assert shown_at_margin <= 0.05  # 0.008: nor is non-inferiority shown falsely
    assert harmful >= 0.9  # 1.0
    # the fixed-horizon interval, looked at 50 times, flags harm at the margin far more often
    _, peeking = _rejection_rates(rng, 1.2, sequential=False, reps=200, looks=50, daily=1000)
    assert peeking > 0.05  # 0.17


def _guardrail(arm: str, status: GuardrailStatus, metric: str = "unsubscribe") -> GuardrailResult:
    """A guardrail result in the given state (the numbers are illustrative)."""
    template = guardrail_test(BinaryStats(10_000, 200), BinaryStats(10_000, 200), metric=metric, arm=arm,
                              margin=0.2, direction="decrease")
    return replace(template, status=status, non_inferior=status == "non_inferior", failed=status == "failed",
                   reason=f"<{status}>")


B = VariantOutcome("b", 0.01, 0.2, 0.001)
C = VariantOutcome("c", 0.02, 0.4, 0.001)  # better than b on the primary
WIN_B = Verdict("winner", "b", "'b' beats control 'a'")
WIN_C = Verdict("winner", "c", "'c' beats control 'a'")
RUNNING = Verdict("keep_running", None, "40% of planned sample")


@pytest.mark.parametrize(
    ("primary", "variants", "guardrails", "status", "winner", "named"),
    [
        (Verdict("srm_invalid", None, "srm"), [B], [_guardrail("b", "failed")], "srm_invalid", None, ""),
        (Verdict("insufficient_data", None, "few"), [B], [_guardrail("b", "failed")], "insufficient_data", None, ""),
        (WIN_B, [B], [], "winner", "b", ""),
        (WIN_B, [B], [_guardrail("b", "non_inferior")], "winner", "b", "'unsubscribe'"),
        (WIN_B, [B], [_guardrail("b", "non_inferior"), _guardrail("b", "inconclusive", "complaints")],
         "keep_running", None, "'complaints' of 'b'"),
        (WIN_B, [B], [_guardrail("b", "not_testable")], "keep_running", None, "'unsubscribe' of 'b'"),
        (WIN_B, [B], [_guardrail("b", "failed")], "guardrail_failed", None, "'unsubscribe' of 'b'"),
        (WIN_C, [B, C], [_guardrail("c", "failed"), _guardrail("b", "non_inferior")], "winner", "b", "of 'c'"),
        (WIN_C, [B, C], [_guardrail("c", "inconclusive"), _guardrail("b", "non_inferior")], "winner", "b", "of 'c'"),
        (WIN_C, [B, C], [_guardrail("c", "failed"), _guardrail("b", "inconclusive")], "keep_running", None,
         "of 'c'"),
        (WIN_C, [B, C], [_guardrail("c", "failed"), _guardrail("b", "failed")], "guardrail_failed", None, "of 'b'"),
        (WIN_C, [B, C], [_guardrail("c", "non_inferior"), _guardrail("b", "failed")], "winner", "c", "of 'b'"),
        (RUNNING, [B], [_guardrail("b", "failed")], "guardrail_failed", None, "'unsubscribe' of 'b'"),
        (RUNNING, [B], [_guardrail("b", "inconclusive")], "keep_running", None, "40%"),
        (Verdict("no_difference", None, "flat"), [B], [_guardrail("b", "non_inferior")], "no_difference", None, ""),
        (Verdict("winner", "a", "every variant worse"), [replace(B, difference=-0.01)],
         [_guardrail("b", "failed")], "guardrail_failed", None, "of 'b'"),
    ],
)
def test_decision_rule(
    primary: Verdict,
    variants: list[VariantOutcome],
    guardrails: list[GuardrailResult],
    status: VerdictStatus,
    winner: str | None,
    named: str,
) -> None:
    verdict = guardrail_verdict(primary, variants, guardrails, alpha=0.05)
    assert (verdict.status, verdict.winner) == (status, winner)
    assert named in verdict.reason


def test_winner_reason_keeps_the_primary_reason() -> None:
    verdict = guardrail_verdict(WIN_B, [B], [_guardrail("b", "non_inferior")], alpha=0.05)
    assert verdict.reason.startswith("'b' beats control 'a'; guardrails held: 'unsubscribe' <non_inferior>")


@pytest.mark.parametrize("sequential", [False, True])
def test_a_huge_interval_stays_finite(sequential: bool) -> None:
    """A tiny, wildly spread sample gives a log-ratio interval past exp(709): its bound is capped,
    finite (JSON has no infinity), never an OverflowError."""
    result = guardrail_test(MeanStats(2, 1e-3, 1e6), MeanStats(2, 1.0, 1.0), metric="revenue", arm="b",
                            margin=0.2, direction="increase", sequential=sequential)
    assert result.status == "inconclusive"
    assert result.ci_low == -1.0 and math.isfinite(result.ci_high) and result.ci_high > 1e300
