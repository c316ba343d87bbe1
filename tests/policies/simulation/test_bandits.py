"""The simulator: reproducibility, regret accounting, drift, forgetting, and regret sanity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
from numpy.testing import assert_allclose

from policies.bandits.arm_stats import fold_stats
from policies.bandits.epsilon_greedy import EpsilonGreedy
from policies.bandits.fixed import FixedSplit
from policies.bandits.registry import Policy
from policies.bandits.thompson import NormalInverseGammaPrior, ThompsonSampling
from policies.simulation.bandits import (
    SimulationResult,
    Truth,
    TruthChange,
    potential_outcomes,
    simulate,
    swap_best_worst,
)
from policies.sufficient import ArmStats, BinaryStats

EASY = Truth((0.05, 0.05, 0.05, 0.05, 0.15))


@dataclass
class RecordingUniform:
    """Uniform weights; remembers the stats it was shown (and forgets like a policy would)."""

    arms: int
    discount: float | None = None
    window: int | None = None
    seen: list[list[ArmStats]] = field(default_factory=list)

    def weights(self, stats: Sequence[ArmStats], rng: np.random.Generator) -> np.ndarray:
        self.seen.append(list(stats))
        return np.full(self.arms, 1 / self.arms)


def assert_same(a: SimulationResult, b: SimulationResult) -> None:
    for name in ("arms", "conversions", "regret", "final_weights", "weight_steps", "weight_history"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize(
    ("policy", "update_every"),
    [
        (ThompsonSampling(min_weight=0.01), 1),  # online fast path
        (ThompsonSampling(discount=0.9), 1),
        (ThompsonSampling(top_two=0.5), 250),
        (EpsilonGreedy(epsilon=0.1, decay=0.01), 100),
    ],
)
def test_seeded_runs_reproduce_exactly(policy: Policy, update_every: int) -> None:
    run = lambda: simulate(policy, EASY, 3000, np.random.default_rng(11), update_every=update_every)  # noqa: E731
    assert_same(run(), run())


def test_result_accounting() -> None:
    result = simulate(EpsilonGreedy(), EASY, 5000, np.random.default_rng(1), update_every=500, history_points=4)
    assert result.arms.shape == result.conversions.shape == result.regret.shape == (5000,)
    assert result.pulls.sum() == 5000
    assert np.all(np.diff(result.conversions) >= 0) and np.all(np.diff(result.regret) >= -1e-12)
    gaps = EASY.expected.max() - EASY.expected
    assert_allclose(result.total_regret, gaps[result.arms].sum())
    assert result.weight_steps.tolist() == [0, 1500, 3000, 4500]  # every 1250 steps, at refreshes
    assert result.weight_history.shape == (4, 5)
    assert result.best_arm == 4
    assert_allclose(result.final_weights.sum(), 1.0)


def test_without_history_only_final_weights_are_kept() -> None:
    result = simulate(ThompsonSampling(), EASY, 500, np.random.default_rng(1), history_points=0)
    assert result.weight_history.shape == (0, 5) and result.weight_steps.size == 0


def test_outcomes_do_not_depend_on_the_policy_or_cadence() -> None:
    # Common random numbers: always playing arm 2 sees the same users whatever the cadence.
    always_two = FixedSplit((0.0, 0.0, 1.0, 0.0, 0.0))
    runs = [simulate(always_two, EASY, 20_000, np.random.default_rng(5), update_every=u) for u in (1, 7, 1000)]
    assert runs[0].conversions.tolist() == runs[1].conversions.tolist() == runs[2].conversions.tolist()
    table = np.concatenate([t for _, t in potential_outcomes(EASY, 20_000, np.random.default_rng(5).spawn(2)[0])])
    assert_allclose(runs[0].conversions, np.cumsum(table[:, 2]))


def test_online_windowed_revenue_thompson_keeps_valid_sums() -> None:
    truth = Truth((0.2, 0.4), values=(13.7, 9.1))
    policy = ThompsonSampling(prior=NormalInverseGammaPrior(), window=37)
    result = simulate(policy, truth, 3000, np.random.default_rng(9), history_points=10)
    assert_allclose(result.final_weights.sum(), 1.0)
    assert result.weight_history.shape == (10, 2)


def test_drift_changes_the_truth_and_regret_follows_the_best_arm_in_force() -> None:
    truth = Truth((0.5, 0.4, 0.3))
    swapped = swap_best_worst(truth)
    assert swapped == Truth((0.3, 0.4, 0.5))
    result = simulate(
        FixedSplit((1.0, 0.0, 0.0)), truth, 100, np.random.default_rng(0), drift=[TruthChange(60, swapped)]
    )
    assert result.regret[59] == 0.0
    assert_allclose(result.total_regret, 40 * 0.2)
    assert result.best_arm == 2


def test_revenue_outcomes_have_the_declared_means() -> None:
    truth = Truth((0.1, 0.3), values=(50.0, 10.0))
    assert_allclose(truth.expected, [5.0, 3.0])
    result = simulate(FixedSplit((0.5, 0.5)), truth, 200_000, np.random.default_rng(2), update_every=10_000)
    per_user = np.diff(result.conversions, prepend=0.0)
    for arm, mean in enumerate(truth.expected):
        outcomes = per_user[result.arms == arm]
        # Revenue per user: Bernoulli(rate) x Exponential(value); sd = value * sqrt(2 rate - rate^2).
        sd = truth.values[arm] * np.sqrt(2 * truth.rates[arm] - truth.rates[arm] ** 2)  # type: ignore[index]
        assert abs(outcomes.mean() - mean) < 5 * sd / np.sqrt(outcomes.size)


def test_discounted_policies_see_sums_folded_once_per_refresh() -> None:
    policy = RecordingUniform(arms=3, discount=0.5)
    result = simulate(policy, Truth((0.2, 0.5, 0.8)), 300, np.random.default_rng(3), update_every=100)
    per_user = np.diff(result.conversions, prepend=0.0)
    memory = [BinaryStats(0, 0)] * 3
    for refresh, seen in enumerate(policy.seen[:3]):
        assert seen == memory
        block = slice(100 * refresh, 100 * (refresh + 1))
        increment = [
            BinaryStats(int(np.sum(result.arms[block] == k)), int(per_user[block][result.arms[block] == k].sum()))
            for k in range(3)
        ]
        memory = fold_stats(memory, increment, 0.5)
    assert policy.seen[3] == memory  # the final weights see every block


def test_windowed_policies_see_only_recent_decisions() -> None:
    policy = RecordingUniform(arms=2, window=150)
    result = simulate(policy, Truth((0.3, 0.6)), 400, np.random.default_rng(4), update_every=100)
    per_user = np.diff(result.conversions, prepend=0.0)
    for refresh, seen in enumerate(policy.seen):
        t = min(100 * refresh, 400)
        recent = slice(max(0, t - 150), t)
        arms, outcomes = result.arms[recent], per_user[recent]
        assert [s.n for s in seen] == [np.sum(arms == k) for k in range(2)]
        assert [s.successes for s in seen] == [outcomes[arms == k].sum() for k in range(2)]  # type: ignore[union-attr]


def test_online_thompson_agrees_with_drawing_from_its_weights() -> None:
    """The online fast path (posterior sampling) has the law of drawing from the weights."""
    truth = Truth((0.3, 0.6))
    fast, slow = [], []
    for seed in range(60):
        policy = ThompsonSampling(min_weight=0.05)
        fast.append(simulate(policy, truth, 80, np.random.default_rng(seed), history_points=0).pulls[1])
        # Same policy, seen through a wrapper that is not a ThompsonSampling: the generic path.
        wrapper = RecordingUniform(arms=2)
        wrapper.weights = policy.weights  # type: ignore[method-assign]
        slow.append(simulate(wrapper, truth, 80, np.random.default_rng(1000 + seed), history_points=0).pulls[1])
    difference = np.mean(fast) - np.mean(slow)
    standard_error = np.sqrt((np.var(fast) + np.var(slow)) / 60)
    assert abs(difference) < 4 * standard_error + 1


def test_thompson_beats_uniform_by_a_wide_margin() -> None:
    uniform = simulate(FixedSplit((0.2,) * 5), EASY, 20_000, np.random.default_rng(6), update_every=500)
    batched = simulate(ThompsonSampling(), EASY, 20_000, np.random.default_rng(6), update_every=500)
    online = simulate(ThompsonSampling(), EASY, 20_000, np.random.default_rng(6), history_points=0)
    assert batched.total_regret < 0.2 * uniform.total_regret
    assert online.total_regret < 0.2 * uniform.total_regret
    assert batched.pulls[4] > 0.8 * 20_000


def test_revenue_thompson_beats_uniform() -> None:
    truth = Truth((0.05, 0.05, 0.08), values=(40.0, 60.0, 50.0))  # per user: 2, 3, 4
    policy = ThompsonSampling(prior=NormalInverseGammaPrior())
    uniform = simulate(FixedSplit((1 / 3,) * 3), truth, 20_000, np.random.default_rng(7), update_every=500)
    result = simulate(policy, truth, 20_000, np.random.default_rng(7), update_every=500)
    assert result.total_regret < 0.35 * uniform.total_regret


def test_discounting_recovers_after_the_best_and_worst_arms_swap() -> None:
    truth = Truth((0.3, 0.1, 0.1))
    drift = [TruthChange(15_000, swap_best_worst(truth))]
    results = {
        gamma: simulate(
            ThompsonSampling(discount=gamma), truth, 30_000, np.random.default_rng(8), update_every=500, drift=drift
        )
        for gamma in (None, 0.8)
    }
    assert results[0.8].total_regret < 0.5 * results[None].total_regret
    assert results[0.8].final_weights.argmax() == results[0.8].best_arm


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": 0}, "users"),
        ({"update_every": 0}, "update_every"),
        ({"drift": [TruthChange(0, EASY)]}, "drift"),
        ({"drift": [TruthChange(50, Truth((0.1, 0.2)))]}, "same arms"),
        ({"drift": [TruthChange(50, Truth((0.1,) * 5, values=(1.0,) * 5))]}, "metric"),
    ],
)
def test_invalid_simulations_are_rejected(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"users": 100} | kwargs
    with pytest.raises(ValueError, match=message):
        simulate(EpsilonGreedy(), EASY, rng=np.random.default_rng(0), **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(("rates", "values"), [((), None), ((0.5, 1.5), None), ((0.5, 0.5), (1.0,)), ((0.5,), (-1.0,))])
def test_invalid_truths_are_rejected(rates: tuple[float, ...], values: tuple[float, ...] | None) -> None:
    with pytest.raises(ValueError):
        Truth(rates, values)
