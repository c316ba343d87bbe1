"""Social graphs over a drawn population, with homophily (the chance an edge stays in a segment).

`draw_graph` draws `round(users * degree / 2)` undirected edges, so the mean degree is about
`degree`. Each edge's source is a user drawn uniformly; with probability `homophily` (h) its
target is drawn uniformly among the *other* users of the source's latent segment, otherwise
uniformly among all other users. So h = 0 is a random graph (Erdős–Rényi-like: segments meet
in proportion to their shares) and h = 1 joins users of one segment only; the expected share
of edges within a segment is h + (1 - h) * sum_z share_z^2: the mixing of a planted-partition
(stochastic block) model. Homophily is why friends' conversions predict one's own (McPherson,
Smith-Lovin & Cook 2001, "Birds of a feather: homophily in social networks"). A pair drawn
twice is kept once; a user alone in its segment gets a random target.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from policies.targeting.social import SocialGraph


def draw_graph(segments: NDArray[np.intp], degree: float, homophily: float, rng: np.random.Generator) -> SocialGraph:
    """An undirected graph over the users of `segments` (their latent segment each), weight 1."""
    n = len(segments)
    if n < 2:
        raise ValueError("a graph needs at least 2 users")
    if not (math.isfinite(degree) and 0 < degree < n):
        raise ValueError(f"degree must be in (0, users), got {degree!r}")
    if not (math.isfinite(homophily) and 0 <= homophily <= 1):
        raise ValueError(f"homophily must be in [0, 1], got {homophily!r}")
    segments = np.asarray(segments, dtype=np.intp)
    m = max(1, round(n * degree / 2))
    sources = rng.integers(n, size=m)
    targets = _other_user(sources, n, rng)
    order = np.argsort(segments, kind="stable")
    sizes = np.bincount(segments)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(n, dtype=np.intp)  # each user's position within its segment's block of `order`
    rank[order] = np.arange(n) - starts[segments[order]]
    own = segments[sources]
    within = (rng.random(m) < homophily) & (sizes[own] > 1)
    j = np.floor(rng.random(m) * (sizes[own] - 1)).astype(np.intp)
    j = j + (j >= rank[sources])  # skip the source itself
    targets = np.where(within, order[starts[own] + np.minimum(j, sizes[own] - 1)], targets)
    low, high = np.minimum(sources, targets), np.maximum(sources, targets)
    pairs = np.unique(low * n + high)
    return SocialGraph(pairs // n, pairs % n, np.ones(pairs.size), np.zeros(pairs.size, dtype=bool), n)


def _other_user(sources: NDArray[np.intp], n: int, rng: np.random.Generator) -> NDArray[np.intp]:
    """A user drawn uniformly among the n - 1 others, per source."""
    j = rng.integers(n - 1, size=sources.size)
    return j + (j >= sources)


def same_segment_share(graph: SocialGraph, segments: NDArray[np.intp]) -> float:
    """The share of edges whose two ends are in one segment."""
    return float(np.mean(segments[graph.sources] == segments[graph.targets])) if graph.size else 0.0
