"""Unit-level reads for breakdowns: each analysis unit's first exposure and its metric value.

Unlike the report's per-arm sums (O(arms)), these read every unit of a phase once: a
breakdown is asked for, not part of every report.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from sqlalchemy import Connection, select

from engine.tables import DECISIONS, UNIT_VALUES, UNITS


class UnitRecord(NamedTuple):
    """An analysis unit: its arm, the channel and context of its first exposure, its decisions
    in that arm, and the metric's counted value (0 and not converted when it has none)."""

    arm: str
    channel: str
    context_json: str | None
    decisions: int
    converted: bool
    value: float


def unit_records(conn: Connection, key: str, phase: int, metric: str, per_user: bool) -> Iterator[UnitRecord]:
    """Every analysis unit of the phase (per user: the units with a first exposure; otherwise
    each decision), with its value of `metric`."""
    v = UNIT_VALUES.c
    values = {unit: (bool(converted), value) for unit, converted, value in conn.execute(
        select(v.unit, v.converted, v.value).where(v.experiment == key, v.phase == phase, v.metric == metric))}
    d = DECISIONS.c
    if not per_user:
        for decision_id, arm, channel, context_json in conn.execute(
                select(d.decision_id, d.arm, d.channel, d.context_json).where(d.experiment == key, d.phase == phase)):
            yield UnitRecord(arm, channel, context_json, 1, *values.get(decision_id, (False, 0.0)))
        return
    u = UNITS.c
    counted = {unit: decisions for unit, decisions in conn.execute(
        select(u.unit, u.decisions).where(u.experiment == key, u.phase == phase))}
    previous = None
    for unit, arm, channel, context_json in conn.execute(
            select(d.unit, d.arm, d.channel, d.context_json).where(d.experiment == key, d.phase == phase)
            .order_by(d.unit, d.ts, d.decision_id)):
        if unit == previous or unit not in counted:
            continue  # a later decision of the unit, or one the ledger has not counted yet
        previous = unit
        yield UnitRecord(arm, channel, context_json, counted[unit], *values.get(unit, (False, 0.0)))
