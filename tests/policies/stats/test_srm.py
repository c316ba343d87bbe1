"""Sample ratio mismatch."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from policies.stats.srm import sample_ratio_test


def test_reference_two_arms() -> None:
    # scipy.stats.chisquare([5100, 4900], [5000, 5000])
    result = sample_ratio_test([5100, 4900], [0.5, 0.5])
    assert_allclose([result.statistic, result.p_value], [4.0, 0.04550026389635857], rtol=1e-9)
    assert not result.flagged


def test_reference_unequal_weights_are_normalised() -> None:
    # scipy.stats.chisquare([5000, 5000, 10400], [5100, 5100, 10200])
    result = sample_ratio_test([5000, 5000, 10400], [1, 1, 2])
    assert_allclose([result.statistic, result.p_value], [7.8431372549019605, 0.01980999585615844], rtol=1e-9)
    assert not result.flagged
    assert sample_ratio_test([5000, 5000, 10400], [1, 1, 2], threshold=0.05).flagged


def test_broken_split_is_flagged() -> None:
    result = sample_ratio_test([10_000, 9_400], [0.5, 0.5])
    assert result.p_value is not None and result.p_value < 0.001
    assert result.flagged


def test_exposures_in_a_zero_weight_arm() -> None:
    assert sample_ratio_test([100, 100, 3], [0.5, 0.5, 0.0]).flagged
    assert sample_ratio_test([100, 100, 0], [0.5, 0.5, 0.0]).p_value is not None


def test_no_exposures_cannot_conclude() -> None:
    result = sample_ratio_test([0, 0], [0.5, 0.5])
    assert result.p_value is None and not result.flagged


def test_caller_bugs_raise() -> None:
    with pytest.raises(ValueError):
        sample_ratio_test([1, 2, 3], [0.5, 0.5])
    with pytest.raises(ValueError):
        sample_ratio_test([1, 2], [-1, 2])


def test_false_alarm_rate_of_a_healthy_split() -> None:
    rng = np.random.default_rng(3)
    exposures = rng.multinomial(20_000, [0.2, 0.3, 0.5], size=2000)
    flagged = [sample_ratio_test(e, [0.2, 0.3, 0.5], threshold=0.01).flagged for e in exposures]
    assert np.mean(flagged) <= 0.02
