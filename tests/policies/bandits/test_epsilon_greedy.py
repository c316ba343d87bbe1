"""Epsilon-greedy: exact propensities, ties, optimistic start, decay, factory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from policies.bandits.epsilon_greedy import EpsilonGreedy
from policies.bandits.registry import make_policy
from policies.sufficient import BinaryStats, MeanStats

RNG = np.random.default_rng(0)


def test_exploit_mass_goes_to_the_best_arm() -> None:
    w = EpsilonGreedy(epsilon=0.2).weights([BinaryStats(100, 10), BinaryStats(100, 30), BinaryStats(50, 5)], RNG)
    assert_allclose(w, [0.2 / 3, 0.2 / 3 + 0.8, 0.2 / 3], rtol=1e-15)


def test_ties_share_the_exploit_mass_equally() -> None:
    # 10/100 and 5/50 are the same rational, hence the same float: a tie.
    w = EpsilonGreedy(epsilon=0.1).weights([BinaryStats(100, 10), BinaryStats(50, 5), BinaryStats(80, 4)], RNG)
    assert_allclose(w, [0.1 / 3 + 0.45, 0.1 / 3 + 0.45, 0.1 / 3], rtol=1e-15)


def test_untried_arms_count_as_best() -> None:
    w = EpsilonGreedy(epsilon=0.1).weights([BinaryStats(100, 90), BinaryStats(0, 0), BinaryStats(0, 0)], RNG)
    assert_allclose(w, [0.1 / 3, 0.1 / 3 + 0.45, 0.1 / 3 + 0.45])
    assert_allclose(EpsilonGreedy().weights([BinaryStats(0, 0)] * 4, RNG), [0.25] * 4)


def test_decaying_schedule_uses_total_trials() -> None:
    policy = EpsilonGreedy(epsilon=0.3, decay=0.01)
    assert policy.epsilon_at(0) == 0.3
    assert policy.epsilon_at(200) == pytest.approx(0.1)
    w = policy.weights([BinaryStats(150, 15), BinaryStats(50, 10)], RNG)  # 200 trials: epsilon 0.1
    assert_allclose(w, [0.05, 0.95])


def test_revenue_metric_uses_mean_outcome() -> None:
    policy = EpsilonGreedy(epsilon=0.0, metric="revenue")
    w = policy.weights([MeanStats(10, 50.0, 900.0), BinaryStats(10, 9), MeanStats(10, 60.0, 400.0)], RNG)
    assert_allclose(w, [0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="BinaryStats"):
        EpsilonGreedy().weights([MeanStats(10, 50.0, 900.0)], RNG)


arm_counts = st.lists(
    st.tuples(st.integers(0, 200), st.integers(0, 200)).map(lambda t: BinaryStats(max(t), min(t))),
    min_size=1,
    max_size=10,
)


@settings(max_examples=100, deadline=None)
@given(stats_=arm_counts, epsilon=st.floats(0, 1), decay=st.floats(0, 1))
def test_weights_are_exact_propensities(stats_: list[BinaryStats], epsilon: float, decay: float) -> None:
    policy = EpsilonGreedy(epsilon=epsilon, decay=decay)
    w = policy.weights(stats_, RNG)
    k = len(stats_)
    eps = policy.epsilon_at(sum(s.n for s in stats_))
    means = np.array([s.successes / s.n if s.n else np.inf for s in stats_])
    best = means == means.max()
    assert_allclose(w, eps / k + (1 - eps) * best / best.sum(), rtol=1e-12)
    assert_allclose(w.sum(), 1.0, atol=1e-12)
    assert np.all(w >= eps / k - 1e-15)


@settings(max_examples=100, deadline=None)
@given(stats_=arm_counts, data=st.data())
def test_relabelling_arms_permutes_weights(stats_: list[BinaryStats], data: st.DataObject) -> None:
    order = data.draw(st.permutations(range(len(stats_))))
    policy = EpsilonGreedy(epsilon=0.15)
    assert np.array_equal(policy.weights([stats_[i] for i in order], RNG), policy.weights(stats_, RNG)[order])


def test_factory_builds_from_yaml_parameters() -> None:
    assert make_policy("epsilon_greedy", epsilon=0.2, decay=0.001, metric="revenue") == EpsilonGreedy(
        0.2, 0.001, "revenue"
    )
    assert make_policy("epsilon_greedy") == EpsilonGreedy(0.1, 0.0, "binary")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"epsilon": 1.5}, "epsilon"),
        ({"epsilon": float("nan")}, "epsilon"),
        ({"decay": -1}, "decay"),
        ({"metric": "x"}, "metric"),
    ],
)
def test_factory_rejects_invalid_parameters(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_policy("epsilon_greedy", **params)
