"""Weight-corrected bandit estimates, the Horvitz-Thompson SRM check, and their use in `analyze`."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from numpy.testing import assert_allclose
from statsmodels.stats.proportion import proportions_ztest

from policies.stats.analysis import AnalysisConfig, analyze
from policies.stats.bandit_inference import (
    PropensitySums,
    bandit_srm,
    ipw_estimate,
    propensity_increments,
    propensity_sums,
)
from policies.sufficient import BinaryStats


def _random_units(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    arms = rng.integers(0, 3, n)
    p = rng.uniform(0.05, 0.9, n)
    y = rng.exponential(2.0, n) * (rng.random(n) < 0.3)
    return arms, p, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hajek_mean_and_variance_match_weighted_least_squares_with_hc0(seed: int) -> None:
    arms, p, y = _random_units(seed)
    sums = propensity_sums(arms, p, y, 3)
    for a in range(3):
        mask = arms == a
        # Reference: statsmodels WLS(y, 1, weights=1/p).fit(cov_type="HC0"): the intercept is the
        # Hajek mean, its HC0 variance sum w^2 e^2 / (sum w)^2 the linearised variance.
        fit = sm.WLS(y[mask], np.ones(mask.sum()), weights=1.0 / p[mask]).fit(cov_type="HC0")
        estimate = ipw_estimate(sums[a])
        assert estimate is not None
        assert_allclose(estimate.mean, fit.params[0], rtol=1e-9)
        assert_allclose(estimate.variance, fit.bse[0] ** 2, rtol=1e-9)


def test_constant_propensity_gives_the_pooled_mean_and_its_variance() -> None:
    y = np.array([0, 1, 1, 0, 0, 1, 0, 0], dtype=float)
    (s,) = propensity_sums(np.zeros(8, dtype=int), np.full(8, 0.25), y, 1)
    estimate = ipw_estimate(s)
    assert estimate is not None
    assert_allclose(estimate.mean, 3 / 8, rtol=1e-12)
    assert_allclose(estimate.variance, (3 / 8) * (5 / 8) / 8, rtol=1e-12)
    assert_allclose(estimate.effective_n, 8, rtol=1e-12)


def test_increments_add_up_to_the_sums() -> None:
    arms, p, y = _random_units(3, 50)
    (first, *_) = propensity_sums(arms, p, y, 3)
    summed = {k: 0.0 for k in ("weight", "weight_sq", "weight_y", "weight_sq_y", "weight_sq_y_sq")}
    for pi, yi in zip(p[arms == 0], y[arms == 0], strict=True):
        for k, v in propensity_increments(float(pi), float(yi)).items():
            summed[k] += v
    assert_allclose([summed[k] for k in summed], [getattr(first, k) for k in summed], rtol=1e-12)


@pytest.mark.parametrize(
    ("arms", "p", "y"),
    [([0, 3], [0.5, 0.5], [0, 0]), ([0], [0.0], [1]), ([0], [1.5], [1]), ([0], [0.5], [np.nan]), ([0, 1], [0.5], [1])],
)
def test_bad_units_are_refused(arms: list, p: list, y: list) -> None:
    with pytest.raises(ValueError):
        propensity_sums(arms, p, y, 2)


def _simpson_units() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two periods: the base rate falls from 10% to 2% while the bandit moves from A (80%) to B
    (80%); B converts 10% better than A in both periods."""
    arms, p, y = [], [], []
    for base, weight_a in ((0.10, 0.8), (0.02, 0.2)):
        for arm, n, rate, prop in ((0, round(10_000 * weight_a), base, weight_a),
                                   (1, round(10_000 * (1 - weight_a)), base * 1.1, 1 - weight_a)):
            conversions = round(n * rate)
            arms += [arm] * n
            p += [prop] * n
            y += [1.0] * conversions + [0.0] * (n - conversions)
    return np.array(arms), np.array(p), np.array(y)


def test_simpson_pooled_counts_reverse_the_order_and_corrected_estimates_do_not() -> None:
    arms, p, y = _simpson_units()
    pooled = [y[arms == a].mean() for a in (0, 1)]
    assert pooled[0] > pooled[1] * 2  # pooled: A 8.4% against B 3.96%
    corrected = [ipw_estimate(s) for s in propensity_sums(arms, p, y, 2)]
    # Hajek by hand: A (800 * 1.25 + 40 * 5) / 20,000 = 6.0%, B (220 * 5 + 176 * 1.25) / 20,000 = 6.6%.
    assert_allclose([c.mean for c in corrected if c], [0.060, 0.066], rtol=1e-12)
    stats = [BinaryStats(int((arms == a).sum()), int(y[arms == a].sum())) for a in (0, 1)]
    config = AnalysisConfig(draws=4000)
    rng = np.random.default_rng(0)
    naive = analyze(["a", "b"], stats, kind="bandit", control="a", expected_weights=None, config=config, rng=rng)
    fixed = analyze(["a", "b"], stats, kind="bandit", control="a", expected_weights=None, config=config, rng=rng,
                    weighted=propensity_sums(arms, p, y, 2))
    assert naive.arms[0].prob_best > 0.99 and naive.test.method == "partial_pooling"
    assert fixed.arms[1].prob_best > 0.75 and fixed.test.method == "ipw_partial_pooling"
    assert fixed.arms[1].lift is not None and fixed.arms[1].lift > 0
    assert fixed.arms[0].rate == pytest.approx(0.060, abs=0.002)


def test_missing_propensities_fall_back_to_pooled_counts() -> None:
    stats = [BinaryStats(100, 10), BinaryStats(100, 12)]
    partial = (PropensitySums(100, 200.0, 400.0, 20.0, 40.0, 40.0), PropensitySums(99, 198.0, 396.0, 24.0, 48.0, 48.0))
    result = analyze(["a", "b"], stats, kind="bandit", control=None, expected_weights=None,
                     config=AnalysisConfig(draws=1000), rng=np.random.default_rng(0), weighted=partial,
                     propensity_srm=True)
    assert result.test.method == "partial_pooling" and result.srm is None


def test_srm_with_a_constant_propensity_is_the_binomial_score_test() -> None:
    counts = np.array([300, 330, 370])
    arms = np.repeat(np.arange(3), counts)
    result = bandit_srm(propensity_sums(arms, np.full(arms.size, 1 / 3), np.zeros(arms.size), 3))
    # Reference: statsmodels proportions_ztest(count, nobs, value=1/3, prop_var=1/3) per arm, the
    # largest |z| with a Bonferroni factor of 3.
    z = [proportions_ztest(c, 1000, value=1 / 3, prop_var=1 / 3)[0] for c in counts]
    p = [proportions_ztest(c, 1000, value=1 / 3, prop_var=1 / 3)[1] for c in counts]
    assert_allclose(result.statistic, max(abs(v) for v in z), rtol=1e-9)
    assert_allclose(result.p_value, 3 * min(p), rtol=1e-9)
    assert not result.flagged


def test_srm_flags_an_arm_that_lost_exposures_and_not_a_healthy_split() -> None:
    rng = np.random.default_rng(5)
    n = 6000
    p = np.where(np.arange(n) < n // 2, 0.5, 0.2)  # weights change halfway: arm 0 0.5 then 0.2
    probs = np.stack([p, (1 - p) / 2, (1 - p) / 2], axis=1)
    arms = (probs.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1)
    logged = probs[np.arange(n), arms]
    healthy = bandit_srm(propensity_sums(arms, logged, np.zeros(n), 3))
    assert not healthy.flagged
    keep = (arms != 0) | (rng.random(n) < 0.8)  # a fifth of arm 0's exposures never logged
    broken = bandit_srm(propensity_sums(arms[keep], logged[keep], np.zeros(keep.sum()), 3))
    assert broken.flagged and broken.p_value is not None and broken.p_value < 0.001


def _starved_units() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arm a leads; b and c had an unlucky start at weight 1/3 (8 of 300 converted) and were then
    starved at weight 0.02 (5 of 100 converted since): how a bandit read on pooled counts
    shows a false winner."""
    arms, p, y = [0] * 9600, [0.9] * 9600, [1.0] * 557 + [0.0] * (9600 - 557)
    for arm in (1, 2):
        arms += [arm] * 400
        p += [1 / 3] * 300 + [0.02] * 100
        y += [1.0] * 8 + [0.0] * 292 + [1.0] * 5 + [0.0] * 95
    return np.array(arms), np.array(p), np.array(y)


def test_an_arm_starved_after_an_unlucky_start_makes_no_winner_on_corrected_estimates() -> None:
    arms, p, y = _starved_units()
    stats = [BinaryStats(int((arms == a).sum()), int(y[arms == a].sum())) for a in range(3)]
    config = AnalysisConfig(draws=20_000)
    pooled = analyze(["a", "b", "c"], stats, kind="bandit", control=None, expected_weights=None, config=config,
                     rng=np.random.default_rng(0))
    corrected = analyze(["a", "b", "c"], stats, kind="bandit", control=None, expected_weights=None, config=config,
                        rng=np.random.default_rng(0), weighted=propensity_sums(arms, p, y, 3))
    assert pooled.arms[0].prob_best is not None and pooled.arms[0].prob_best > 0.9
    assert corrected.verdict.status == "keep_running"
    assert corrected.arms[0].prob_best is not None and corrected.arms[0].prob_best < 0.8
    # The starved arms' corrected estimates are uncertain: their late units weigh 50 each.
    b = ipw_estimate(propensity_sums(arms, p, y, 3)[1])
    assert b is not None and b.effective_n < stats[1].n / 3
