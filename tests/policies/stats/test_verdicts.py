"""Verdict rules, as a table of situations and the verdict each must get."""

from __future__ import annotations

import pytest

from policies.stats.srm import SrmResult
from policies.stats.verdicts import (
    VariantOutcome,
    VerdictStatus,
    ab_test_verdict,
    bandit_verdict,
    srm_verdict,
)

BETTER = VariantOutcome("b", 0.01, 0.2, 0.001)
BETTER_STILL = VariantOutcome("c", 0.02, 0.4, 0.01)
WORSE = VariantOutcome("c", -0.01, -0.2, 0.001)
FLAT = VariantOutcome("c", 0.001, 0.02, 0.6)


@pytest.mark.parametrize(
    ("variants", "smallest_n", "planned", "sequential", "status", "winner"),
    [
        ([BETTER], 10_000, 10_000, False, "winner", "b"),
        ([BETTER, BETTER_STILL], 10_000, 9_000, False, "winner", "c"),
        ([BETTER], 4_200, 10_000, False, "keep_running", None),
        ([BETTER], 4_200, 10_000, True, "winner", "b"),
        ([BETTER], 4_200, None, False, "keep_running", None),
        ([BETTER], 4_200, None, True, "winner", "b"),
        ([WORSE], 10_000, 10_000, False, "winner", "a"),
        ([WORSE, WORSE], 10_000, 10_000, False, "winner", "a"),
        ([WORSE, FLAT], 10_000, 10_000, False, "no_difference", None),
        ([WORSE, FLAT], 4_200, 10_000, True, "keep_running", None),
        ([FLAT], 10_000, 10_000, False, "no_difference", None),
        ([FLAT], 10_000, 10_000, True, "no_difference", None),
        ([FLAT], 4_200, 10_000, True, "keep_running", None),
    ],
)
def test_ab_test_rules(
    variants: list[VariantOutcome],
    smallest_n: int,
    planned: int | None,
    sequential: bool,
    status: VerdictStatus,
    winner: str | None,
) -> None:
    verdict = ab_test_verdict(
        "a",
        variants,
        smallest_n=smallest_n,
        planned_n_per_arm=planned,
        alpha=0.05,
        correction="holm",
        sequential=sequential,
    )
    assert (verdict.status, verdict.winner) == (status, winner)


def test_keep_running_reports_share_of_planned_sample() -> None:
    verdict = ab_test_verdict(
        "a",
        [FLAT],
        smallest_n=4_200,
        planned_n_per_arm=10_000,
        alpha=0.05,
        correction="holm",
        sequential=False,
    )
    assert verdict.reason.startswith("42% of planned sample (4,200 of 10,000 per arm)")


@pytest.mark.parametrize(
    ("prob_best", "exposures", "status", "winner"),
    [
        ([0.02, 0.97, 0.01], [150, 150, 150], "winner", "b"),
        ([0.02, 0.97, 0.01], [150, 150, 99], "keep_running", None),
        ([0.30, 0.60, 0.10], [5000, 5000, 5000], "keep_running", None),
        ([0.05, 0.95, 0.00], [100, 100, 100], "winner", "b"),
    ],
)
def test_bandit_rules(prob_best: list[float], exposures: list[int], status: VerdictStatus, winner: str | None) -> None:
    verdict = bandit_verdict(["a", "b", "c"], exposures, prob_best, prob_best_threshold=0.95, min_sample_per_arm=100)
    assert (verdict.status, verdict.winner) == (status, winner)


def test_srm_verdict() -> None:
    assert srm_verdict(None, 0.001) is None
    assert srm_verdict(SrmResult(1.0, 0.3, False), 0.001) is None
    verdict = srm_verdict(SrmResult(30.0, 1e-8, True), 0.001)
    assert verdict is not None and verdict.status == "srm_invalid" and verdict.winner is None
