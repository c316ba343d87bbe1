"""Recommender scores per unit and arm, from conversion history and user segments.

Inputs are logged decisions (unit, arm, converted, segment) and the arms' descriptive tokens
(tags, partner, channel, campaign). Every method scores a *profile*, a vector over arms:

- history: the arms the unit converted on (0/1, implicit feedback; units x arms, sparse);
- segment: the unit's segment's conversion rate per arm, shrunk towards the arm's pooled
  rate by empirical Bayes (`policies.targeting.shrinkage`) and divided by its largest entry. Rates are
  conversions over *exposures*: a bandit shows its favourite arm far more often, so raw
  conversion counts would mostly echo the allocation (exposure bias; Schnabel et al. 2016,
  "Recommendations as treatments"). A unit's profile is its history plus its segment's
  profile, so a unit without history but with a known segment still gets scores (segments
  act as profile features); a unit with neither is a cold start and gets `None`.

Methods (`profile` p is a row vector over arms):

- `item_cf`: item-based collaborative filtering, `p @ S` with `S` the cosine similarity of
  the arms' columns in the history matrix (Sarwar et al. 2001, "Item-based collaborative
  filtering recommendation algorithms");
- `content`: cosine between the unit's TF-IDF profile `p @ T` and each arm's TF-IDF vector
  `T[a]`, with `T` the L2-normalised TF-IDF of the arm tokens, smooth idf
  `log((1 + n) / (1 + df)) + 1` (Salton & Buckley 1988; Manning, Raghavan & Schütze 2008 §6.2);
- `svd`: PureSVD (Cremonesi, Koren & Turrin 2010): truncated SVD `H ~ U S V^T` of the history
  matrix by `scipy.sparse.linalg.svds`, and scores `p @ V V^T` (the profile projected onto the
  top `factors` item factors; rank at most arms - 1);
- `social`: LightGCN-style propagation over the social graph joined with the units x arms
  conversion graph (`policies.targeting.social`, He et al. 2020). It scores a *unit*, not a
  profile: a unit known to neither the history nor the graph, or whose reach holds no
  conversion, is a cold start. The scores are used only once the log shows that neighbours'
  conversions predict a unit's own (`social_evidence`); until then every unit is a cold start;
- `hybrid`: `cf_weight * item_cf + content_weight * content + social_weight * social`, each
  part divided by its largest absolute entry for the unit so the weights mix comparable numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.sparse.linalg import svds

from policies.targeting.shrinkage import shrunk_means
from policies.targeting.social import (
    DEFAULT_LAYERS,
    SocialEvidence,
    SocialGraph,
    check_layers,
    social_evidence,
    social_scores,
)

FloatArray = NDArray[np.float64]
Method = Literal["item_cf", "content", "svd", "social", "hybrid"]
METHODS: tuple[Method, ...] = get_args(Method)


@dataclass(frozen=True)
class RecommenderConfig:
    """Which method, the hybrid's mix (alpha = `cf_weight`, beta = `content_weight`, gamma =
    `social_weight`), SVD rank, and the propagation's `layers` (social)."""

    method: Method = "hybrid"
    cf_weight: float = 0.5
    content_weight: float = 0.5
    factors: int = 8
    social_weight: float = 0.0
    layers: int = DEFAULT_LAYERS

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        for name in ("cf_weight", "content_weight", "social_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.method == "hybrid" and self.cf_weight + self.content_weight + self.social_weight <= 0:
            raise ValueError("a hybrid needs cf_weight + content_weight + social_weight > 0")
        if isinstance(self.factors, bool) or self.factors < 1:
            raise ValueError(f"factors must be an integer >= 1, got {self.factors!r}")
        check_layers(self.layers)

    @property
    def uses_social(self) -> bool:
        """Whether the scores depend on the social graph (and the social scores are fitted)."""
        return self.method == "social" or (self.method == "hybrid" and self.social_weight > 0)


@dataclass(frozen=True, eq=False)
class Interactions:
    """Logged decisions, one entry per row in the order they were made: unit and arm indices,
    converted, segment (-1: unknown)."""

    units: NDArray[np.intp]
    arms: NDArray[np.intp]
    converted: NDArray[np.bool_]
    segments: NDArray[np.intp]
    n_units: int
    n_arms: int
    n_segments: int

    def __post_init__(self) -> None:
        size = len(self.units)
        if not (len(self.arms) == len(self.converted) == len(self.segments) == size):
            raise ValueError("units, arms, converted and segments must have one entry per decision")
        if self.n_arms < 1 or self.n_units < 0 or self.n_segments < 0:
            raise ValueError("n_arms must be >= 1, n_units and n_segments >= 0")
        if size and (self.units.min() < 0 or self.units.max() >= self.n_units):
            raise ValueError("unit indices must lie in [0, n_units)")
        if size and (self.arms.min() < 0 or self.arms.max() >= self.n_arms):
            raise ValueError("arm indices must lie in [0, n_arms)")
        if size and (self.segments.min() < -1 or self.segments.max() >= self.n_segments):
            raise ValueError("segments must lie in [-1, n_segments)")


def tfidf(arm_tokens: Sequence[Sequence[str]]) -> sparse.csr_matrix:
    """L2-normalised TF-IDF rows (arms x vocabulary) of the arms' tokens, smooth idf."""
    vocabulary = {t: i for i, t in enumerate(sorted({t for tokens in arm_tokens for t in tokens}))}
    rows = [i for i, tokens in enumerate(arm_tokens) for t in tokens]
    cols = [vocabulary[t] for tokens in arm_tokens for t in tokens]
    counts = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(arm_tokens), len(vocabulary)))
    df = np.asarray((counts > 0).sum(axis=0)).ravel()
    idf = np.log((1 + len(arm_tokens)) / (1 + df)) + 1
    weighted = sparse.csr_matrix(counts.multiply(idf[None, :]))
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    return sparse.csr_matrix(sparse.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ weighted)


def _max_normalised(scores: FloatArray) -> FloatArray:
    """Each row divided by its largest absolute entry (rows of zeros stay zero)."""
    scale = np.abs(scores).max(axis=1, keepdims=True)
    return np.divide(scores, scale, out=np.zeros_like(scores), where=scale > 0)


@dataclass(frozen=True, eq=False)
class FittedRecommender:
    """A fitted model: answers a score vector over arms for a unit, or None for a cold start."""

    config: RecommenderConfig
    history: sparse.csr_matrix  # units x arms, 1 where the unit converted on the arm
    item_similarity: FloatArray  # arms x arms cosine of history columns
    arm_vectors: FloatArray  # arms x vocabulary, L2-normalised TF-IDF
    item_factors: FloatArray  # arms x rank, right singular vectors of the history
    segment_profiles: FloatArray  # segments x arms, shrunk rates divided by each row's maximum
    social: FloatArray | None = None  # units x arms LightGCN scores, when used (see social_evidence)
    social_evidence: SocialEvidence | None = None  # the test that decided, when the method uses the graph

    @cached_property
    def segment_scores(self) -> FloatArray:
        """The method's scores of each segment profile."""
        return self.score_profiles(self.segment_profiles)

    @cached_property
    def segment_separates(self) -> tuple[bool, ...]:
        """Whether each segment's scores differ between arms (else it is a cold start)."""
        return tuple(bool(x) for x in np.ptp(self.segment_scores, axis=1) > 0)

    @property
    def n_arms(self) -> int:
        return int(self.item_similarity.shape[0])

    def score_profiles(self, profiles: FloatArray, social: FloatArray | None = None) -> FloatArray:
        """The method's scores (rows x arms) of profile rows (rows x arms), with the rows' social
        scores (None: no unit behind the rows, as for a segment's profile)."""
        p = np.atleast_2d(np.asarray(profiles, dtype=float))
        method = self.config.method
        if method == "item_cf":
            return p @ self.item_similarity
        if method == "content":
            return self._content(p)
        if method == "svd":
            return (p @ self.item_factors) @ self.item_factors.T
        if method == "social":
            return np.zeros_like(p) if social is None else social
        cf, content = _max_normalised(p @ self.item_similarity), _max_normalised(self._content(p))
        mix = self.config.cf_weight * cf + self.config.content_weight * content
        if social is not None and self.config.social_weight > 0:
            mix = mix + self.config.social_weight * _max_normalised(social)
        return mix

    def _content(self, p: FloatArray) -> FloatArray:
        return _l2_normalised(p @ self.arm_vectors) @ self.arm_vectors.T

    def profiles(self, units: NDArray[np.intp], segments: NDArray[np.intp]) -> FloatArray:
        """Profile rows (history + segment profile); unit -1 has no history, segment -1 none."""
        units, segments = np.asarray(units, dtype=np.intp), np.asarray(segments, dtype=np.intp)
        out = np.zeros((units.size, self.n_arms))
        known = units >= 0
        if known.any():
            out[known] += self.history[units[known]].toarray()
        seg = segments >= 0
        if seg.any():
            out[seg] += self.segment_profiles[segments[seg]]
        return out

    def social_rows(self, units: NDArray[np.intp]) -> FloatArray | None:
        """The units' social scores (zeros for unit -1); None when the method uses none."""
        if self.social is None:
            return None
        units = np.asarray(units, dtype=np.intp)
        out = np.zeros((units.size, self.n_arms))
        known = units >= 0
        out[known] = self.social[units[known]]
        return out

    def scores_many(self, units: NDArray[np.intp], segments: NDArray[np.intp]) -> tuple[FloatArray, NDArray[np.bool_]]:
        """Scores (rows x arms) and whether each row is informative (False: cold start)."""
        profiles = self.profiles(units, segments)
        social = self.social_rows(units)
        scores = self.score_profiles(profiles, social)
        informative = np.abs(profiles).sum(axis=1) > 0
        if social is not None:
            informative |= np.abs(social).sum(axis=1) > 0
        return scores, informative & (np.ptp(scores, axis=1) > 0)

    def scores(self, unit: int | None, segment: int | None) -> FloatArray | None:
        """Scores over arms for one unit (row index in `history`, or None if it has no history)
        with its segment (None if unknown); None when nothing is known about it."""
        if unit is None:
            if segment is None:
                return None
            return self.segment_scores[segment] if self.segment_separates[segment] else None
        scores, informative = self.scores_many(np.array([unit]), np.array([-1 if segment is None else segment]))
        return scores[0] if informative[0] else None


def _l2_normalised(rows: FloatArray) -> FloatArray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def fit_recommender(
    interactions: Interactions, arm_tokens: Sequence[Sequence[str]], config: RecommenderConfig,
    rng: np.random.Generator, graph: SocialGraph | None = None,
) -> FittedRecommender:
    """Fit every part the method needs from the logged decisions (O(decisions + arms^2)) and,
    when it uses them, the social scores over `graph`, whose unit indices are the
    interactions' (O(layers x arms x (edges + units)))."""
    k = interactions.n_arms
    if len(arm_tokens) != k:
        raise ValueError(f"arm_tokens has {len(arm_tokens)} entries for {k} arms")
    conv = interactions.converted.astype(bool)
    history = sparse.csr_matrix(
        (np.ones(int(conv.sum())), (interactions.units[conv], interactions.arms[conv])),
        shape=(interactions.n_units, k),
    )
    history.sum_duplicates()
    history.data[:] = 1.0  # a unit converted on an arm or not, however often
    gram = (history.T @ history).toarray()
    norms = np.sqrt(np.diag(gram))
    similarity = np.divide(gram, np.outer(norms, norms), out=np.zeros_like(gram), where=np.outer(norms, norms) > 0)
    arm_vectors = tfidf(arm_tokens).toarray()
    factors = _item_factors(history, config.factors, rng) if config.method == "svd" else np.zeros((k, 0))
    evidence = social = None
    if config.uses_social:
        evidence = social_evidence(interactions.units, interactions.arms, conv, graph, k)
        social = social_scores(history, graph, config.layers) if evidence.predictive else None
    return FittedRecommender(config, history, similarity, arm_vectors, factors, _segment_profiles(interactions),
                             social, evidence)


def _item_factors(history: sparse.csr_matrix, factors: int, rng: np.random.Generator) -> FloatArray:
    """Right singular vectors (arms x rank) of the `rank` largest singular values of `history`."""
    rank = min(factors, min(history.shape) - 1)
    if rank < 1 or history.nnz == 0:
        return np.zeros((history.shape[1], 0))
    _, values, vt = svds(history, k=rank, rng=rng)
    return vt[values > 1e-12].T


def _segment_profiles(interactions: Interactions) -> FloatArray:
    """Shrunk conversion rates per (segment, arm), each row divided by its maximum."""
    s, k = interactions.n_segments, interactions.n_arms
    if s == 0:
        return np.zeros((0, k))
    known = interactions.segments >= 0
    cell = interactions.segments[known] * k + interactions.arms[known]
    counts = np.bincount(cell, minlength=s * k).reshape(s, k).astype(float)
    conversions = np.bincount(cell, interactions.converted[known].astype(float), minlength=s * k).reshape(s, k)
    rates = shrunk_means(conversions, counts, conversions).means
    return _max_normalised(rates)
