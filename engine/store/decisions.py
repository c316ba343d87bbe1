"""Logged decisions (exposures), sticky assignments, and the reads that learn from them.

An exposure is its `decisions` row; fresh decision ids are unique, so a batch goes in with
one bulk insert, while a batch replayed from a spool inserts only the ids not stored yet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from itertools import chain
from typing import Any, NamedTuple, overload

import numpy as np
from sqlalchemy import Connection, Select, bindparam, case, func, select
from sqlalchemy.exc import IntegrityError

from engine.db import insert_columns, insert_if_absent, member_of
from engine.events import utcnow
from engine.store.aggregates import Deltas
from engine.store.experiments import specs_of_versions
from engine.store.ledger import Ledger, unit_covariate
from engine.tables import ASSIGNMENTS, DECISIONS

_DECISION_STATE = tuple(DECISIONS.c[c] for c in ("decision_id", "experiment", "phase", "arm", "converted", "value",
                                                  "unit", "ts", "propensity"))

_ASSIGNMENT = select(ASSIGNMENTS.c.arm, ASSIGNMENTS.c.propensity).where(
    ASSIGNMENTS.c.experiment == bindparam("experiment"), ASSIGNMENTS.c.phase == bindparam("phase"),
    ASSIGNMENTS.c.unit == bindparam("unit"),
)


@lru_cache(maxsize=4)
def decisions_in(dialect: str) -> Select[Any]:
    # A fixed lock order: two transactions locking overlapping decisions cannot deadlock.
    return (select(*_DECISION_STATE).where(member_of(DECISIONS.c.decision_id, "ids", dialect))
            .order_by(DECISIONS.c.decision_id).with_for_update())


class Exposure(NamedTuple):
    """A decision to log; its fields are the columns of its `decisions` row."""

    decision_id: str
    experiment: str
    version: int
    phase: int
    unit: str
    arm: str
    channel: str
    bucket: float | None
    propensity: float | None
    reason: str
    ts: datetime
    context_json: str | None = None
    converted: bool = False
    value: float = 0.0


assert sorted(Exposure._fields) == sorted(c.name for c in DECISIONS.columns)


class ExposureBatch(Sequence[Exposure]):
    """Exposures column by column: what a batch of decisions logs, buffered and written as one
    block, with no object per row. Indexing gives an `Exposure`; slicing, a batch."""

    __slots__ = ("columns",)

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        """`columns`: every field of `Exposure`, in its order, as lists of one length."""
        self.columns = columns

    @classmethod
    def of(cls, exposures: Iterable[Exposure]) -> ExposureBatch:
        rows = list(exposures)
        return cls({f: [r[i] for r in rows] for i, f in enumerate(Exposure._fields)})

    @classmethod
    def concat(cls, batches: Sequence[ExposureBatch]) -> ExposureBatch:
        if len(batches) == 1:
            return batches[0]
        return cls({f: list(chain.from_iterable(b.columns[f] for b in batches)) for f in Exposure._fields})

    def __len__(self) -> int:
        return len(self.columns["decision_id"])

    @overload
    def __getitem__(self, index: int) -> Exposure: ...

    @overload
    def __getitem__(self, index: slice) -> ExposureBatch: ...

    def __getitem__(self, index: int | slice) -> Exposure | ExposureBatch:
        if isinstance(index, slice):
            return ExposureBatch({f: c[index] for f, c in self.columns.items()})
        return Exposure(*(c[index] for c in self.columns.values()))

    def take(self, positions: Sequence[int]) -> ExposureBatch:
        return ExposureBatch({f: [c[i] for i in positions] for f, c in self.columns.items()})


def insert_exposures(conn: Connection, exposures: Sequence[Exposure]) -> int:
    """Insert exposures and bump their arms' counts; returns how many were new."""
    batch = exposures if isinstance(exposures, ExposureBatch) else ExposureBatch.of(exposures)
    new = batch if _bulk_insert_fresh(conn, batch) else _insert_absent(conn, batch)
    c = new.columns
    deltas = Deltas()
    for (key, phase, arm), n in Counter(zip(c["experiment"], c["phase"], c["arm"], strict=True)).items():
        deltas.add(key, phase, arm, exposures=n)
    deltas.apply(conn)
    ledger = Ledger(conn)
    specs = specs_of_versions(conn, zip(c["experiment"], c["version"], strict=True))
    for key, version, phase, unit, arm, ts, propensity, context_json in zip(
            c["experiment"], c["version"], c["phase"], c["unit"], c["arm"], c["ts"], c["propensity"],
            c["context_json"], strict=True):
        if (spec := specs.get((key, version))) is not None:
            ledger.expose(spec, phase, unit, arm, ts, propensity, unit_covariate(spec, context_json))
    ledger.settle()
    return len(new)


def _bulk_insert_fresh(conn: Connection, batch: ExposureBatch) -> bool:
    """Insert all exposures at once; False (nothing inserted) if any id already exists."""
    try:
        with conn.begin_nested():
            insert_columns(conn, DECISIONS, batch.columns)
    except IntegrityError:
        return False
    return True


def _insert_absent(conn: Connection, batch: ExposureBatch) -> ExposureBatch:
    """Insert the exposures whose ids are not stored yet (the first of repeats); returns them."""
    ids = batch.columns["decision_id"]
    stored = set(conn.execute(decisions_in(conn.dialect.name), {"ids": ids}).scalars())
    positions = []
    for i, decision_id in enumerate(ids):
        if decision_id not in stored:
            stored.add(decision_id)
            positions.append(i)
    new = batch.take(positions)
    insert_columns(conn, DECISIONS, new.columns)
    return new


def claim_assignment(conn: Connection, key: str, phase: int, unit: str, arm: str,
                     propensity: float) -> tuple[str, float]:
    """Store `arm` as the unit's sticky arm unless one exists; returns the arm that holds.

    Insert-if-absent makes concurrent first decisions on several replicas agree."""
    row = dict(experiment=key, phase=phase, unit=unit, arm=arm, propensity=propensity, ts=utcnow())
    if insert_if_absent(conn, ASSIGNMENTS, row):
        return arm, propensity
    held = conn.execute(_ASSIGNMENT, {"experiment": key, "phase": phase, "unit": unit}).one()
    return held.arm, held.propensity


def recent_sums(conn: Connection, key: str, phase: int, arms: Sequence[str], limit: int, bucket: int) -> np.ndarray:
    """Sums over the `limit` most recent exposures, by arm and by age bucket of `bucket` exposures.

    Shape (arms, ceil(limit / bucket), 4): exposures, conversions, total, total_sq; bucket 0
    holds the newest exposures. Forgetful bandits (window, discount) weigh the buckets.
    """
    d = DECISIONS.c
    recent = (select(d.arm, d.converted, d.value, d.ts, d.decision_id)
              .where(d.experiment == key, d.phase == phase)
              .order_by(d.ts.desc(), d.decision_id.desc()).limit(limit).subquery())
    ranked = select(
        recent.c.arm, recent.c.converted, recent.c.value,
        ((func.row_number().over(order_by=(recent.c.ts.desc(), recent.c.decision_id.desc())) - 1) // bucket)
        .label("age"),
    ).subquery()
    query = select(
        ranked.c.arm, ranked.c.age, func.count(),
        func.sum(case((ranked.c.converted, 1), else_=0)),
        func.sum(ranked.c.value), func.sum(ranked.c.value * ranked.c.value),
    ).group_by(ranked.c.arm, ranked.c.age)
    index = {a: i for i, a in enumerate(arms)}
    out = np.zeros((len(arms), -(-limit // bucket), 4))
    for arm, age, n, conversions, total, total_sq in conn.execute(query):
        if arm in index:
            out[index[arm], int(age)] = (n, conversions, total or 0.0, total_sq or 0.0)
    return out


def history_query(key: str, phase: int) -> Select[Any]:
    """(unit, arm, converted, context_json) of every logged decision of the phase, oldest first
    (the social check needs the order): the recommender's training data."""
    d = DECISIONS.c
    return (select(d.unit, d.arm, d.converted, d.context_json).where(d.experiment == key, d.phase == phase)
            .order_by(d.ts))


def log_query(key: str, phase: int) -> Select[Any]:
    """Decisions with a propensity, oldest first: (arm, converted, value, propensity, unit, ts,
    context_json), for off-policy exports."""
    d = DECISIONS.c
    return (select(d.arm, d.converted, d.value, d.propensity, d.unit, d.ts, d.context_json)
            .where(d.experiment == key, d.phase == phase, d.propensity.is_not(None))
            .order_by(d.ts, d.decision_id))
