"""The targeting blend: probabilities, masks, strength 0, exact propensities."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from policies.bandits.choice import eligible_weights
from policies.targeting.blend import blend, choose_targeted, ranking_distribution

ARMS = 5


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    weights = np.array(draw(st.lists(st.floats(0.001, 1.0), min_size=ARMS, max_size=ARMS)))
    scores = np.array(draw(st.lists(st.floats(-5.0, 5.0), min_size=ARMS, max_size=ARMS)))
    mask = np.array(draw(st.lists(st.booleans(), min_size=ARMS, max_size=ARMS)))
    mask[draw(st.integers(0, ARMS - 1))] = True
    return weights / weights.sum(), scores, mask, draw(st.floats(0.0, 1.0))


@settings(max_examples=300, deadline=None)
@given(cases(), st.floats(0.01, 2.0))
def test_blend_is_a_distribution_on_the_eligible_arms(case: tuple, temperature: float) -> None:
    weights, scores, mask, strength = case
    p, tilted = blend(weights, scores, mask, strength, temperature)
    assert_allclose(p.sum(), 1.0, rtol=1e-12)
    assert np.all(p[~mask] == 0) and np.all(p >= 0)
    bandit = eligible_weights(weights, mask)
    if tilted:
        # the bandit share is never lost: every arm keeps (1 - s) of its eligible weight
        assert np.all(p >= (1 - strength) * bandit - 1e-15)
    else:
        assert np.array_equal(p, bandit)


@settings(max_examples=200, deadline=None)
@given(cases())
def test_strength_zero_is_the_bandit_exactly(case: tuple) -> None:
    weights, scores, mask, _ = case
    p, tilted = blend(weights, scores, mask, 0.0, 0.05)
    assert not tilted
    assert np.array_equal(p, eligible_weights(weights, mask))


def test_ranking_prefers_higher_scores_and_respects_the_temperature() -> None:
    scores = np.array([[1.0, 0.95, 0.5]])
    mask = np.ones((1, 3), dtype=bool)
    sharp = ranking_distribution(scores, mask, 0.05)[0]
    # scaled scores 1, 0.95, 0.5: softmax((x - 1) / 0.05) = (1, e^-1, e^-10) normalised
    expected = np.array([1.0, np.exp(-1.0), np.exp(-10.0)])
    assert_allclose(sharp, expected / expected.sum(), rtol=1e-12)
    flat = ranking_distribution(scores, mask, 10.0)[0]
    assert flat.max() - flat.min() < 0.02


def test_scores_that_do_not_separate_the_eligible_arms_leave_the_bandit_alone() -> None:
    weights = np.array([0.5, 0.3, 0.2])
    p, tilted = blend(weights, np.array([0.7, 0.7, 0.9]), np.array([True, True, False]), 0.8, 0.05)
    assert not tilted and np.array_equal(p, eligible_weights(weights, np.array([True, True, False])))


def test_drawn_frequencies_match_the_logged_propensities() -> None:
    weights = np.array([0.6, 0.25, 0.1, 0.05])
    scores = np.array([0.1, 0.2, 0.9, 1.0])
    mask = np.array([True, True, True, False])
    p, tilted = blend(weights, scores, mask, 0.5, 0.1)
    assert tilted
    rng = np.random.default_rng(11)
    n = 40_000
    counts = np.zeros(4)
    for _ in range(n):
        choice = choose_targeted(weights, scores, mask, 0.5, 0.1, rng)
        assert choice.tilted
        assert_allclose(choice.propensity, p[choice.arm], rtol=1e-12)  # p renormalised: ulps apart
        counts[choice.arm] += 1
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(counts / n - p) <= 4 * sigma + 1e-12)
    assert counts[3] == 0


@settings(max_examples=300, deadline=None)
@given(cases(), st.floats(0.01, 2.0), st.integers(0, 2**32 - 1))
def test_the_single_decision_path_draws_from_the_blend(case: tuple, temperature: float, seed: int) -> None:
    weights, scores, mask, strength = case
    p, tilted = blend(weights, scores, mask, strength, temperature)
    choice = choose_targeted(weights, scores, mask, strength, temperature, np.random.default_rng(seed))
    assert choice.tilted == tilted and mask[choice.arm]
    assert_allclose(choice.propensity, p[choice.arm], rtol=1e-9)
