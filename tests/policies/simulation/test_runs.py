"""Many simulated experiments read at looks: plans, sufficient statistics, logs, call accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from policies.bandits.thompson import ThompsonSampling
from policies.simulation.bandits import Truth, TruthChange
from policies.simulation.runs import (
    Look,
    PolicyDesign,
    Reader,
    RunPlan,
    SplitDesign,
    best_arms,
    fixed_horizon_exposures,
    simulate_runs,
    summarise,
)
from policies.stats.verdicts import Verdict
from policies.sufficient import BinaryStats, MeanStats

ARMS = ("a", "b", "c")


def calls(arm: str | None, at: int, looks: list[Look] | None = None) -> Reader:
    """A reader that keeps running until `at` exposures, then names `arm` (None: no_difference)."""

    def read(look: Look) -> Verdict:
        if looks is not None:
            looks.append(look)
        if look.exposures < at:
            return Verdict("keep_running", None, "")
        return Verdict("winner", arm, "") if arm else Verdict("no_difference", None, "")

    return read


def test_looks_every_k_and_at_the_end() -> None:
    assert RunPlan(1, 10, 3).looks == (3, 6, 9, 10)
    assert RunPlan(1, 9, 3).looks == (3, 6, 9)
    assert RunPlan(1, 5, 5).looks == (5,)
    with pytest.raises(ValueError, match="look_every"):
        RunPlan(1, 5, 6)
    with pytest.raises(ValueError, match=">= 1"):
        RunPlan(0, 5, 1)


@pytest.mark.parametrize(("n", "shares"), [(1000, [0.5, 0.5]), (31_000, [0.34, 0.33, 0.33]), (7, [0.9, 0.1])])
def test_fixed_horizon_exposures_is_the_smallest_with_three_sd_room(n: int, shares: list[float]) -> None:
    t, w = fixed_horizon_exposures(n, shares), min(shares)

    def room(x: int) -> float:
        return x * w - 3 * math.sqrt(x * w * (1 - w)) - n

    assert room(t) >= -1e-9 and room(t - 1) < 0


def test_wrong_winner_counts_first_calls_of_arms_not_truly_best() -> None:
    plan = RunPlan(4, 100, 10)
    truth = Truth((0.1, 0.2, 0.2))  # b and c are both truly best
    split = SplitDesign((1, 1, 1))
    rng = np.random.default_rng(0)
    readers = iter([calls("a", 30), calls("b", 50), calls("c", 100), calls(None, 20)])
    results = simulate_runs(ARMS, split, truth, plan, lambda _: next(readers), rng)
    assert [r.call_at for r in results] == [30, 50, 100, None]
    assert [r.wrong for r in results] == [True, False, False, False]
    assert [r.stop_status for r in results] == ["winner", "winner", "winner", "no_difference"]
    summary = summarise(results, plan, 3, best_arms(truth))
    assert summary.ever_winner_share == 0.75 and summary.wrong_winner_share == 0.25
    assert summary.median_exposures_to_call == 50
    assert summary.mean_exposures_to_stop == (30 + 50 + 100 + 20) / 4
    assert summary.no_difference_share == 0.25
    assert summary.winner_shares == (0.25, 0.25, 0.25)
    assert summary.best_arms == (1, 2)


def test_no_call_gives_null_median_and_a_run_is_not_read_past_its_first_final_verdict() -> None:
    plan = RunPlan(3, 100, 10)
    seen: list[Look] = []
    results = simulate_runs(ARMS[:2], SplitDesign((1, 1)), Truth((0.1, 0.1)), plan,
                            lambda _: calls(None, 40, seen), np.random.default_rng(1))
    assert [look.exposures for look in seen] == [10, 20, 30, 40] * 3
    summary = summarise(results, plan, 2, best_arms(Truth((0.1, 0.1))))
    assert summary.median_exposures_to_call is None and summary.ever_winner_share == 0.0


def test_wrong_is_judged_by_the_truth_in_force_at_the_call() -> None:
    truth = Truth((0.3, 0.1))
    drift = [TruthChange(50, Truth((0.1, 0.3)))]
    readers = iter([calls("a", 40), calls("a", 60)])
    results = simulate_runs(("a", "b"), SplitDesign((1, 1)), truth, RunPlan(2, 100, 10), lambda _: next(readers),
                            np.random.default_rng(2), drift=drift)
    assert [r.wrong for r in results] == [False, True]


def test_split_statistics_follow_the_declared_split_and_truth() -> None:
    plan = RunPlan(400, 2000, 500)
    seen: list[Look] = []
    truth = Truth((0.05, 0.10, 0.20))
    results = simulate_runs(ARMS, SplitDesign((0.5, 0.25, 0.25)), truth, plan, lambda _: calls(None, 10**9, seen),
                            np.random.default_rng(3))
    final = [look for look in seen if look.exposures == 2000]
    assert len(final) == 400 and all(sum(s.n for s in look.stats) == 2000 for look in final)
    n = np.array([[s.n for s in look.stats] for look in final], dtype=float)
    rates = np.array([[s.successes for s in look.stats] for look in final]) / n  # type: ignore[union-attr]
    # Means over 400 runs: shares within ~5 s.e. (s.e. of a share 0.0005-0.0006), rates within ~5 s.e.
    assert_allclose(n.mean(axis=0) / 2000, [0.5, 0.25, 0.25], atol=0.003)
    assert_allclose(rates.mean(axis=0), truth.rates, atol=0.006)
    # Expected regret of a fixed split: exposures x sum of share x gap = 2000 x (0.5 x 0.15 + 0.25 x 0.1).
    assert np.mean([r.regret for r in results]) == pytest.approx(200.0, rel=0.03)


def test_revenue_split_sums_amounts_and_squares() -> None:
    seen: list[Look] = []
    truth = Truth((0.5, 0.5), (10.0, 20.0))
    simulate_runs(("a", "b"), SplitDesign((1, 1)), truth, RunPlan(300, 400, 400), lambda _: calls(None, 10**9, seen),
                  np.random.default_rng(4))
    stats = [look.stats for look in seen]
    assert all(isinstance(s, MeanStats) for arms in stats for s in arms)
    means = np.array([[s.total / s.n for s in arms] for arms in stats])  # type: ignore[union-attr]
    squares = np.array([[s.total_sq / s.n for s in arms] for arms in stats])  # type: ignore[union-attr]
    # Per exposure: mean rate * value; mean square rate * 2 value^2 (exponential amounts).
    assert_allclose(means.mean(axis=0), [5.0, 10.0], rtol=0.03)
    assert_allclose(squares.mean(axis=0), [100.0, 400.0], rtol=0.05)


def test_bandit_looks_carry_the_decision_log_with_propensities() -> None:
    seen: list[Look] = []
    design = PolicyDesign(ThompsonSampling(min_weight=0.05), update_every=100)
    simulate_runs(ARMS, design, Truth((0.05, 0.1, 0.3)), RunPlan(2, 1000, 250), lambda _: calls(None, 10**9, seen),
                  np.random.default_rng(5))
    assert [look.exposures for look in seen] == [250, 500, 750, 1000] * 2
    for look in seen:
        log = look.log
        assert log is not None and log.propensities is not None and log.arms.size == look.exposures
        assert [s.n for s in look.stats] == np.bincount(log.arms, minlength=3).tolist()
        assert [s.successes for s in look.stats] == np.bincount(log.arms, log.outcomes, minlength=3).tolist()  # type: ignore[union-attr]
        assert np.all((log.propensities >= 0.05 - 1e-12) & (log.propensities <= 1))
    # Decisions of one refresh block share the weights they were drawn with.
    log = seen[3].log
    assert log is not None and log.propensities is not None
    first_block = log.propensities[:100][log.arms[:100] == 0]
    assert np.all(first_block == pytest.approx(1 / 3))  # no data yet: uniform weights


def test_runs_are_reproducible_from_the_seed() -> None:
    def run(seed: int) -> list[tuple[int | None, float]]:
        results = simulate_runs(ARMS, PolicyDesign(ThompsonSampling(), 50), Truth((0.1, 0.1, 0.4)),
                                RunPlan(3, 600, 200), lambda rng: calls("c", int(rng.integers(200, 601))),
                                np.random.default_rng(seed))
        return [(r.call_at, r.regret) for r in results]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_stats_are_binary_for_a_binary_truth() -> None:
    seen: list[Look] = []
    simulate_runs(("a", "b"), SplitDesign((1, 1)), Truth((0.2, 0.2)), RunPlan(1, 50, 50),
                  lambda _: calls(None, 10**9, seen), np.random.default_rng(6))
    assert all(isinstance(s, BinaryStats) and isinstance(s.n, int) for s in seen[0].stats)
