"""Deterministic bucketing, compatible with GrowthBook's SDKs (hash version 2).

A unit's bucket is `fnv1a32(str(fnv1a32(seed + unit))) % 10000 / 10000`, exactly as
GrowthBook's `hash(seed, value, 2)`; arms own the ranges `[start, start + coverage * weight)`
laid end to end by declared weight (GrowthBook `getBucketRanges`), so raising coverage only
adds units and never moves one. Nothing here depends on the process: no `hash()`, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

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


def buckets(seed: str, units: Sequence[str]) -> NDArray[np.float64]:
    """`bucket(seed, u)` for every unit at once, bit for bit, in numpy (for batch decisions)."""
    first = _fnv1a32_columns(_utf16_matrix(units), _seed_state(seed))
    # str(first) has 1 to 10 decimal digits; hash them from the most significant one.
    second = np.full(first.shape, _FNV_OFFSET, dtype=np.uint32)
    for power in range(9, -1, -1):
        digit = (first // np.uint32(10**power)) % np.uint32(10) + np.uint32(ord("0"))
        present = first >= 10**power if power else np.ones(first.shape, dtype=bool)
        second = np.where(present, (second ^ digit) * np.uint32(_FNV_PRIME), second)
    return (second % np.uint32(10000)).astype(np.float64) / 10000


def _utf16_matrix(texts: Sequence[str]) -> tuple[NDArray[np.uint16], NDArray[np.bool_]]:
    """The UTF-16 code units of each text, one row each, and which entries are real (not padding)."""
    joined = "".join(texts)
    if joined.isascii():  # one code unit per character: encode everything at once
        lengths = np.fromiter(map(len, texts), dtype=np.intp, count=len(texts))
        flat = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    else:
        encoded = [t.encode("utf-16-le") for t in texts]
        lengths = np.fromiter((len(e) // 2 for e in encoded), dtype=np.intp, count=len(encoded))
        flat = np.frombuffer(b"".join(encoded), dtype="<u2")
    present = np.arange(int(lengths.max(initial=0)))[None, :] < lengths[:, None]
    codes = np.zeros(present.shape, dtype=np.uint16)
    codes[present] = flat
    return codes, present


def _fnv1a32_columns(matrix: tuple[NDArray[np.uint16], NDArray[np.bool_]], start: int) -> NDArray[np.uint32]:
    """FNV-1a of every row of `_utf16_matrix`, a column at a time (uint32 arithmetic wraps)."""
    codes, present = matrix
    h = np.full(codes.shape[0], start, dtype=np.uint32)
    for j in range(codes.shape[1]):
        h = np.where(present[:, j], (h ^ codes[:, j]) * np.uint32(_FNV_PRIME), h)
    return h


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


def arms_for_buckets(b: NDArray[np.float64], ranges: Sequence[tuple[float, float]]) -> NDArray[np.intp]:
    """`arm_for_bucket` for every bucket at once, with -1 for None."""
    out = np.full(b.shape, -1, dtype=np.intp)
    for i, (start, end) in reversed(list(enumerate(ranges))):  # the first matching range wins
        out[(start <= b) & (b < end)] = i
    return out
