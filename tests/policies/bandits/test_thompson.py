"""Thompson sampling: posteriors, P(best) quadrature, top-two, floor, discounting, factory."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy import special, stats

from policies.bandits.arm_stats import discount_stats, fold_stats
from policies.bandits.registry import make_policy
from policies.bandits.thompson import (
    BetaPosterior,
    BetaPrior,
    NormalInverseGammaPrior,
    StudentTPosterior,
    ThompsonSampling,
    apply_floor,
    prob_best,
    top_two_weights,
)
from policies.sufficient import BinaryStats, MeanStats

RNG = np.random.default_rng(0)


def evan_miller_prob_b_beats_a(alpha_a: int, beta_a: int, alpha_b: int, beta_b: int) -> float:
    """P(p_B > p_A) for p_A ~ Beta(alpha_a, beta_a), p_B ~ Beta(alpha_b, beta_b), integer alpha_b.

    Evan Miller, "Formulas for Bayesian A/B Testing" (2015),
    https://www.evanmiller.org/bayesian-ab-testing.html:
    sum_{i=0}^{alpha_b-1} B(alpha_a+i, beta_a+beta_b) / ((beta_b+i) B(1+i, beta_b) B(alpha_a, beta_a)).
    """
    i = np.arange(alpha_b)
    log_terms = (
        special.betaln(alpha_a + i, beta_a + beta_b)
        - np.log(beta_b + i)
        - special.betaln(1 + i, beta_b)
        - special.betaln(alpha_a, beta_a)
    )
    return float(np.exp(log_terms).sum())


def monte_carlo_prob_best(samples: np.ndarray) -> np.ndarray:
    """Frequency with which each row (arm) holds the column maximum."""
    return np.bincount(samples.argmax(axis=0), minlength=samples.shape[0]) / samples.shape[1]


@pytest.mark.parametrize(
    ("alpha_a", "beta_a", "alpha_b", "beta_b"),
    [(1, 1, 1, 1), (2, 5, 3, 4), (11, 91, 16, 86), (120, 880, 141, 859), (1, 30, 4, 40), (500, 9500, 560, 9440)],
)
def test_two_beta_arms_match_evan_millers_closed_form(alpha_a: int, beta_a: int, alpha_b: int, beta_b: int) -> None:
    p = prob_best(BetaPosterior(np.array([alpha_a, alpha_b], float), np.array([beta_a, beta_b], float)))
    assert_allclose(p[1], evan_miller_prob_b_beats_a(alpha_a, beta_a, alpha_b, beta_b), rtol=0, atol=1e-9)


def test_beta_quadrature_matches_monte_carlo_for_many_arms() -> None:
    rng = np.random.default_rng(1)
    alpha = np.array([3.0, 40.0, 12.0, 0.5, 150.0, 7.0])
    beta = np.array([20.0, 260.0, 70.0, 2.5, 1100.0, 45.0])
    draws = 400_000
    frequencies = monte_carlo_prob_best(rng.beta(alpha[:, None], beta[:, None], (alpha.size, draws)))
    p = prob_best(BetaPosterior(alpha, beta))
    # Binomial standard error of each frequency; 5 sigma keeps a fixed-seed test far from flaky.
    assert np.all(np.abs(frequencies - p) <= 5 * np.sqrt(p * (1 - p) / draws) + 1e-6)


@pytest.mark.parametrize(
    ("alpha", "beta"),
    [
        ([0.05, 0.05], [0.05, 0.15]),  # shapes < 1 pile mass within 1e-16 of 0 and 1
        ([0.2, 1.0], [0.2, 1.0]),
        ([1e7 + 1e4, 1e7, 5.0], [1e7 - 1e4, 1e7, 5.0]),  # concentrated next to flat
        ([2.0, 900.0], [5000.0, 100.0]),  # far apart: one arm certain
    ],
)
def test_beta_quadrature_is_robust_to_extreme_shapes(alpha: list[float], beta: list[float]) -> None:
    rng = np.random.default_rng(2)
    a, b = np.array(alpha), np.array(beta)
    draws = 1_000_000
    frequencies = monte_carlo_prob_best(rng.beta(a[:, None], b[:, None], (a.size, draws)))
    p = prob_best(BetaPosterior(a, b))
    assert np.all(np.isfinite(p)) and math.isclose(p.sum(), 1.0)
    assert np.all(np.abs(frequencies - p) <= 5 * np.sqrt(p * (1 - p) / draws) + 1e-6)


def test_huge_counts_match_the_normal_approximation() -> None:
    # With 1e9 trials a Beta posterior is Normal to many digits: P(B > A) = Phi(d / s).
    a = np.array([1e9, 1e9 + 3e4])
    b = np.array([1e9, 1e9 - 3e4])
    mean = a / (a + b)
    var = a * b / ((a + b) ** 2 * (a + b + 1))
    expected = stats.norm.cdf((mean[1] - mean[0]) / np.sqrt(var.sum()))
    assert_allclose(prob_best(BetaPosterior(a, b))[1], expected, atol=1e-5)


def test_student_t_quadrature_matches_normal_closed_form_for_large_df() -> None:
    # t with 1e8 degrees of freedom is Normal to ~1e-8: P(X1 > X0) = Phi((m1 - m0) / sqrt(s0^2 + s1^2)).
    posterior = StudentTPosterior(np.array([1e8, 1e8]), np.array([2.0, 2.3]), np.array([0.4, 0.3]))
    expected = stats.norm.cdf(0.3 / math.hypot(0.4, 0.3))
    assert_allclose(prob_best(posterior)[1], expected, atol=1e-7)


def test_student_t_quadrature_matches_monte_carlo_with_heavy_tails() -> None:
    rng = np.random.default_rng(3)
    posterior = StudentTPosterior(
        np.array([1.0, 2.0, 5.0, 30.0]), np.array([0.0, 1.0, 1.5, 1.2]), np.array([10.0, 2.0, 0.5, 0.2])
    )
    draws = 400_000
    samples = posterior.loc[:, None] + posterior.scale[:, None] * rng.standard_t(posterior.df[:, None], (4, draws))
    p = prob_best(posterior)
    assert np.all(np.abs(monte_carlo_prob_best(samples) - p) <= 5 * np.sqrt(p * (1 - p) / draws) + 1e-6)


def test_beta_posterior_adds_successes_and_failures_to_the_prior() -> None:
    posterior = ThompsonSampling(prior=BetaPrior(2.0, 3.0)).posterior([BinaryStats(10, 4), BinaryStats(0, 0)])
    assert isinstance(posterior, BetaPosterior)
    assert_allclose(posterior.alpha, [6.0, 2.0])
    assert_allclose(posterior.beta, [9.0, 3.0])
    low, high = posterior.interval(0.95)
    # scipy.stats.beta(6, 9).ppf([0.025, 0.975])
    assert_allclose([low[0], high[0]], stats.beta(6, 9).ppf([0.025, 0.975]), rtol=1e-9)


def test_normal_inverse_gamma_posterior_matches_the_textbook_update() -> None:
    """Murphy 2007 (NIG posterior): kappa_n = kappa + n, mu_n = (kappa mu + n xbar) / kappa_n,
    alpha_n = alpha + n/2, beta_n = beta + S/2 + kappa n (xbar - mu)^2 / (2 kappa_n);
    the mean's marginal is t_{2 alpha_n}(mu_n, beta_n / (alpha_n kappa_n))."""
    x = np.array([0.0, 0.0, 12.5, 0.0, 40.0, 7.25, 0.0, 19.0])
    prior = NormalInverseGammaPrior(mean=3.0, kappa=2.0, alpha=1.5, beta=4.0)
    posterior = ThompsonSampling(prior=prior).posterior([MeanStats(x.size, x.sum(), (x * x).sum())])
    assert isinstance(posterior, StudentTPosterior)
    n, xbar = x.size, x.mean()
    kappa_n, alpha_n = 2.0 + n, 1.5 + n / 2
    beta_n = 4.0 + ((x - xbar) ** 2).sum() / 2 + 2.0 * n * (xbar - 3.0) ** 2 / (2 * kappa_n)
    assert_allclose(posterior.df, [2 * alpha_n], rtol=1e-12)
    assert_allclose(posterior.loc, [(2.0 * 3.0 + n * xbar) / kappa_n], rtol=1e-12)
    assert_allclose(posterior.scale, [math.sqrt(beta_n / (alpha_n * kappa_n))], rtol=1e-12)


def test_student_t_marginal_matches_sampling_the_normal_inverse_gamma() -> None:
    # sigma^2 ~ InvGamma(alpha_n, beta_n), mu | sigma^2 ~ N(mu_n, sigma^2 / kappa_n).
    rng = np.random.default_rng(4)
    prior = NormalInverseGammaPrior(mean=1.0, kappa=0.5, alpha=2.0, beta=3.0)
    posterior = prior.posterior(np.array([5.0]), np.array([9.0]), np.array([30.0]))
    kappa_n, alpha_n = 5.5, 4.5
    mu_n = (0.5 * 1.0 + 9.0) / kappa_n
    beta_n = 3.0 + (30.0 - 9.0**2 / 5) / 2 + 0.5 * 5 * (9.0 / 5 - 1.0) ** 2 / (2 * kappa_n)
    sigma2 = stats.invgamma(alpha_n, scale=beta_n).rvs(size=200_000, random_state=rng)
    mu = rng.normal(mu_n, np.sqrt(sigma2 / kappa_n))
    marginal = stats.t(posterior.df[0], posterior.loc[0], posterior.scale[0])
    assert stats.kstest(mu, marginal.cdf).pvalue > 1e-3


def test_revenue_policy_accepts_binary_stats_and_binary_rejects_mean_stats() -> None:
    revenue = make_policy("thompson", metric="revenue")
    w = revenue.weights([BinaryStats(100, 10), MeanStats(100, 500.0, 40_000.0)], RNG)
    assert math.isclose(w.sum(), 1.0)
    with pytest.raises(ValueError, match="BinaryStats"):
        make_policy("thompson").weights([MeanStats(10, 1.0, 1.0), BinaryStats(10, 1)], RNG)


arm_counts = st.lists(
    st.tuples(st.integers(0, 5000), st.floats(0, 1)).map(lambda t: BinaryStats(t[0], round(t[0] * t[1]))),
    min_size=1,
    max_size=8,
)


@settings(max_examples=40, deadline=None)
@given(stats_=arm_counts, floor_share=st.floats(0, 1), top_two=st.none() | st.floats(0.05, 1.0))
def test_weights_sum_to_one_and_respect_the_floor(
    stats_: list[BinaryStats], floor_share: float, top_two: float | None
) -> None:
    min_weight = floor_share / len(stats_)
    w = ThompsonSampling(min_weight=min_weight, top_two=top_two).weights(stats_, RNG)
    assert w.shape == (len(stats_),)
    assert_allclose(w.sum(), 1.0, atol=1e-12)
    assert np.all(w >= min_weight - 1e-15)


@settings(max_examples=40, deadline=None)
@given(stats_=arm_counts, data=st.data())
def test_relabelling_arms_permutes_weights(stats_: list[BinaryStats], data: st.DataObject) -> None:
    order = data.draw(st.permutations(range(len(stats_))))
    policy = ThompsonSampling(min_weight=0.01 / len(stats_), top_two=0.5)
    w = policy.weights(stats_, RNG)
    assert_allclose(policy.weights([stats_[i] for i in order], RNG), w[order], rtol=0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    arms=st.lists(st.tuples(st.integers(0, 3000), st.floats(0, 60), st.floats(0, 200)), min_size=2, max_size=6),
    data=st.data(),
)
def test_revenue_weights_sum_to_one_and_permute(arms: list[tuple[int, float, float]], data: st.DataObject) -> None:
    stats_ = [MeanStats(n, n * mean, n * (mean * mean + spread)) for n, mean, spread in arms]
    order = data.draw(st.permutations(range(len(stats_))))
    policy = make_policy("thompson", metric="revenue")
    w = policy.weights(stats_, RNG)
    assert_allclose(w.sum(), 1.0, atol=1e-12)
    assert_allclose(policy.weights([stats_[i] for i in order], RNG), w[order], rtol=0, atol=1e-12)


def test_weights_do_not_depend_on_the_generator() -> None:
    stats_ = [BinaryStats(200, 20), BinaryStats(180, 25), BinaryStats(10, 1)]
    policy = ThompsonSampling(min_weight=0.02)
    assert_allclose(policy.weights(stats_, np.random.default_rng(0)), policy.weights(stats_, np.random.default_rng(1)))


def test_floor_formula_and_validation() -> None:
    assert_allclose(apply_floor(np.array([0.7, 0.3, 0.0]), 0.1), [0.1 + 0.7 * 0.7, 0.1 + 0.7 * 0.3, 0.1])
    assert_allclose(apply_floor(np.array([1.0, 0.0]), 0.5), [0.5, 0.5])
    with pytest.raises(ValueError, match="too large"):
        ThompsonSampling(min_weight=0.3).weights([BinaryStats(0, 0)] * 4, RNG)


def test_top_two_matches_simulating_the_procedure() -> None:
    """Top-two TS (Russo 2016): leader with prob. beta, else resample until another arm leads."""
    rng = np.random.default_rng(5)
    alpha, beta = np.array([30.0, 26.0, 20.0, 5.0]), np.array([70.0, 74.0, 80.0, 20.0])
    posterior = BetaPosterior(alpha, beta)
    leader_probability, trials = 0.5, 60_000
    # Vectorised procedure: a pool of fresh samples per trial; take the first leader != the original.
    pool = rng.beta(alpha[:, None, None], beta[:, None, None], (4, trials, 40)).argmax(axis=0)
    leader = pool[:, 0]
    differs = pool[:, 1:] != leader[:, None]
    assert differs.any(axis=1).all()  # 39 resamples always suffice for these posteriors
    challenger = pool[np.arange(trials), 1 + differs.argmax(axis=1)]
    played = np.where(rng.random(trials) < leader_probability, leader, challenger)
    frequencies = np.bincount(played, minlength=4) / trials
    psi = top_two_weights(prob_best(posterior), leader_probability)
    assert np.all(np.abs(frequencies - psi) <= 5 * np.sqrt(psi * (1 - psi) / trials))


def test_top_two_with_a_certain_leader_spreads_the_challenger_uniformly() -> None:
    assert_allclose(top_two_weights(np.array([1.0, 0.0, 0.0]), 0.5), [0.5, 0.25, 0.25])
    assert_allclose(top_two_weights(np.array([0.3, 0.7]), 1.0), [0.3, 0.7])
    # Two arms: the challenger is always the other arm, so weights move halfway to uniform.
    assert_allclose(top_two_weights(np.array([0.9, 0.1]), 0.5), [0.5, 0.5])


def test_discounting_scales_pseudo_counts_and_folds_increments() -> None:
    memory = [BinaryStats(100, 30), BinaryStats(10, 1)]
    assert discount_stats(memory, 0.5) == [BinaryStats(50.0, 15.0), BinaryStats(5.0, 0.5)]  # type: ignore[arg-type]
    folded = fold_stats(memory, [BinaryStats(10, 5), BinaryStats(0, 0)], 0.9)
    assert_allclose([folded[0].n, folded[0].successes, folded[1].n], [100.0, 32.0, 9.0])
    revenue = fold_stats([MeanStats(4, 10.0, 50.0)], [MeanStats(1, 2.0, 4.0)], 0.5)
    assert revenue == [MeanStats(3.0, 7.0, 29.0)]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="discount"):
        discount_stats(memory, 1.5)


def test_discounted_stats_give_valid_weights() -> None:
    stats_ = discount_stats([BinaryStats(1000, 100), BinaryStats(50, 9)], 0.37)
    w = ThompsonSampling(discount=0.37).weights(stats_, RNG)
    assert_allclose(w.sum(), 1.0)


def test_factory_builds_from_yaml_parameters() -> None:
    policy = make_policy("thompson", prior={"alpha": 2, "beta": 8}, min_weight=0.01, top_two=0.5, metric="binary")
    assert policy == ThompsonSampling(BetaPrior(2.0, 8.0), min_weight=0.01, top_two=0.5)
    revenue = make_policy("thompson", prior={"mean": 5, "beta": 100}, metric="revenue", discount=0.9)
    assert revenue == ThompsonSampling(NormalInverseGammaPrior(mean=5.0, beta=100.0), discount=0.9)
    assert make_policy("thompson", window=5000).window == 5000  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"prior": {"alpha": 1, "mean": 0}}, "unknown prior parameter"),
        ({"prior": {"alpha": 0}}, "alpha"),
        ({"prior": {"kappa": -1}, "metric": "revenue"}, "kappa"),
        ({"metric": "clicks"}, "metric"),
        ({"min_weight": -0.1}, "min_weight"),
        ({"top_two": 0.0}, "top_two"),
        ({"top_two": True}, "top_two"),
        ({"discount": 0.0}, "discount"),
        ({"window": 0}, "window"),
        ({"discount": 0.9, "window": 100}, "not both"),
    ],
)
def test_factory_rejects_invalid_parameters(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_policy("thompson", **params)
