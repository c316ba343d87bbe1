"""Social scores: LightGCN-style propagation over the social graph joined with the conversions.

He, Deng, Wang, Li, Zhang & Wang 2020, "LightGCN: Simplifying and Powering Graph Convolution
Network for Recommendation" (SIGIR): embeddings are propagated over the symmetric-normalised
adjacency with no learned transforms and no nonlinearity, a node's final embedding is the
mean of its layers 0..L, and the score of (unit u, arm a) is the inner product e_u . e_a.

The graph here has one node per unit (0..n-1) and one per arm (n..n+k-1). Its adjacency A
holds the social edges between units, weighted (an undirected edge both ways; a directed one
s -> t in row s only: s reads t, as a follower reads whom they follow), and an edge of weight
1 between a unit and every arm it converted on, both ways. Normalisation:

    Â = D_out^-1/2 A D_in^-1/2        (LightGCN's D^-1/2 A D^-1/2 when A is symmetric)

with D_out, D_in the row and column sums (weighted degrees; 0 for a node with no edge).

Nothing is trained: layer-0 embeddings are one-hot (E0 = I), so the layer mean is the matrix
M = (1 / (L + 1)) * sum_{l=0..L} Â^l, e_u is row u of M and, on an undirected graph (Â
symmetric), the scores e_u . e_a are (M M)[u, a]. With directed edges the arm's embedding is
taken along reversed edges (column a of M: what reaches a), so that the score (M M)[u, a]
still counts paths *from* u to a: a follower scores what the followed converted on, never the
other way round. Only the arms' columns are needed: Y = M (M X) with X the (n + k) x k
indicator of the arm nodes, i.e. 2L sparse products with k columns, so time and memory are
linear in the number of edges, O(L k (edges + units)). A parameter-free LightGCN is a fixed
low-pass graph filter (Shen et al. 2021, "How powerful is graph convolution for
recommendation?", CIKM).

What a score sums, for L = 2 (paths from u to a of length 1 to 4, weighted by how many ways
the two layer means meet): u's own conversions on a, its neighbours' conversions on a, then
those of neighbours of neighbours and of units that converted like u or like its neighbours.
A unit with no conversion of its own but with neighbours who converted on arm c thus scores c
highest: the social cold start.

Whether to trust them (`social_evidence`). Following friends pays only if friends convert
alike (homophily); on a graph without it, the scores steer units to whatever their friends
were shown, and lose to the bandit. Conversions alone cannot tell: a policy that follows
friends makes friends convert alike. So the check conditions on what each unit was shown.
Among logged decisions (in the order made), a decision of unit u on arm a is *exposed to
the signal* when a neighbour of u (a unit u reads) converted on a in an earlier decision.
If neighbours' conversions carry no information about u, the signal is independent of u's
outcome given the arm and the time, whatever the policy did. The Cochran–Mantel–Haenszel
test (Cochran 1954; Mantel & Haenszel 1959) of conversion against the signal, stratified by
arm and by tenth of the log (conversion rates drift as the policy learns), gives z; the
social scores are used only when z > SOCIAL_Z (one-sided, alpha = 0.05). Until then a unit
known only through the graph is a cold start. O(arms x edges + decisions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import sparse
from scipy.stats import norm

FloatArray = NDArray[np.float64]
DEFAULT_LAYERS = 2
MAX_LAYERS = 8
SOCIAL_ALPHA = 0.05
SOCIAL_Z = float(norm.isf(SOCIAL_ALPHA))
TIME_STRATA = 10


def check_layers(layers: int) -> int:
    if isinstance(layers, bool) or not isinstance(layers, int | np.integer) or not 1 <= layers <= MAX_LAYERS:
        raise ValueError(f"layers must be an integer in [1, {MAX_LAYERS}], got {layers!r}")
    return int(layers)


@dataclass(frozen=True, eq=False)
class SocialGraph:
    """Edges between units (indices in [0, n_units)), one entry per edge: source, target, a
    finite weight > 0, and whether the edge is directed (source reads target) or not.
    Repeated pairs add up (a follow and a share between the same two units weigh both)."""

    sources: NDArray[np.intp]
    targets: NDArray[np.intp]
    weights: FloatArray
    directed: NDArray[np.bool_]
    n_units: int

    def __post_init__(self) -> None:
        size = len(self.sources)
        if not (len(self.targets) == len(self.weights) == len(self.directed) == size):
            raise ValueError("sources, targets, weights and directed must have one entry per edge")
        if self.n_units < 0:
            raise ValueError("n_units must be >= 0")
        if size and (min(self.sources.min(), self.targets.min()) < 0
                     or max(self.sources.max(), self.targets.max()) >= self.n_units):
            raise ValueError("unit indices must lie in [0, n_units)")
        if size and not (np.all(np.isfinite(self.weights)) and self.weights.min() > 0):
            raise ValueError("edge weights must be finite and > 0")

    @property
    def size(self) -> int:
        return len(self.sources)

    def adjacency(self) -> sparse.csr_matrix:
        """The units x units adjacency: row s reads column t (both ways for an undirected edge)."""
        both = ~np.asarray(self.directed, dtype=bool)
        rows = np.concatenate([self.sources, self.targets[both]])
        cols = np.concatenate([self.targets, self.sources[both]])
        data = np.concatenate([self.weights, self.weights[both]]).astype(float)
        return sparse.csr_matrix((data, (rows, cols)), shape=(self.n_units, self.n_units))


def empty_graph(n_units: int) -> SocialGraph:
    return SocialGraph(np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp), np.zeros(0), np.zeros(0, dtype=bool),
                       n_units)


def normalised_adjacency(social: sparse.csr_matrix, history: sparse.csr_matrix) -> sparse.csr_matrix:
    """Â = D_out^-1/2 A D_in^-1/2 of the joint graph A = [[social, history], [historyᵀ, 0]]."""
    joint = sparse.bmat([[social, history], [history.T, None]], format="csr")
    out_degree = np.asarray(joint.sum(axis=1)).ravel()
    in_degree = np.asarray(joint.sum(axis=0)).ravel()
    return sparse.csr_matrix(sparse.diags(_inverse_sqrt(out_degree)) @ joint @ sparse.diags(_inverse_sqrt(in_degree)))


def _inverse_sqrt(degree: FloatArray) -> FloatArray:
    return np.divide(1.0, np.sqrt(degree), out=np.zeros_like(degree), where=degree > 0)


def layer_mean(matrix: sparse.csr_matrix, x: FloatArray, layers: int) -> FloatArray:
    """(1 / (L + 1)) * sum_{l=0..L} matrix^l x, by L sparse products."""
    total, current = x.copy(), x
    for _ in range(layers):
        current = matrix @ current
        total += current
    return total / (layers + 1)


def social_scores(history: sparse.csr_matrix, graph: SocialGraph | None, layers: int = DEFAULT_LAYERS) -> FloatArray:
    """LightGCN scores (units x arms) from the units x arms conversion matrix `history` (1 where
    the unit converted on the arm) and the social graph over the same units (module doc)."""
    check_layers(layers)
    n, k = history.shape
    graph = graph if graph is not None else empty_graph(n)
    if graph.n_units != n:
        raise ValueError(f"the graph has {graph.n_units} units, the history {n}")
    a_hat = normalised_adjacency(graph.adjacency(), sparse.csr_matrix(history, dtype=float))
    arms = np.zeros((n + k, k))
    arms[n + np.arange(k), np.arange(k)] = 1.0
    return layer_mean(a_hat, layer_mean(a_hat, arms, layers), layers)[:n]


def lightgcn_dense(history: FloatArray, social: FloatArray, layers: int = DEFAULT_LAYERS) -> FloatArray:
    """The same scores by dense matrices, straight from the definition (M M restricted to
    units x arms): a reference for tests and the benchmark's peer, O((n + k)^3)."""
    n, k = history.shape
    joint = np.block([[social, history], [history.T, np.zeros((k, k))]])
    a_hat = _inverse_sqrt(joint.sum(axis=1))[:, None] * joint * _inverse_sqrt(joint.sum(axis=0))[None, :]
    m = sum(np.linalg.matrix_power(a_hat, layer) for layer in range(layers + 1)) / (layers + 1)
    return (m @ m)[:n, n:]



@dataclass(frozen=True)
class SocialEvidence:
    """The CMH test of whether a neighbour's earlier conversion on the arm shown predicts
    conversion (module doc): `z` (0 without data), the Mantel–Haenszel pooled odds ratio
    (nan without data) and how many decisions carried the signal."""

    z: float
    odds_ratio: float
    exposed: int

    @property
    def predictive(self) -> bool:
        return self.z > SOCIAL_Z


def signal_exposure(units: NDArray[np.intp], arms: NDArray[np.intp], converted: NDArray[np.bool_],
                    graph: SocialGraph, n_arms: int) -> NDArray[np.bool_]:
    """Per decision (rows in the order made): whether a neighbour of its unit converted on its
    arm in an earlier decision. Per arm, only edges towards that arm's converters are visited."""
    adjacency = graph.adjacency()
    adjacency.sum_duplicates()
    readers = np.repeat(np.arange(graph.n_units), np.diff(adjacency.indptr))  # row of each stored edge
    order = np.arange(len(units))
    exposed = np.zeros(len(units), dtype=bool)
    for arm in range(n_arms):
        won = converted & (arms == arm)
        if not won.any():
            continue
        first = np.full(graph.n_units, np.inf)
        np.minimum.at(first, units[won], order[won])  # each unit's first conversion on the arm
        towards = np.isfinite(first[adjacency.indices])
        earliest = np.full(graph.n_units, np.inf)  # each reader's earliest neighbour conversion
        np.minimum.at(earliest, readers[towards], first[adjacency.indices[towards]])
        shown = arms == arm
        exposed[shown] = earliest[units[shown]] < order[shown]
    return exposed


def social_evidence(units: NDArray[np.intp], arms: NDArray[np.intp], converted: NDArray[np.bool_],
                    graph: SocialGraph | None, n_arms: int) -> SocialEvidence:
    """The stratified test of the module doc on logged decisions (rows in the order made)."""
    if graph is None or not len(units) or not graph.size:
        return SocialEvidence(0.0, math.nan, 0)
    signal = signal_exposure(units, arms, converted, graph, n_arms)
    strata = arms * TIME_STRATA + (np.arange(len(units)) * TIME_STRATA) // len(units)
    size = n_arms * TIME_STRATA

    def count(mask: NDArray[np.bool_]) -> FloatArray:
        return np.bincount(strata[mask], minlength=size).astype(float)

    n = count(np.ones(len(units), dtype=bool))
    exposed, wins = count(signal), count(converted)
    both = count(signal & converted)
    used = n > 1
    n, exposed, wins, both = n[used], exposed[used], wins[used], both[used]
    # CMH: sum of (observed - expected) exposed conversions over the hypergeometric variance.
    variance = (exposed * (n - exposed) * wins * (n - wins) / (n * n * (n - 1))).sum()
    z = float((both - exposed * wins / n).sum() / math.sqrt(variance)) if variance > 0 else 0.0
    numerator = (both * (n - exposed - wins + both) / n).sum()  # a d / n per stratum
    denominator = ((exposed - both) * (wins - both) / n).sum()  # b c / n
    odds = float(numerator / denominator) if denominator > 0 else math.nan
    return SocialEvidence(z, odds, int(signal.sum()))
