"""Recommender sanity on planted structure; segments; empirical-Bayes shrinkage."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from policies.targeting.recommender import Interactions, RecommenderConfig, fit_recommender, tfidf
from policies.targeting.segments import fit_segments
from policies.targeting.shrinkage import FULL_POOLING, shrunk_means

# Arms 0, 1 are painting campaigns; 2, 3 music campaigns.
TOKENS = [["art", "painting", "channel=email"], ["art", "painting", "channel=push"],
          ["music", "guitar", "channel=email"], ["music", "guitar", "channel=push"]]


def planted() -> Interactions:
    """Painters (units 0-99) convert on arms 0 and 1, musicians (100-199) on 2 and 3."""
    units = np.repeat(np.arange(200), 2)
    arms = np.where(units < 100, np.tile([0, 1], 200), np.tile([2, 3], 200))
    return Interactions(units, arms, np.ones(400, dtype=bool), np.full(400, -1), 200, 4, 0)


@pytest.mark.parametrize("method", ["item_cf", "content", "svd", "hybrid"])
def test_a_unit_with_painting_history_is_recommended_painting(method: str) -> None:
    rng = np.random.default_rng(0)
    model = fit_recommender(planted(), TOKENS, RecommenderConfig(method, factors=2), rng)  # type: ignore[arg-type]
    scores, informative = model.scores_many(np.array([0]), np.array([-1]))
    # unit 0 converted on arms 0 and 1; a profile with arm 0 only must rank arm 1 above the music arms.
    profile = model.score_profiles(np.array([[1.0, 0.0, 0.0, 0.0]]))[0]
    assert informative[0]
    assert profile[1] > max(profile[2], profile[3])
    assert scores[0, :2].min() > scores[0, 2:].max()


def test_cold_units_get_none_and_segments_give_scores() -> None:
    # Segment 0 converts 30% on arm 2 and 2% elsewhere; segment 1 30% on arm 0.
    rng = np.random.default_rng(1)
    n = 4000
    segments = rng.integers(2, size=n)
    arms = rng.integers(4, size=n)
    best = np.where(segments == 0, 2, 0)
    converted = rng.random(n) < np.where(arms == best, 0.30, 0.02)
    data = Interactions(np.arange(n), arms, converted, segments, n, 4, 2)
    model = fit_recommender(data, TOKENS, RecommenderConfig("item_cf"), rng)
    assert model.scores(None, None) is None
    assert int(np.argmax(model.scores(None, 0))) == 2
    assert int(np.argmax(model.scores(None, 1))) == 0


def test_tfidf_rows_are_unit_vectors_and_rare_tokens_weigh_more() -> None:
    t = tfidf([["art", "painting"], ["art", "music"], ["art", "music"]]).toarray()
    assert_allclose(np.linalg.norm(t, axis=1), 1.0)
    # idf = log((1 + 3) / (1 + df)) + 1: art (df 3) 1.0, painting (df 1) log 2 + 1
    vocabulary = ["art", "music", "painting"]
    assert_allclose(t[0, vocabulary.index("painting")] / t[0, vocabulary.index("art")], np.log(2) + 1)


def test_kmeans_recovers_planted_segments() -> None:
    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 0.0], [5.0, 5.0], [0.0, 5.0]])
    labels = rng.integers(3, size=900)
    points = centres[labels] + rng.normal(0, 0.3, size=(900, 2))
    seg = fit_segments(points, 3, np.random.default_rng(0))
    found = seg.assign(points)
    # each planted cluster maps to one found segment (a permutation)
    assert all(len(set(found[labels == c])) == 1 for c in range(3))
    assert len(set(found)) == 3


def test_few_distinct_rows_are_their_own_segments() -> None:
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    seg = fit_segments(rows, 8, np.random.default_rng(0))
    assert seg.count == 2 and seg.assign(rows)[0] == seg.assign(rows)[2] != seg.assign(rows)[1]


def test_shrinkage_pools_identical_segments_and_separates_different_ones() -> None:
    counts = np.array([[1000.0], [1000.0]])
    same = shrunk_means(np.array([[50.0], [50.0]]), counts, np.array([[50.0], [50.0]]))
    assert same.strength[0] == FULL_POOLING
    assert_allclose(same.means, 0.05, rtol=1e-9)
    different = shrunk_means(np.array([[20.0], [200.0]]), counts, np.array([[20.0], [200.0]]))
    # one-way ANOVA moments: sigma^2 = (20 - 1000*0.02^2 + 200 - 1000*0.2^2) / 1998, Q = 1000*(0.09^2)*2,
    # tau^2 = (Q - sigma^2) / (2000 - 2*1000^2/2000); m = sigma^2 / tau^2
    sigma2 = (20 - 1000 * 0.02**2 + 200 - 1000 * 0.2**2) / 1998
    tau2 = (2 * 1000 * 0.09**2 - sigma2) / 1000
    m = sigma2 / tau2
    assert_allclose(different.strength[0], m, rtol=1e-12)
    assert_allclose(different.means[:, 0], (np.array([20.0, 200.0]) + m * 0.11) / (1000 + m), rtol=1e-12)

