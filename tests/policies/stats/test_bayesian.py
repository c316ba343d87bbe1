"""Bayesian posteriors: exact intervals, Monte Carlo decision quantities against integrals."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from policies.stats.bayesian import posterior_summaries
from policies.sufficient import BinaryStats, MeanStats

CONTROL, VARIANT = BinaryStats(1000, 40), BinaryStats(1000, 55)


def test_beta_posterior_mean_and_interval_reference() -> None:
    # scipy.stats.beta(41, 961).ppf([0.025, 0.975]) with the uniform Beta(1, 1) prior
    summary = posterior_summaries([CONTROL, VARIANT], rng=np.random.default_rng(0))
    assert_allclose(summary[0].mean, 41 / 1002, rtol=1e-12)
    assert_allclose(
        [summary[0].ci_low, summary[0].ci_high],
        [0.02955045807800226, 0.05401907525021882],
        rtol=1e-9,
    )


def test_two_arm_quantities_against_numeric_integration() -> None:
    # P(theta_b > theta_a) = scipy.integrate.quad(lambda x: beta(56, 946).pdf(x)
    #     * beta(41, 961).cdf(x), 0, 1) = 0.9418873441791109.
    # Expected loss E[max(theta) - theta_i] by quad over the closed-form inner expectation
    # E[(theta_a - t)+] = a/(a+b) * beta.sf(t, a+1, b) - t * beta.sf(t, a, b):
    # 0.015208996655745526 for the control, 0.0002389367755060142 for the variant.
    summary = posterior_summaries([CONTROL, VARIANT], rng=np.random.default_rng(1), control_index=0, draws=100_000)
    assert summary[0].prob_beat_control is None
    assert summary[1].prob_beat_control == pytest.approx(0.9418873441791109, abs=0.005)
    assert summary[1].prob_best == pytest.approx(0.9418873441791109, abs=0.005)
    assert summary[0].expected_loss == pytest.approx(0.015208996655745526, abs=2e-4)
    assert summary[1].expected_loss == pytest.approx(0.0002389367755060142, abs=5e-5)


def test_prob_best_sums_to_one_and_losses_are_non_negative() -> None:
    stats = [BinaryStats(500, 20), BinaryStats(520, 31), BinaryStats(480, 24), BinaryStats(0, 0)]
    summary = posterior_summaries(stats, rng=np.random.default_rng(2))
    assert sum(s.prob_best for s in summary) == pytest.approx(1.0, abs=1e-12)
    assert all(s.expected_loss >= 0 for s in summary)
    assert summary[3].mean == 0.5  # no data: the prior mean


def test_relabelling_arms_permutes_results() -> None:
    stats = [BinaryStats(500, 20), BinaryStats(520, 31), BinaryStats(480, 24)]
    order = [2, 0, 1]
    base = posterior_summaries(stats, rng=np.random.default_rng(3), control_index=0)
    permuted = posterior_summaries([stats[i] for i in order], rng=np.random.default_rng(4), control_index=1)
    for new, old in enumerate(order):
        assert permuted[new].mean == base[old].mean
        assert permuted[new].prob_best == pytest.approx(base[old].prob_best, abs=0.02)
        assert permuted[new].expected_loss == pytest.approx(base[old].expected_loss, abs=5e-4)


def test_revenue_normal_posterior() -> None:
    stats = [MeanStats(400, 1000.0, 6000.0), MeanStats(400, 1100.0, 6500.0)]
    summary = posterior_summaries(stats, rng=np.random.default_rng(5), control_index=0)
    sd = np.sqrt((6000.0 - 400 * 2.5**2) / 399 / 400)
    z = 1.959963984540054  # scipy.stats.norm.ppf(0.975)
    assert_allclose([summary[0].ci_low, summary[0].ci_high], [2.5 - z * sd, 2.5 + z * sd], rtol=1e-9)
    lift = summary[1].lift
    assert lift is not None and lift.low < 0.1 < lift.high
    assert lift.estimate == pytest.approx(0.1, abs=0.01)


def test_identical_degenerate_arms_share_prob_best() -> None:
    summary = posterior_summaries(
        [MeanStats(10, 0.0, 0.0), MeanStats(10, 0.0, 0.0)],
        rng=np.random.default_rng(6),
        control_index=0,
    )
    assert [s.prob_best for s in summary] == [0.5, 0.5]
    assert summary[1].prob_beat_control == 0.5
    assert summary[1].lift is None


def test_caller_bugs_raise() -> None:
    rng = np.random.default_rng(7)
    with pytest.raises(ValueError):
        posterior_summaries([BinaryStats(10, 1), MeanStats(10, 1.0, 1.0)], rng=rng)
    with pytest.raises(ValueError):
        posterior_summaries([MeanStats(1, 1.0, 1.0), MeanStats(10, 1.0, 1.0)], rng=rng)
    with pytest.raises(ValueError):
        posterior_summaries([BinaryStats(10, 1), BinaryStats(10, 2)], rng=rng, control_index=2)


def test_binary_prob_best_is_exact_whatever_the_draws() -> None:
    # Two arms: P(theta_b > theta_a) by scipy.integrate.quad, as in the reference test above.
    few = posterior_summaries([CONTROL, VARIANT], rng=np.random.default_rng(7), draws=1)
    assert_allclose(few[1].prob_best, 0.9418873441791109, rtol=1e-9)
    stats = [BinaryStats(500, 20), BinaryStats(520, 31), BinaryStats(480, 24)]
    one = posterior_summaries(stats, rng=np.random.default_rng(8), draws=10)
    other = posterior_summaries(stats, rng=np.random.default_rng(9), draws=100_000)
    assert [s.prob_best for s in one] == [s.prob_best for s in other]
