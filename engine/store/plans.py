"""Frozen plans and kept verdicts, one row per experiment phase (per metric for plans).

Both are written insert-if-absent: replicas reporting at the same moment all try, the first
row stands and every one of them reads it back, so a phase is frozen (or its verdict kept)
once, on SQLite and PostgreSQL alike. A new phase starts with neither.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Row, Table, select

from engine.db import insert_if_absent
from engine.tables import PLANS, VERDICTS


@dataclass(frozen=True)
class FrozenPlan:
    """The primary metric's planning baseline as the freeze observed it in the control, the
    planned units per arm it gave then (None if it admitted no plan) and each arm's units then."""

    experiment: str
    phase: int
    metric: str
    baseline: float
    baseline_sd: float | None
    n_per_arm: int | None
    version: int
    counts: dict[str, int]
    frozen_at: datetime


@dataclass(frozen=True)
class KeptVerdict:
    """A phase's final verdict and the primary metric's per-arm counts it was made on
    (`{arm, units, conversions, total}` each)."""

    experiment: str
    phase: int
    version: int
    metric: str
    status: str
    winner: str | None
    reason: str
    counts: list[dict[str, Any]]
    kept_at: datetime


def freeze_plan(conn: Connection, plan: FrozenPlan) -> FrozenPlan:
    """Store `plan` unless the phase's metric has one; the stored plan (this one or the first)."""
    return _first_stored(conn, PLANS, plan)


def read_plan(conn: Connection, key: str, phase: int, metric: str) -> FrozenPlan | None:
    p = PLANS.c
    return _record(FrozenPlan, conn.execute(select(PLANS).where(p.experiment == key, p.phase == phase,
                                                                p.metric == metric)).first())


def keep_verdict(conn: Connection, verdict: KeptVerdict) -> KeptVerdict:
    """Store `verdict` unless the phase has one; the stored verdict (this one or the first)."""
    return _first_stored(conn, VERDICTS, verdict)


def read_verdict(conn: Connection, key: str, phase: int) -> KeptVerdict | None:
    v = VERDICTS.c
    return _record(KeptVerdict, conn.execute(select(VERDICTS).where(v.experiment == key, v.phase == phase)).first())


Record = TypeVar("Record", FrozenPlan, KeptVerdict)


def _first_stored(conn: Connection, table: Table, record: Record) -> Record:
    values = asdict(record)
    values["counts_json"] = json.dumps(values.pop("counts"))
    insert_if_absent(conn, table, values)  # another writer's row may stand already: read it back
    found = conn.execute(select(table).where(*(c == values[c.name] for c in table.primary_key.columns))).first()
    stored = _record(type(record), found)
    assert stored is not None  # inserted above, or there before
    return stored


def _record(kind: type[Record], row: Row[Any] | None) -> Record | None:
    if row is None:
        return None
    values = dict(row._mapping)
    values["counts"] = json.loads(values.pop("counts_json"))
    return kind(**values)
