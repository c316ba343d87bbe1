"""Breakdowns: each variant against the control within each level of an attribute (exploratory).

Within a level the tests are the report's fixed-horizon ones: the two-proportion z-test
at every sample size for a binary metric, Welch's t-test for
revenue. The p-values of every level and variant are adjusted together with Benjamini–Hochberg
(1995), `statsmodels.stats.multitest.multipletests(method="fdr_bh")`, so the expected share of
false findings among the cells called significant stays at most alpha. A breakdown is for
exploration: it never enters the verdict, which is made on the whole experiment.

Levels are ordered by units, largest first; beyond `max_levels` the smallest ones are pooled
into one level named `OTHER`, so the number of levels shown is at most `max_levels`. A level
in which an arm has fewer than `min_units` units gets no test (its note says why).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from operator import add
from typing import Any

from policies.stats.analysis import MIN_EXPOSURES
from policies.stats.corrections import adjust_p_values
from policies.stats.frequentist import two_proportion_test, welch_test
from policies.sufficient import ArmStats, BinaryStats, MeanStats

OTHER = "(other)"
MAX_LEVELS = 10


@dataclass(frozen=True, slots=True)
class LevelArm:
    """One arm within a level; `rate` is the mean for revenue."""

    arm: str
    units: int
    rate: float | None
    lift: float | None
    p_value: float | None
    p_value_adjusted: float | None


@dataclass(frozen=True, slots=True)
class Level:
    level: str
    units: int
    arms: tuple[LevelArm, ...]
    note: str | None


@dataclass(frozen=True, slots=True)
class Breakdown:
    levels: tuple[Level, ...]
    correction: str
    min_units_per_arm: int
    max_levels: int


def _mean(stats: ArmStats) -> float | None:
    return stats.rate if isinstance(stats, BinaryStats) else stats.mean


def _lift(mean: float | None, base: float | None) -> float | None:
    return None if mean is None or not base else mean / base - 1.0


def _test(treatment: ArmStats, control: ArmStats) -> float | None:
    if isinstance(treatment, BinaryStats) and isinstance(control, BinaryStats):
        p = two_proportion_test(treatment, control).p_value
    elif isinstance(treatment, MeanStats) and isinstance(control, MeanStats):
        p = welch_test(treatment, control).p_value
    else:
        raise ValueError("every arm of a breakdown must hold the same kind of statistics")
    return p if p is not None and math.isfinite(p) else None


def _capped(levels: Mapping[str, Sequence[ArmStats]], max_levels: int) -> list[tuple[str, Sequence[ArmStats]]]:
    ordered = sorted(levels.items(), key=lambda kv: (-sum(s.n for s in kv[1]), kv[0]))
    if len(ordered) <= max_levels:
        return ordered
    kept, rest = ordered[: max_levels - 1], ordered[max_levels - 1:]
    pooled = [reduce(add, column) for column in zip(*(stats for _, stats in rest), strict=True)]
    return [*kept, (OTHER, pooled)]


def breakdown(arms: Sequence[str], levels: Mapping[str, Sequence[ArmStats]], control: str, *,
              min_units: int = MIN_EXPOSURES, max_levels: int = MAX_LEVELS) -> Breakdown:
    """Per-level comparisons with the control (rules in the module doc). `levels` maps a level
    to its per-arm stats, in the order of `arms`."""
    names = list(arms)
    if control not in names:
        raise ValueError(f"control {control!r} is not one of the arms")
    if max_levels < 2 or min_units < 2:
        raise ValueError("max_levels and min_units must be >= 2")
    c = names.index(control)
    shown = _capped(levels, max_levels)
    raw: dict[tuple[int, int], float] = {}
    notes: list[str | None] = []
    for li, (_, stats) in enumerate(shown):
        if len(stats) != len(names):
            raise ValueError("each level needs one stats entry per arm")
        small = [names[i] for i, s in enumerate(stats) if s.n < min_units]
        notes.append(f"too few units: {', '.join(small)} below {min_units}" if small else None)
        if small:
            continue
        for i, s in enumerate(stats):
            if i != c and (p := _test(s, stats[c])) is not None:
                raw[(li, i)] = p
    adjusted = dict(zip(raw, (float(p) for p in adjust_p_values(list(raw.values()), "bh")), strict=True))
    out = []
    for li, ((level, stats), note) in enumerate(zip(shown, notes, strict=True)):
        base = _mean(stats[c])
        rows = tuple(LevelArm(names[i], s.n, _mean(s), None if i == c else _lift(_mean(s), base),
                              raw.get((li, i)), adjusted.get((li, i)))
                     for i, s in enumerate(stats))
        out.append(Level(level, sum(s.n for s in stats), rows, note))
    return Breakdown(tuple(out), "benjamini_hochberg", min_units, max_levels)


def to_dict(result: Breakdown) -> dict[str, Any]:
    """JSON-able form (snake_case; None for fields that do not apply)."""
    return {"correction": result.correction, "min_units_per_arm": result.min_units_per_arm,
            "max_levels": result.max_levels,
            "levels": [{"level": lv.level, "units": lv.units, "note": lv.note,
                        "arms": [{"arm": a.arm, "units": a.units, "rate": a.rate, "lift": a.lift,
                                  "p_value": a.p_value, "p_value_adjusted": a.p_value_adjusted} for a in lv.arms]}
                       for lv in result.levels]}
