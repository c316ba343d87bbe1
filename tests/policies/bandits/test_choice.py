"""Choices from weights: exact propensities, zero-weight arms, eligibility masks, batches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose

from policies.bandits.choice import (
    NoEligibleArmError,
    choose_arm,
    draw_arm,
    draw_arms,
    draw_arms_per_unit,
    eligible_weights,
    eligible_weights_per_unit,
)


class FixedUniforms:
    """Stands in for a Generator whose uniforms are all `u` (edge cases of inverse-CDF draws)."""

    def __init__(self, u: float) -> None:
        self.u = u

    def random(self, size: int | None = None) -> float | np.ndarray:
        return self.u if size is None else np.full(size, self.u)


LARGEST_UNIFORM = np.nextafter(1.0, 0.0)  # Generator.random() is in [0, 1)


def within_binomial_error(frequencies: np.ndarray, p: np.ndarray, draws: int) -> bool:
    return bool(np.all(np.abs(frequencies - p) <= 5 * np.sqrt(p * (1 - p) / draws) + 1e-9))


@pytest.mark.parametrize(
    "weights",
    [
        [0.1] * 10 + [0.0],  # cumsum ends at 0.9999999999999999: the old guard gave the 0 arm a sliver
        [0.0, 0.5, 0.5, 0.0, 0.0],
        [0.3, 0.0, 0.7],
    ],
)
def test_zero_weight_arms_are_never_drawn(weights: list[float]) -> None:
    w = np.array(weights)
    positive = np.flatnonzero(w > 0)
    for u in (0.0, LARGEST_UNIFORM):
        rng = FixedUniforms(u)
        expected = positive[0] if u == 0.0 else positive[-1]
        assert draw_arm(w, rng) == expected  # type: ignore[arg-type]
        assert draw_arms(w, rng, 3).tolist() == [expected] * 3  # type: ignore[arg-type]
        masks = np.ones((2, w.size), dtype=bool)
        assert draw_arms_per_unit(w, masks, rng).arms.tolist() == [expected] * 2  # type: ignore[arg-type]
    assert np.all(w[draw_arms(w, np.random.default_rng(0), 200_000)] > 0)


def test_batch_draw_frequencies_match_weights() -> None:
    w = np.array([0.5, 0.25, 0.125, 0.0625, 0.0625, 0.0])
    draws = 1_000_000
    arms = draw_arms(w, np.random.default_rng(1), draws)
    assert arms.dtype == np.intp
    assert within_binomial_error(np.bincount(arms, minlength=w.size) / draws, w, draws)


def test_single_decisions_report_their_exact_propensity() -> None:
    rng = np.random.default_rng(2)
    w = np.array([0.1, 0.2, 0.3, 0.4])
    mask = np.array([True, False, True, True])
    draws = 40_000
    decisions = [choose_arm(w, mask, rng) for _ in range(draws)]
    arms = np.array([arm for arm, _ in decisions])
    expected = eligible_weights(w, mask)
    assert_allclose([p for _, p in decisions], expected[arms], rtol=1e-15)
    assert within_binomial_error(np.bincount(arms, minlength=4) / draws, expected, draws)


def test_per_unit_draws_report_their_exact_propensity() -> None:
    rng = np.random.default_rng(3)
    w = np.array([0.4, 0.3, 0.2, 0.1])
    rows = np.array([[True, True, True, True], [False, True, False, True], [True, False, False, False]])
    units = 60_000
    masks = np.repeat(rows, units, axis=0)
    result = draw_arms_per_unit(w, masks, rng)
    expected = eligible_weights_per_unit(w, rows)
    for r in range(3):
        arms = result.arms[r * units : (r + 1) * units]
        assert_allclose(result.propensities[r * units : (r + 1) * units], expected[r, arms], rtol=1e-15)
        assert within_binomial_error(np.bincount(arms, minlength=4) / units, expected[r], units)


def test_eligible_arms_with_zero_weight_share_equally() -> None:
    w = np.array([0.6, 0.4, 0.0, 0.0])
    assert_allclose(eligible_weights(w, np.array([False, False, True, True])), [0, 0, 0.5, 0.5])
    assert choose_arm(w, np.array([False, False, False, True]), np.random.default_rng(0)) == (3, 1.0)


def test_no_eligible_arm_is_an_error() -> None:
    w = np.array([0.5, 0.5])
    with pytest.raises(NoEligibleArmError):
        eligible_weights(w, np.array([False, False]))
    with pytest.raises(NoEligibleArmError, match="row"):
        draw_arms_per_unit(w, np.array([[True, False], [False, False]]), np.random.default_rng(0))
    with pytest.raises(NoEligibleArmError):
        choose_arm(w, np.array([False, False]), np.random.default_rng(0))


@pytest.mark.parametrize("weights", [[0.0, 0.0], [0.5, -0.1, 0.6], [np.nan, 1.0], []])
def test_invalid_weights_are_rejected(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weights"):
        draw_arms(np.array(weights), np.random.default_rng(0), 5)


def test_seeded_draws_reproduce() -> None:
    w = np.array([0.2, 0.3, 0.5])
    masks = np.random.default_rng(9).random((1000, 3)) < 0.7
    masks[:, 2] = True
    assert np.array_equal(draw_arms(w, np.random.default_rng(7), 1000), draw_arms(w, np.random.default_rng(7), 1000))
    a, b = (
        draw_arms_per_unit(w, masks, np.random.default_rng(7)),
        draw_arms_per_unit(w, masks, np.random.default_rng(7)),
    )
    assert np.array_equal(a.arms, b.arms) and np.array_equal(a.propensities, b.propensities)
    assert choose_arm(w, masks[0], np.random.default_rng(7)) == choose_arm(w, masks[0], np.random.default_rng(7))


weights_and_masks = st.integers(1, 8).flatmap(
    lambda k: st.tuples(
        hnp.arrays(np.float64, k, elements=st.floats(0, 1)).filter(lambda w: w.sum() > 0),
        hnp.arrays(np.bool_, st.tuples(st.integers(1, 20), st.just(k))).filter(lambda m: m.any(axis=1).all()),
    )
)


@settings(max_examples=150, deadline=None)
@given(case=weights_and_masks, seed=st.integers(0, 2**32 - 1))
def test_the_eligibility_mask_holds(case: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    weights, masks = case
    probabilities = eligible_weights_per_unit(weights, masks)
    assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(probabilities[~masks] == 0)
    for row, mask in zip(probabilities, masks, strict=True):
        assert_allclose(row, eligible_weights(weights, mask), rtol=1e-15)
        if (weights * mask).sum() > 0:  # proportional to the weights inside the mask
            assert_allclose(row, weights * mask / (weights * mask).sum(), rtol=1e-12, atol=1e-300)
    result = draw_arms_per_unit(weights, masks, np.random.default_rng(seed))
    units = np.arange(len(masks))
    assert np.all(masks[units, result.arms])
    assert np.all(result.propensities > 0)
    assert_allclose(result.propensities, probabilities[units, result.arms], rtol=1e-15)
    arm, propensity = choose_arm(weights, masks[0], np.random.default_rng(seed))
    assert masks[0, arm] and propensity == pytest.approx(probabilities[0, arm], rel=1e-12)
