"""User segments: k-means on encoded context attributes (one row of features per decision).

Context attributes are mostly categorical (interest, device, plan), so the encoded rows
take few distinct values. We therefore run Lloyd's k-means on the *distinct* rows weighted
by how often each occurs: the objective (sum of squared distances of every row to its
centroid) and every Lloyd step are exactly those of k-means on all rows (MacQueen 1967;
Lloyd 1982), at a cost that grows with the distinct rows instead of the decisions.
Seeding is k-means++ (Arthur & Vassilvitskii 2007) with probabilities proportional to
multiplicity x squared distance, and nearest-centroid search is `scipy.cluster.vq.vq`.
When there are no more distinct rows than segments, each distinct row is its own segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.cluster.vq import vq

FloatArray = NDArray[np.float64]
MAX_ITERATIONS = 50


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Centroids of the segments in feature space; `assign` maps feature rows to segments."""

    centroids: FloatArray

    @property
    def count(self) -> int:
        return int(self.centroids.shape[0])

    def assign(self, features: FloatArray) -> NDArray[np.intp]:
        """The nearest centroid of every row (squared Euclidean distance)."""
        rows = np.atleast_2d(np.asarray(features, dtype=float))
        if rows.shape[1] != self.centroids.shape[1]:
            raise ValueError(f"features have {rows.shape[1]} columns, the segmentation {self.centroids.shape[1]}")
        return vq(rows, self.centroids, check_finite=False)[0].astype(np.intp)


def fit_segments(features: FloatArray, k: int, rng: np.random.Generator,
                 counts: NDArray[np.int64] | None = None) -> Segmentation:
    """k-means with `k` segments (fewer if there are fewer distinct rows) on `features` (rows x
    columns), row i standing for `counts[i]` identical rows (default 1)."""
    data = np.asarray(features, dtype=float)
    if data.ndim != 2 or data.shape[0] == 0:
        raise ValueError("features must be a non-empty (rows, columns) array")
    if not np.all(np.isfinite(data)):
        raise ValueError("features must be finite")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    multiplicity = np.ones(len(data)) if counts is None else np.asarray(counts, dtype=float)
    if multiplicity.shape != (len(data),) or np.any(multiplicity <= 0):
        raise ValueError("counts must give a positive count per row")
    points, inverse = np.unique(data, axis=0, return_inverse=True)
    if len(points) <= k:
        return Segmentation(points)
    weights = np.bincount(inverse.ravel(), multiplicity, minlength=len(points))
    centroids = _seed_plus_plus(points, weights, k, rng)
    labels = np.full(len(points), -1)
    m = len(centroids)
    for _ in range(MAX_ITERATIONS):
        new_labels, _ = vq(points, centroids, check_finite=False)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        mass = np.bincount(labels, weights, minlength=m)
        sums = np.stack([np.bincount(labels, weights * points[:, j], minlength=m) for j in range(points.shape[1])], 1)
        filled = mass > 0
        centroids = np.where(filled[:, None], sums / np.where(filled, mass, 1.0)[:, None], centroids)
    used = np.unique(labels)  # a centroid that lost every point is dropped
    return Segmentation(centroids[used])


def _seed_plus_plus(points: FloatArray, weights: FloatArray, k: int, rng: np.random.Generator) -> FloatArray:
    """k-means++ seeding over weighted distinct points (never picks a point twice)."""
    chosen = [int(rng.choice(len(points), p=weights / weights.sum()))]
    nearest = ((points - points[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(1, k):
        mass = weights * nearest
        total = mass.sum()
        if not total > 0:
            break
        chosen.append(int(rng.choice(len(points), p=mass / total)))
        nearest = np.minimum(nearest, ((points - points[chosen[-1]]) ** 2).sum(axis=1))
    return points[chosen].copy()
