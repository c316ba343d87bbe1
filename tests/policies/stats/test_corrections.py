"""Multiple-testing corrections."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from statsmodels.stats.multitest import multipletests

from policies.stats.corrections import CORRECTIONS, Correction, adjust_p_values, check_correction

RAW = [0.01, 0.04, 0.03, 0.20]


@pytest.mark.parametrize(
    ("correction", "expected"),
    [
        # statsmodels.stats.multitest.multipletests([0.01, 0.04, 0.03, 0.20], method="holm")[1]
        ("holm", [0.04, 0.09, 0.09, 0.2]),
        # multipletests([0.01, 0.04, 0.03, 0.20], method="fdr_bh")[1]
        ("bh", [0.04, 0.05333333333333334, 0.05333333333333334, 0.2]),
        # multipletests([0.01, 0.04, 0.03, 0.20], method="bonferroni")[1]
        ("bonferroni", [0.04, 0.16, 0.12, 0.8]),
        ("none", RAW),
    ],
)
def test_reference(correction: Correction, expected: list[float]) -> None:
    assert_allclose(adjust_p_values(RAW, correction), expected, rtol=1e-9)


def test_unknown_correction_names_the_choices() -> None:
    with pytest.raises(ValueError, match="holm, bh, bonferroni, none"):
        check_correction("Holm")


def test_empty_and_invalid_inputs() -> None:
    assert adjust_p_values([], "holm").size == 0
    with pytest.raises(ValueError):
        adjust_p_values([0.5, float("nan")], "holm")


p_lists = st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=8)


@given(p_lists, st.sampled_from(CORRECTIONS))
def test_adjusted_never_below_raw_and_at_most_one(raw: list[float], correction: Correction) -> None:
    adjusted = adjust_p_values(raw, correction)
    assert np.all(adjusted >= np.asarray(raw) - 1e-15)
    assert np.all(adjusted <= 1.0)


@given(p_lists, st.sampled_from(CORRECTIONS), st.randoms(use_true_random=False))
def test_permuting_inputs_permutes_outputs(raw: list[float], correction: Correction, random) -> None:  # type: ignore[no-untyped-def]
    order = list(range(len(raw)))
    random.shuffle(order)
    adjusted = adjust_p_values(raw, correction)
    permuted = adjust_p_values([raw[i] for i in order], correction)
    assert_allclose(permuted, adjusted[order], rtol=1e-12)


@given(p_lists)
def test_holm_matches_statsmodels_live(raw: list[float]) -> None:
    # Holm is computed in policies because statsmodels' holm runs gc.collect() per call;
    # silence that here too, or this test spends seconds collecting garbage.
    with mock.patch("gc.collect"):
        expected = multipletests(raw, method="holm")[1]
    assert_allclose(adjust_p_values(raw, "holm"), expected, rtol=1e-12)
