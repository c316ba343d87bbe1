"""Off-policy estimators: a hand-computed log, and unbiasedness by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from policies.targeting.ope import LoggedData, bootstrap_ratio_intervals, evaluate_policies, is_uniform_logging

# Four logged rows, two arms. Target pi and reward model q are given per row.
LOG = LoggedData(arms=np.array([0, 1, 1, 0]), rewards=np.array([1.0, 0.0, 1.0, 0.0]),
                 propensities=np.array([0.5, 0.5, 0.25, 0.75]), n_arms=2)
PI = np.array([[0.8, 0.2], [0.8, 0.2], [0.4, 0.6], [0.4, 0.6]])
Q = np.array([[0.6, 0.3], [0.6, 0.3], [0.5, 0.5], [0.5, 0.5]])


def test_ips_snips_dr_match_the_hand_computed_values() -> None:
    # weights w = pi(a_i) / mu_i: 0.8/0.5 = 1.6, 0.2/0.5 = 0.4, 0.6/0.25 = 2.4, 0.4/0.75 = 8/15
    # IPS   = (1.6*1 + 0.4*0 + 2.4*1 + 8/15*0) / 4 = 4.0 / 4 = 1.0
    # SNIPS = 4.0 / (1.6 + 0.4 + 2.4 + 8/15) = 4.0 / (74/15) = 30/37
    # DR rows: direct sum_a pi*q + w*(r - q(a_i)):
    #   row 1: 0.8*0.6 + 0.2*0.3 = 0.54, + 1.6*(1 - 0.6) = 0.64   -> 1.18
    #   row 2: 0.54,                     + 0.4*(0 - 0.3) = -0.12  -> 0.42
    #   row 3: 0.4*0.5 + 0.6*0.5 = 0.5,  + 2.4*(1 - 0.5) = 1.2    -> 1.70
    #   row 4: 0.5,                      + 8/15*(0 - 0.5) = -4/15 -> 0.5 - 4/15
    #   DR = (1.18 + 0.42 + 1.70 + 0.5 - 4/15) / 4 = 0.88333...
    values = evaluate_policies(LOG, {"target": PI}, Q, np.random.default_rng(0), uniform=False, resamples=200)
    est = values["target"].estimates
    assert_allclose(est["ips"].value, 1.0, rtol=1e-12)
    assert_allclose(est["snips"].value, 30 / 37, rtol=1e-12)
    assert_allclose(est["dr"].value, (1.18 + 0.42 + 1.70 + 0.5 - 4 / 15) / 4, rtol=1e-12)
    assert est["replay"] is None  # logging is not uniform
    # Kish effective sample size (sum w)^2 / sum w^2 = (74/15)^2 / (2.56 + 0.16 + 5.76 + 64/225)
    assert_allclose(values["target"].effective_sample_size, (74 / 15) ** 2 / (2.56 + 0.16 + 5.76 + 64 / 225))
    for e in est.values():
        assert e is None or e.ci_low <= e.value <= e.ci_high


def test_replay_keeps_the_rows_where_a_deterministic_target_agrees() -> None:
    # Uniform logging over two arms; the target always plays arm 0 on rows 1-2 and arm 1 on 3-4.
    log = LoggedData(np.array([0, 1, 1, 0]), np.array([1.0, 0.0, 1.0, 0.0]), np.full(4, 0.5), 2)
    target = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert is_uniform_logging(log, np.full(4, 2))
    values = evaluate_policies(log, {"t": target, "logging": None}, np.zeros((4, 2)), np.random.default_rng(1),
                               uniform=True, resamples=200)
    # Rows 1 and 3 match (rewards 1 and 1): replay = 1.0. The logging policy: mean reward 0.5.
    assert values["t"].estimates["replay"].value == 1.0
    assert all(values["logging"].estimates[e].value == 0.5 for e in ("replay", "ips", "snips", "dr"))


def test_bootstrap_is_seeded_and_collapses_on_constant_terms() -> None:
    num = np.column_stack([np.full(50, 0.3), np.arange(50.0)])
    den = np.ones((50, 2))
    low, high = bootstrap_ratio_intervals(num, den, np.random.default_rng(3), resamples=300)
    again = bootstrap_ratio_intervals(num, den, np.random.default_rng(3), resamples=300)
    assert_allclose(low[0], 0.3) and assert_allclose(high[0], 0.3)
    assert low[1] < 24.5 < high[1]
    assert_allclose(low, again[0]) and assert_allclose(high, again[1])


def test_bad_logs_are_refused() -> None:
    with pytest.raises(ValueError, match="propensities"):
        LoggedData(np.array([0]), np.array([1.0]), np.array([0.0]), 2)
    with pytest.raises(ValueError, match="finite"):
        LoggedData(np.array([0]), np.array([np.nan]), np.array([0.5]), 2)
    with pytest.raises(ValueError, match="sum"):
        evaluate_policies(LOG, {"t": PI * 2}, Q, np.random.default_rng(0), uniform=False)


@pytest.mark.slow
def test_ips_is_unbiased_and_intervals_cover_in_simulation() -> None:
    """Three contexts, three arms, context-dependent logging and target policies."""
    rates = np.array([[0.10, 0.30, 0.05], [0.40, 0.10, 0.20], [0.05, 0.05, 0.50]])
    mu = np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.3, 0.3, 0.4]])
    pi = np.array([[0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    true = float((pi * rates).sum(axis=1).mean())  # contexts equally likely
    estimates, covered = [], 0
    seeds, n = 200, 2000
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        x = rng.integers(3, size=n)
        arms = (np.cumsum(mu[x], axis=1) <= rng.random(n)[:, None]).sum(axis=1)
        rewards = (rng.random(n) < rates[x, arms]).astype(float)
        log = LoggedData(arms, rewards, mu[x, arms], 3)
        value = evaluate_policies(log, {"pi": pi[x]}, np.zeros((n, 3)), rng, uniform=False, resamples=200)
        ips = value["pi"].estimates["ips"]
        estimates.append(ips.value)
        covered += ips.ci_low <= true <= ips.ci_high
    estimates_arr = np.array(estimates)
    standard_error = estimates_arr.std(ddof=1) / np.sqrt(seeds)
    assert abs(estimates_arr.mean() - true) < 3 * standard_error
    assert 0.90 <= covered / seeds <= 0.99
