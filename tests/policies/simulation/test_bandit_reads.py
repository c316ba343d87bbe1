"""Logged bandit runs read at looks: the Horvitz-Thompson SRM check on adaptive weights."""

from __future__ import annotations

import numpy as np

from policies.bandits.thompson import ThompsonSampling
from policies.simulation.bandit_reads import LoggedRun, logged_run, read_at_looks
from policies.simulation.bandits import Truth
from policies.stats.analysis import AnalysisConfig
from policies.stats.bandit_inference import bandit_srm, propensity_sums

TRUTH = Truth((0.04, 0.05, 0.06))


def _runs(count: int, users: int) -> list[LoggedRun]:
    policy = ThompsonSampling(min_weight=0.05)
    return [logged_run(policy, TRUTH, users, np.random.default_rng(seed), update_every=250)
            for seed in np.random.SeedSequence(12).spawn(count)]


def test_propensities_are_the_weights_in_force_and_arms_follow_them() -> None:
    run = _runs(1, 3000)[0]
    assert run.propensities.min() >= 0.05 - 1e-12
    assert np.all(run.propensities[:250] == run.propensities[0])  # equal weights before the first refresh
    assert abs(run.propensities[0] - 1 / 3) < 1e-12
    assert set(np.unique(run.outcomes)) <= {0.0, 1.0}


def test_a_healthy_bandit_is_not_flagged_and_one_that_lost_exposures_is() -> None:
    runs = _runs(150, 4000)
    healthy = [bandit_srm(propensity_sums(r.arms, r.propensities, r.outcomes, 3)).flagged for r in runs]
    # 150 seeded runs at threshold 0.001: ~0.15 false alarms expected; 2 or more would be unlikely (p ~ 0.01).
    assert sum(healthy) <= 1
    broken = []
    for i, r in enumerate(runs):
        lost = np.random.default_rng(i).random(r.arms.size) < 0.3
        keep = ~((r.arms == 1) & lost)  # 30% of the middle arm's exposures never logged
        broken.append(bandit_srm(propensity_sums(r.arms[keep], r.propensities[keep], r.outcomes[keep], 3)).flagged)
    assert np.mean(broken) >= 0.8


def test_reading_at_looks_uses_the_corrected_estimates() -> None:
    run = _runs(1, 2000)[0]
    config = AnalysisConfig(draws=2000)
    analyses = read_at_looks(run, ["a", "b", "c"], [500, 2000], config, np.random.default_rng(0))
    assert [a.test.method for a in analyses] == ["ipw_partial_pooling", "ipw_partial_pooling"]
    assert sum(row.exposures for row in analyses[-1].arms) == 2000
    pooled = read_at_looks(run, ["a", "b", "c"], [2000], config, np.random.default_rng(0), corrected=False)
    assert pooled[0].test.method == "partial_pooling"
