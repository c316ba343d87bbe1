"""`report --by ATTR`: the primary metric per level of a unit attribute, marked exploratory.

A unit's level comes from its first exposure in the phase: the arm's channel for `channel`,
otherwise the attribute in that decision's context (`decisions.context_json`); units whose
context lacks it form the level `(missing)`. The comparisons and the Benjamini–Hochberg
adjustment across levels are `policies.stats.breakdown`'s. A breakdown is added beside the
verdict and never read by it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from engine.spec import AnalysisUnit, ExperimentSpec, Metric
from engine.store import Store
from engine.store.units import UnitRecord
from policies.stats.breakdown import breakdown, to_dict
from policies.sufficient import ArmStats, BinaryStats, MeanStats

CHANNEL = "channel"
MISSING = "(missing)"


class UnknownAttributeError(ValueError):
    """`--by` names an attribute no unit of the experiment carries."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def _level_name(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))  # numbers, bools, lists: as in JSON


def _context(record: UnitRecord) -> dict[str, Any]:
    context = json.loads(record.context_json) if record.context_json else {}
    return context if isinstance(context, dict) else {}


def _levels(records: Sequence[UnitRecord], contexts: Sequence[dict[str, Any]], by: str) -> list[str]:
    if by == CHANNEL:
        return [r.channel for r in records]
    return [MISSING if c.get(by) is None else _level_name(c[by]) for c in contexts]


def _stats(metric: Metric, rows: list[tuple[UnitRecord, float]]) -> ArmStats:
    if not metric.revenue:
        return BinaryStats(len(rows), sum(1 for r, _ in rows if r.converted))
    values = [r.value - cost * r.decisions if metric.net else r.value for r, cost in rows]
    return MeanStats(len(values), sum(values), sum(v * v for v in values))


def breakdown_section(store: Store, spec: ExperimentSpec, by: str, costs: Sequence[float]) -> dict[str, Any]:
    """The `breakdown` entry of the report for the primary metric by attribute `by`."""
    metric = spec.primary
    records = store.unit_records(spec.key, spec.traffic.phase, metric.name,
                                 spec.analysis_unit is AnalysisUnit.USER)
    contexts = [] if by == CHANNEL else [_context(r) for r in records]
    if by != CHANNEL and not any(by in c for c in contexts):
        known = sorted(set().union(*contexts))
        raise UnknownAttributeError(
            f"{by!r}: no unit of {spec.key!r} has that attribute in the context of its first exposure",
            f"use {CHANNEL}" + (f" or one of: {', '.join(known[:20])}" if known
                                else " (its decisions carry no context)"))
    arms = spec.arm_keys
    index = {a: i for i, a in enumerate(arms)}
    cost_of = dict(zip(arms, costs, strict=True))
    grouped: dict[str, list[list[tuple[UnitRecord, float]]]] = {}
    for record, level in zip(records, _levels(records, contexts, by), strict=True):
        if record.arm in index:  # an arm since removed from the declaration is not compared
            grouped.setdefault(level, [[] for _ in arms])[index[record.arm]].append((record, cost_of[record.arm]))
    levels = {level: [_stats(metric, rows) for rows in per_arm] for level, per_arm in grouped.items()}
    result = breakdown(arms, levels, spec.control)
    return {"by": by, "exploratory": True, "metric": metric.name, **to_dict(result)}
