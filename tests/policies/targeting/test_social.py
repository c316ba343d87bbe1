"""Social scores (LightGCN-style propagation), the test that decides whether to use them, and
the recommender's `social` method and hybrid term."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import sparse
from statsmodels.stats.contingency_tables import StratifiedTable

from policies.targeting.recommender import Interactions, RecommenderConfig, fit_recommender
from policies.targeting.social import (
    SOCIAL_Z,
    TIME_STRATA,
    SocialGraph,
    lightgcn_dense,
    signal_exposure,
    social_evidence,
    social_scores,
)

TOKENS = [["art"], ["music"], ["code"]]


def undirected(pairs: list[tuple[int, int]], n: int) -> SocialGraph:
    s, t = np.array(pairs, dtype=np.intp).T
    return SocialGraph(s, t, np.ones(len(pairs)), np.zeros(len(pairs), dtype=bool), n)


def history(n: int, k: int, conversions: list[tuple[int, int]]) -> sparse.csr_matrix:
    h = np.zeros((n, k))
    for u, a in conversions:
        h[u, a] = 1.0
    return sparse.csr_matrix(h)


def test_a_cold_unit_whose_friends_converted_on_an_arm_scores_it_by_hand() -> None:
    # Unit 0 (no conversion) is friends with 1 and 2, who converted on arm 1. The joint graph is
    # bipartite ({u0, arm1} | {u1, u2}), every degree 2, so Â's entries are 1/2; Â²[u0, arm1] =
    # Â⁴[u0, arm1] = 1/2 and odd powers are 0. M = (I + Â + Â²) / 3, and (M M)[u0, arm1] =
    # (3 Â² + Â⁴)[u0, arm1] / 9 = 2/9 (the coefficients of (1 + x + x²)² are 1, 2, 3, 2, 1).
    scores = social_scores(history(3, 2, [(1, 1), (2, 1)]), undirected([(0, 1), (0, 2)], 3), layers=2)
    assert_allclose(scores[0], [0.0, 2 / 9], rtol=1e-12)


def test_sparse_propagation_equals_the_dense_definition() -> None:
    rng = np.random.default_rng(0)
    n, k, m = 40, 4, 120
    h = (rng.random((n, k)) < 0.2).astype(float)
    s, t = rng.integers(n, size=m), rng.integers(n, size=m)
    keep = s != t
    graph = SocialGraph(s[keep], t[keep], rng.random(keep.sum()) + 0.5, rng.random(keep.sum()) < 0.4, n)
    for layers in (1, 2, 3):
        assert_allclose(social_scores(sparse.csr_matrix(h), graph, layers),
                        lightgcn_dense(h, graph.adjacency().toarray(), layers), rtol=1e-9, atol=1e-15)


def test_a_follow_passes_the_followed_conversions_to_the_follower_only() -> None:
    # 0 follows 1; 1 converted on arm 0, 0 on arm 1.
    graph = SocialGraph(np.array([0]), np.array([1]), np.ones(1), np.array([True]), 2)
    scores = social_scores(history(2, 2, [(1, 0), (0, 1)]), graph)
    assert scores[0, 0] > 0  # the follower reads the followed
    assert scores[1, 1] == 0  # the followed does not read the follower


def test_units_out_of_reach_of_any_conversion_score_zero() -> None:
    scores = social_scores(history(4, 2, [(1, 0)]), undirected([(0, 1), (2, 3)], 4))
    assert scores[0, 0] > 0 and not scores[2:].any()


@pytest.mark.parametrize("graph_units", [3, 5])
def test_graph_and_history_must_have_the_same_units(graph_units: int) -> None:
    with pytest.raises(ValueError, match="units"):
        social_scores(history(4, 2, []), undirected([(0, 1)], graph_units))


@pytest.mark.parametrize(("edges", "weights", "match"), [
    ([(0, 5)], [1.0], "unit indices"),
    ([(0, 1)], [0.0], "weights"),
    ([(0, 1)], [np.inf], "weights"),
])
def test_a_bad_graph_is_refused(edges: list[tuple[int, int]], weights: list[float], match: str) -> None:
    s, t = np.array(edges).T
    with pytest.raises(ValueError, match=match):
        SocialGraph(s, t, np.array(weights), np.zeros(1, dtype=bool), 3)


def test_layers_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="layers"):
        RecommenderConfig("social", layers=0)


# -- the evidence test ------------------------------------------------------------------


def test_signal_exposure_follows_time_and_direction() -> None:
    # 0 follows 1. Decisions in order: 1 converts on arm 0; 0 is shown arm 0 (signal); 0 is shown
    # arm 1 (no signal: 1 never converted there); 1 is shown arm 0 (0 never converted: no signal).
    graph = SocialGraph(np.array([0]), np.array([1]), np.ones(1), np.array([True]), 2)
    units, arms = np.array([1, 0, 0, 1]), np.array([0, 0, 1, 0])
    converted = np.array([True, True, False, False])
    assert signal_exposure(units, arms, converted, graph, 2).tolist() == [False, True, False, False]


def homophilous_log(rng: np.random.Generator, homophily: bool, n: int = 2000, decisions: int = 20_000
                    ) -> tuple[Interactions, SocialGraph]:
    """Two segments (0 converts 30% on arm 0, 1 on arm 1, 3% elsewhere); each unit has 5 friends,
    of its own segment when `homophily`, else anyone. Arms are shown uniformly at random."""
    segment = rng.integers(2, size=n)
    friends = []
    for u in range(n):
        pool = np.flatnonzero(segment == segment[u]) if homophily else np.arange(n)
        friends += [(u, int(v)) for v in rng.choice(pool, 5) if v != u]
    units, arms = rng.integers(n, size=decisions), rng.integers(3, size=decisions)
    converted = rng.random(decisions) < np.where(arms == segment[units], 0.30, 0.03)
    data = Interactions(units, arms, converted, np.full(decisions, -1), n, 3, 0)
    return data, undirected(friends, n)


def test_homophily_is_detected_and_the_statistic_matches_statsmodels() -> None:
    data, graph = homophilous_log(np.random.default_rng(1), homophily=True)
    evidence = social_evidence(data.units, data.arms, data.converted, graph, 3)
    assert evidence.predictive and evidence.odds_ratio > 1
    # Reference: statsmodels' Mantel-Haenszel on the same 2x2 tables (arm x tenth of the log):
    # StratifiedTable(tables).test_null_odds(correction=False).statistic is z², oddsratio_pooled the OR.
    signal = signal_exposure(data.units, data.arms, data.converted, graph, 3)
    strata = data.arms * TIME_STRATA + np.arange(len(data.units)) * TIME_STRATA // len(data.units)
    tables = [np.array([[np.sum(x & signal & data.converted), np.sum(x & signal & ~data.converted)],
                        [np.sum(x & ~signal & data.converted), np.sum(x & ~signal & ~data.converted)]])
              for x in (strata == s for s in np.unique(strata))]
    reference = StratifiedTable(tables)
    assert_allclose(evidence.z ** 2, reference.test_null_odds(correction=False).statistic, rtol=1e-9)
    assert_allclose(evidence.odds_ratio, reference.oddsratio_pooled, rtol=1e-9)


def test_random_friends_are_not_trusted() -> None:
    # Seeds 0-19, 20,000 decisions each: the one-sided 5% test opens on about 1 in 20 logs by
    # chance; more than 4 of 20 would mean it does not hold its level (binomial tail < 2%).
    opened = 0
    for seed in range(20):
        data, graph = homophilous_log(np.random.default_rng(seed), homophily=False, decisions=5_000)
        opened += social_evidence(data.units, data.arms, data.converted, graph, 3).predictive
    assert opened <= 4


def test_a_policy_that_follows_friends_does_not_fool_the_test() -> None:
    # Friends are random, but the policy shows each unit the arm a friend last converted on, so
    # friends end up converting alike. Given the arm shown, the signal tells nothing: no trust.
    rng = np.random.default_rng(3)
    n, decisions = 1000, 20_000
    rates = rng.choice([0.03, 0.3], size=(n, 3))
    friends = [(u, int(v)) for u in range(n) for v in rng.integers(n, size=5) if v != u]
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for u, v in friends:
        neighbours[u].append(v)
        neighbours[v].append(u)
    last = np.full(n, -1)
    units, arms, converted = rng.integers(n, size=decisions), np.zeros(decisions, dtype=np.intp), []
    for i, u in enumerate(units):
        seen = [last[v] for v in neighbours[u] if last[v] >= 0]
        arms[i] = seen[-1] if seen and rng.random() < 0.8 else rng.integers(3)
        converted.append(rng.random() < rates[u, arms[i]])
        if converted[-1]:
            last[u] = arms[i]
    evidence = social_evidence(units, arms, np.array(converted), undirected(friends, n), 3)
    assert evidence.exposed > 1000 and evidence.z < SOCIAL_Z


# -- the recommender ----------------------------------------------------------------------


@pytest.mark.parametrize("config", [RecommenderConfig("social"),
                                    RecommenderConfig("hybrid", cf_weight=0.7, content_weight=0.3, social_weight=0.5)])
def test_a_cold_unit_gets_the_arm_its_friends_converted_on(config: RecommenderConfig) -> None:
    data, graph = homophilous_log(np.random.default_rng(4), homophily=True)
    cold = data.n_units  # one more unit, with friends in segment 1 (unit ids drawn above)
    segment1 = [u for u in range(data.n_units) if data.converted[(data.units == u) & (data.arms == 1)].any()][:8]
    bigger = SocialGraph(np.concatenate([graph.sources, np.full(8, cold)]),
                         np.concatenate([graph.targets, segment1]), np.ones(graph.size + 8),
                         np.zeros(graph.size + 8, dtype=bool), cold + 1)
    widened = Interactions(data.units, data.arms, data.converted, data.segments, cold + 1, 3, 0)
    model = fit_recommender(widened, TOKENS, config, np.random.default_rng(0), bigger)
    assert model.social_evidence is not None and model.social_evidence.predictive
    scores = model.scores(cold, None)
    assert scores is not None and int(np.argmax(scores)) == 1
    assert model.scores(None, None) is None  # a unit outside the graph is still a cold start


def test_without_evidence_the_social_scores_are_not_used() -> None:
    data, graph = homophilous_log(np.random.default_rng(5), homophily=False, decisions=3000)
    model = fit_recommender(data, TOKENS, RecommenderConfig("social"), np.random.default_rng(0), graph)
    assert model.social_evidence is not None and not model.social_evidence.predictive
    assert model.social is None
    cold = int(np.setdiff1d(np.arange(data.n_units), data.units)[0])
    assert model.scores(cold, None) is None


def test_other_methods_ignore_the_graph() -> None:
    data, graph = homophilous_log(np.random.default_rng(6), homophily=True, decisions=3000)
    model = fit_recommender(data, TOKENS, RecommenderConfig("item_cf"), np.random.default_rng(0), graph)
    assert model.social is None and model.social_evidence is None
