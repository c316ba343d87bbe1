"""Breakdowns: per-level tests, Benjamini–Hochberg across levels, small levels, the cap."""

from __future__ import annotations

import pytest
from numpy.testing import assert_allclose
from statsmodels.stats.multitest import multipletests

from policies.stats.breakdown import OTHER, breakdown, to_dict
from policies.stats.frequentist import two_proportion_test, welch_test
from policies.sufficient import BinaryStats, MeanStats

ARMS = ["control", "b", "c"]


def test_p_values_are_the_per_level_tests_adjusted_together_by_bh() -> None:
    levels = {
        "email": [BinaryStats(800, 40), BinaryStats(820, 62), BinaryStats(790, 45)],
        "push": [BinaryStats(500, 30), BinaryStats(510, 28), BinaryStats(480, 41)],
        "sms": [BinaryStats(300, 9), BinaryStats(310, 18), BinaryStats(305, 10)],
    }
    result = breakdown(ARMS, levels, "control")
    raw = {(lv.level, a.arm): a.p_value for lv in result.levels for a in lv.arms if a.p_value is not None}
    for (level, arm), p in raw.items():
        stats = levels[level]
        assert p == two_proportion_test(stats[ARMS.index(arm)], stats[0]).p_value
    # Reference: statsmodels.stats.multitest.multipletests(raw, method="fdr_bh")[1] over all 6 cells.
    expected = multipletests(list(raw.values()), method="fdr_bh")[1]
    got = [a.p_value_adjusted for lv in result.levels for a in lv.arms if a.p_value is not None]
    assert_allclose(got, expected, rtol=1e-12)
    assert [lv.level for lv in result.levels] == ["email", "push", "sms"]  # largest first
    email = result.levels[0]
    assert email.arms[1].lift == pytest.approx((62 / 820) / (40 / 800) - 1)
    assert email.arms[0].lift is None and email.arms[0].p_value is None and email.units == 2410


def test_revenue_levels_use_welch() -> None:
    levels = {"a": [MeanStats(100, 500.0, 4000.0), MeanStats(100, 560.0, 4600.0)],
              "b": [MeanStats(60, 300.0, 2000.0), MeanStats(70, 300.0, 1900.0)]}
    result = breakdown(["control", "b"], levels, "control")
    assert result.levels[0].arms[1].p_value == welch_test(levels["a"][1], levels["a"][0]).p_value


def test_a_level_with_too_few_units_gets_no_test_and_says_why() -> None:
    levels = {"big": [BinaryStats(400, 20), BinaryStats(400, 35)], "tiny": [BinaryStats(12, 1), BinaryStats(40, 3)]}
    result = breakdown(["control", "b"], levels, "control")
    tiny = next(lv for lv in result.levels if lv.level == "tiny")
    assert tiny.note == "too few units: control below 30"
    assert all(a.p_value is None and a.p_value_adjusted is None for a in tiny.arms)
    big = result.levels[0]
    assert big.note is None and big.arms[1].p_value_adjusted == big.arms[1].p_value  # one test: BH is the identity


def test_levels_beyond_the_cap_are_pooled_into_other() -> None:
    levels = {f"l{i:02d}": [BinaryStats(100 + i, 5), BinaryStats(100 + i, 6)] for i in range(14)}
    result = breakdown(["control", "b"], levels, "control", max_levels=10)
    names = [lv.level for lv in result.levels]
    assert len(names) == 10 and names[-1] == OTHER
    assert names[:9] == [f"l{i:02d}" for i in range(13, 4, -1)]
    other = result.levels[-1]
    assert other.arms[0].units == sum(100 + i for i in range(5)) and other.units == 2 * other.arms[0].units
    assert to_dict(result)["max_levels"] == 10


def test_refusals() -> None:
    with pytest.raises(ValueError, match="control"):
        breakdown(["a", "b"], {}, "nobody")
    with pytest.raises(ValueError, match="one stats entry per arm"):
        breakdown(["a", "b"], {"x": [BinaryStats(50, 1)]}, "a")
