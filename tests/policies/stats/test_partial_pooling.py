"""Partial pooling of bandit arms: the hierarchical posterior against numerical integration, and
the repeated-reading problem it answers (issue: bandit winners under repeated reading)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from policies.simulation.bandits import Truth
from policies.simulation.runs import Look, RunPlan, SplitDesign, simulate_runs, summarise
from policies.stats.analysis import AnalysisConfig, analyze
from policies.stats.partial_pooling import hierarchical_draws, hierarchical_posteriors
from policies.stats.verdicts import Verdict

# Eight schools (Gelman et al., "Bayesian Data Analysis", 3rd ed., Table 5.2) with the
# half-Cauchy(0, 25) prior on the group-level sd of Gelman (2006), section 5.
SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOLS_SD = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def _by_quadrature(y: np.ndarray, v: np.ndarray, scale: float, arm: int) -> tuple[float, float]:
    """E[theta_arm | y] and sd[theta_arm | y], integrating over s with scipy (BDA3 eqs. 5.17-5.21)."""

    def pieces(s: float) -> tuple[float, float, float]:
        total = v + s * s
        v_m = 1.0 / np.sum(1.0 / total)
        m_hat = v_m * np.sum(y / total)
        density = stats.halfcauchy.pdf(s, scale=scale) * math.sqrt(v_m) * np.prod(total ** -0.5) * math.exp(
            -0.5 * np.sum((y - m_hat) ** 2 / total))
        shrink = v[arm] / total[arm]
        mean = (1 - shrink) * y[arm] + shrink * m_hat
        second = mean**2 + shrink * s * s + shrink**2 * v_m  # E[theta^2 | s] (m integrated out)
        return density, mean, second

    def moment(k: int) -> float:
        return integrate.quad(lambda s: pieces(s)[0] * (1.0, pieces(s)[1], pieces(s)[2])[k], 0, np.inf,
                              limit=200)[0]

    norm = moment(0)
    mean = moment(1) / norm
    return mean, math.sqrt(moment(2) / norm - mean**2)


@pytest.mark.parametrize("arm", [0, 2, 6])
def test_eight_schools_posterior_matches_numerical_integration(arm: int) -> None:
    v = SCHOOLS_SD**2
    draws = hierarchical_draws(SCHOOLS_Y, v, 25.0, np.random.default_rng(1), 400_000)[:, arm]
    mean, sd = _by_quadrature(SCHOOLS_Y, v, 25.0, arm)
    se = sd / math.sqrt(draws.size)
    assert draws.mean() == pytest.approx(mean, abs=5 * se)
    assert draws.std() == pytest.approx(sd, rel=0.01)
    # Partial pooling: school A's 28 is drawn far toward the others (about 11 in BDA3 5.5).
    if arm == 0:
        assert 8 < mean < 14


def test_a_zero_scale_says_the_arms_are_equal() -> None:
    posteriors = hierarchical_posteriors([0.05, 0.07, 0.06], [1e-5, 1e-5, 2e-5], scale=0.0,
                                         rng=np.random.default_rng(0), draws=4000)
    assert [p.prob_best for p in posteriors] == pytest.approx([1 / 3] * 3, abs=0.03)
    assert len({round(p.mean, 12) for p in posteriors}) == 1


def test_a_clear_gap_is_not_pooled_away() -> None:
    posteriors = hierarchical_posteriors([0.050, 0.051, 0.065], [2e-6, 2e-6, 2e-6], scale=0.005,
                                         rng=np.random.default_rng(0), draws=20_000, bounds=(0.0, 1.0))
    assert posteriors[2].prob_best > 0.99
    assert posteriors[2].mean == pytest.approx(0.065, abs=0.0005)


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="at least two arms"):
        hierarchical_draws([0.1], [0.01], 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="finite"):
        hierarchical_draws([0.1, math.nan], [0.01, 0.01], 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="scale"):
        hierarchical_draws([0.1, 0.2], [0.01, 0.01], -1.0, np.random.default_rng(0))


@pytest.mark.slow
def test_repeated_reading_calls_few_false_winners() -> None:
    """Three equal arms at 5% on an equal split, read every 1,000 exposures up to 20,000: with
    independent posteriors per arm about 1 run in 8 shows a false winner at some look
    (tests/benchmarks/bench_simulate_runs.py measures it beside this rule); with partial pooling
    about 1 in 30. 300 runs: a binomial s.e. of about 1 point."""
    rng = np.random.default_rng(3)
    config = AnalysisConfig(draws=1000)

    def read(look: Look) -> Verdict:
        return analyze(["a", "b", "c"], look.stats, kind="bandit", control=None, expected_weights=None,
                       config=config, rng=rng).verdict

    plan = RunPlan(300, 20_000, 1000)
    results = simulate_runs(["a", "b", "c"], SplitDesign((1.0, 1.0, 1.0)), Truth((0.05, 0.05, 0.05)), plan,
                            lambda _: read, np.random.default_rng(12))
    assert summarise(results, plan, 3, (0, 1, 2)).ever_winner_share < 0.06
