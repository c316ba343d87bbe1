from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from engine.assignment import arm_for_bucket, arms_for_buckets, bucket, bucket_ranges, buckets, fnv1a32

# Hash version 2 vectors [seed, value, expected] from GrowthBook's SDK test suite
# (growthbook/growthbook-python tests/cases.json, "hash" section, version 2 rows).
GROWTHBOOK_V2 = [
    ("seed", "a", 0.0505),
    ("seed", "b", 0.2696),
    ("foo", "ab", 0.2575),
    ("foo", "def", 0.2019),
    ("89123klj", "8952klfjas09ujkasdf", 0.124),
    ("90850943850283058242805", "123", 0.7516),
    ("()**(%$##$%#$#", '___)((*":&', 0.0128),
]

# Published FNV-1a 32-bit test values (Fowler/Noll/Vo reference test suite).
FNV1A32 = {"": 0x811C9DC5, "a": 0xE40C292C, "foobar": 0xBF9CF968}


def test_fnv1a32_reference_values() -> None:
    for text, expected in FNV1A32.items():
        assert fnv1a32(text) == expected


def test_growthbook_hash_v2_vectors() -> None:
    for seed, unit, expected in GROWTHBOOK_V2:
        assert bucket(seed, unit) == expected, (seed, unit)
        assert buckets(seed, [unit]).tolist() == [expected], (seed, unit)


@given(seed=st.text(max_size=10), units=st.lists(st.text(min_size=1, max_size=30), max_size=40))
def test_vectorised_buckets_equal_one_at_a_time(seed: str, units: list[str]) -> None:
    # Any text: non-ASCII, astral characters (two UTF-16 code units), digits-only hashes of any length.
    assert buckets(seed, units).tolist() == [bucket(seed, u) for u in units]


@given(weights=st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=6).filter(lambda w: sum(w) > 0),
       coverage=st.floats(min_value=0, max_value=1),
       points=st.lists(st.integers(min_value=0, max_value=9999), max_size=50))
def test_vectorised_arms_equal_one_at_a_time(weights: list[int], coverage: float, points: list[int]) -> None:
    ranges = bucket_ranges([w / sum(weights) for w in weights], coverage)
    b = np.array(points, dtype=float) / 10000
    expected = [arm_for_bucket(x, ranges) for x in b.tolist()]
    assert arms_for_buckets(b, ranges).tolist() == [-1 if a is None else a for a in expected]


def test_growthbook_bucket_ranges() -> None:
    # GrowthBook getBucketRanges cases: (weights, coverage) -> ranges.
    assert bucket_ranges([0.5, 0.5], 1.0) == [(0, 0.5), (0.5, 1.0)]
    assert bucket_ranges([0.5, 0.5], 0.5) == [(0, 0.25), (0.5, 0.75)]
    assert bucket_ranges([0.4, 0.6], 1.0) == [(0, 0.4), (0.4, 1.0)]
    ranges = bucket_ranges([0.2, 0.3, 0.5], 0.2)
    expected = [(0, 0.04), (0.2, 0.26), (0.5, 0.6)]
    for (a, b), (c, d) in zip(ranges, expected, strict=True):
        assert abs(a - c) < 1e-12 and abs(b - d) < 1e-12


def test_same_unit_same_bucket_across_processes_with_different_hash_seeds() -> None:
    code = "from engine.assignment import bucket; print(*(bucket('landing', f'user-{i}') for i in range(50)))"
    outputs = set()
    for hash_seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outputs.add(result.stdout)
    assert len(outputs) == 1
    here = " ".join(str(bucket("landing", f"user-{i}")) for i in range(50))
    assert outputs.pop().strip() == here


weights_st = st.lists(st.integers(min_value=0, max_value=100), min_size=2, max_size=6).filter(
    lambda w: sum(w) > 0
).map(lambda w: [x / sum(w) for x in w])


@given(
    weights=weights_st,
    low=st.floats(min_value=0, max_value=1),
    high=st.floats(min_value=0, max_value=1),
    unit=st.text(min_size=1, max_size=20),
)
def test_raising_coverage_only_adds_units(weights: list[float], low: float, high: float, unit: str) -> None:
    low, high = min(low, high), max(low, high)
    b = bucket("exp", unit)
    before = arm_for_bucket(b, bucket_ranges(weights, low))
    after = arm_for_bucket(b, bucket_ranges(weights, high))
    if before is not None:
        assert after == before


def test_split_follows_weights() -> None:
    ranges = bucket_ranges([0.2, 0.3, 0.5], 1.0)
    counts = [0, 0, 0]
    n = 20_000
    for i in range(n):
        arm = arm_for_bucket(bucket("split-check", f"u{i}"), ranges)
        assert arm is not None
        counts[arm] += 1
    # Binomial sd at n=20000 is < 0.0036; 5 sd tolerance.
    for c, w in zip(counts, [0.2, 0.3, 0.5], strict=True):
        assert abs(c / n - w) < 0.018


@given(a=st.text(max_size=15), b=st.text(max_size=15))
def test_fnv_continues_across_a_split_and_ascii_matches_utf16(a: str, b: str) -> None:
    assert fnv1a32(b, fnv1a32(a)) == fnv1a32(a + b)
    if (a + b).isascii():
        # the ASCII fast path and the UTF-16 path agree
        assert fnv1a32(a + b + "é") == fnv1a32(b + "é", fnv1a32(a))
