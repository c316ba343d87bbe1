"""Deterministic bucketing, compatible with GrowthBook's SDKs (hash version 2).

A unit's bucket is `fnv1a32(str(fnv1a32(seed + unit))) % 10000 / 10000`, exactly as
GrowthBook's `hash(seed, value, 2)`; arms own the ranges `[start, start + coverage * weight)`
laid end to end by declared weight (GrowthBook `getBucketRanges`), so raising coverage only
adds units and never moves one. Nothing here depends on the process: no `hash()`, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a32(text: str, start: int = _FNV_OFFSET) -> int:
    """32-bit FNV-1a over UTF-16 code units, as JavaScript's `charCodeAt` sees the string.

    `start` continues a hash: `fnv1a32(b, fnv1a32(a)) == fnv1a32(a + b)`.
    """
    h = start
    if text.isascii():  # one code unit per byte: the common case, twice as fast
        for unit in text.encode():
            h = ((h ^ unit) * _FNV_PRIME) & 0xFFFFFFFF
        return h
    data = text.encode("utf-16-le")
    for i in range(0, len(data), 2):
        h = ((h ^ (data[i] | (data[i + 1] << 8))) * _FNV_PRIME) & 0xFFFFFFFF
    return h


@lru_cache(maxsize=1024)
def _seed_state(seed: str) -> int:
    return fnv1a32(seed)


def bucket(seed: str, unit: str) -> float:
    """GrowthBook hash v2: a number in [0, 1) with four decimals of resolution."""
    return fnv1a32(str(fnv1a32(unit, _seed_state(seed)))) % 10000 / 10000


def bucket_ranges(weights: Sequence[float], coverage: float) -> list[tuple[float, float]]:
    """Each arm's bucket range: arm i starts where the weights before it end."""
    coverage = min(max(coverage, 0.0), 1.0)
    ranges = []
    start = 0.0
    for w in weights:
        ranges.append((start, start + coverage * w))
        start += w
    return ranges


def arm_for_bucket(b: float, ranges: Sequence[tuple[float, float]]) -> int | None:
    """Index of the arm whose range holds bucket `b`, or None when `b` is outside coverage."""
    for i, (start, end) in enumerate(ranges):
        if start <= b < end:
            return i
    return None
