"""Events: idempotent intake of conversions and imported exposures, in bulk per chunk.

Existing events and decisions are read in bulk, each event's outcome is worked out in
memory, and the writes go out in bulk: inserted events, new and converted decisions, and
the arms' increments, all in the caller's one transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Connection, Select, bindparam, func, select, update

from engine.db import bulk_insert, member_of
from engine.events import Event, EventError, MissingExposureError, utcnow
from engine.store.aggregates import Deltas
from engine.store.decisions import Exposure, decisions_in
from engine.store.experiments import StoredExperiment
from engine.store.ledger import Conversion, Ledger
from engine.tables import DECISIONS, EVENTS


@lru_cache(maxsize=4)
def _events_in(dialect: str) -> Select[Any]:
    return select(EVENTS.c.event_id).where(member_of(EVENTS.c.event_id, "ids", dialect))



@lru_cache(maxsize=4)
def _latest_of_units(dialect: str) -> Select[Any]:
    """Per unit of the list `units` in `experiment` and per arm, the newest decision; `newest`
    is 1 on the unit's newest decision of all."""
    d = DECISIONS.c
    newest_first = (d.ts.desc(), d.decision_id.desc())
    ranked = (
        select(d.decision_id, d.unit, d.arm,
               func.row_number().over(partition_by=d.unit, order_by=newest_first).label("newest"),
               func.row_number().over(partition_by=(d.unit, d.arm), order_by=newest_first).label("newest_of_arm"))
        .where(d.experiment == bindparam("experiment"), member_of(d.unit, "units", dialect))
        .subquery()
    )
    return select(ranked.c.decision_id, ranked.c.unit, ranked.c.arm, ranked.c.newest).where(ranked.c.newest_of_arm == 1)



_MARK_CONVERTED = (
    update(DECISIONS).where(DECISIONS.c.decision_id == bindparam("b_decision_id"))
    .values(converted=True, value=bindparam("new_value"))
)



@dataclass
class EventOutcome:
    """`missing` lists the indexes among `rejected` whose exposure was not found."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    missing: set[int] = field(default_factory=set)

    def merged(self, other: EventOutcome) -> EventOutcome:
        """The outcome of two parts of one chunk (indexes are the chunk's own, never shifted)."""
        return EventOutcome(self.accepted + other.accepted, self.duplicates + other.duplicates,
                            self.rejected + other.rejected, self.missing | other.missing)



class _EventRow(NamedTuple):
    """A received event as stored: the columns of its `events` row."""

    event_id: str
    type: str
    experiment: str
    unit: str | None
    decision_id: str | None
    arm: str | None
    value: float | None
    ts: datetime
    received_at: datetime
    metric: str | None
    phase: int | None



assert sorted(_EventRow._fields) == sorted(c.name for c in EVENTS.columns)



def imported_decision_id(event_id: str) -> str:
    """The decision id of an exposure imported without one: derived from its event id, and
    short enough for the column whatever the event id's length."""
    return "ev:" + hashlib.sha256(event_id.encode()).hexdigest()[:40]



def check_event(ev: Event, experiments: dict[str, StoredExperiment]) -> StoredExperiment:
    """The event's experiment, if the event fits it; else `EventError` with the reason."""
    exp = experiments.get(ev.experiment)
    if exp is None:
        raise EventError(f"experiment: unknown experiment {ev.experiment!r}")
    if ev.arm is not None and ev.arm not in exp.arms:
        raise EventError(f"arm: {ev.arm!r} is not an arm of {ev.experiment!r}")
    metric = exp.spec.measure(ev.metric)
    if metric is None:
        names = ", ".join(m.name for m in exp.spec.measures)
        raise EventError(f"metric: {ev.metric!r} is not a metric of {ev.experiment!r}; metrics: {names}")
    if ev.type == "conversion" and metric.revenue and ev.value is None:
        raise EventError(f"value: required for the revenue metric {metric.name!r}")
    if ev.value is not None and ev.value < 0 and not metric.allow_negative:
        raise EventError(f"value: must be >= 0 (metric {metric.name!r} does not declare allow_negative: true)")
    return exp



class EventBatch:
    """One chunk of events against one transaction: existing events and decisions are read in
    bulk, the outcome of each event is worked out in memory, and the writes go out in bulk."""

    def __init__(self, conn: Connection, experiments: dict[str, StoredExperiment]) -> None:
        self.conn = conn
        self.experiments = experiments
        self.decisions: dict[str, dict[str, Any]] = {}  # decision_id -> row, read or new
        self.latest: dict[tuple[str, str], dict[str, Any]] = {}  # (experiment, unit) -> newest row
        # The newest stored decision ids, by (experiment, unit) and by (experiment, unit, arm).
        self.stored_latest: dict[tuple[str, ...], str] = {}
        self.new_decisions: list[dict[str, Any]] = []
        self.converted: dict[str, dict[str, Any]] = {}  # stored rows to update
        self.deltas = Deltas()
        self.ledger = Ledger(conn)
        self.now = utcnow()

    def apply(self, events: Sequence[tuple[int, Event]]) -> EventOutcome:
        outcome = EventOutcome()
        valid = []
        for index, ev in events:
            try:
                valid.append((index, ev, check_event(ev, self.experiments)))
            except EventError as exc:
                outcome.rejected.append((index, str(exc)))
        seen = self._existing_events([ev.event_id for _, ev, _ in valid])
        # The decision each event names (an imported exposure's is derived from its event id).
        named = [ev.decision_id or (imported_decision_id(ev.event_id) if ev.type == "exposure" else None)
                 for _, ev, _ in valid]
        self._read_decisions([i for i in named if i is not None] + self._find_latest(valid))
        new_events = []
        for (index, ev, exp), decision_id in zip(valid, named, strict=True):
            if ev.event_id in seen:
                outcome.duplicates += 1
                continue
            try:
                if ev.type == "exposure":
                    assert decision_id is not None
                    unit, phase, metric = self._exposure(ev, exp, decision_id), exp.phase, None
                else:
                    unit, phase, metric = self._conversion(ev, exp)
            except EventError as exc:
                outcome.rejected.append((index, str(exc)))
                if isinstance(exc, MissingExposureError):
                    outcome.missing.add(index)
                continue
            seen.add(ev.event_id)
            new_events.append(_EventRow(ev.event_id, ev.type, ev.experiment, unit, ev.decision_id, ev.arm, ev.value,
                                        ev.ts or self.now, self.now, metric, phase))
            outcome.accepted += 1
        self._write(new_events)
        return outcome

    def _existing_events(self, event_ids: list[str]) -> set[str]:
        if not event_ids:
            return set()
        return set(self.conn.execute(_events_in(self.conn.dialect.name), {"ids": event_ids}).scalars())

    def _find_latest(self, valid: list[tuple[int, Event, StoredExperiment]]) -> list[str]:
        """The newest stored decisions of the units that conversions name without a decision id
        (one query per experiment); their ids, to be read and locked with the named ones."""
        units: dict[str, set[str]] = {}
        for _, ev, _ in valid:
            if ev.type == "conversion" and ev.decision_id is None and ev.unit is not None:
                units.setdefault(ev.experiment, set()).add(ev.unit)
        for key, names in units.items():
            query = _latest_of_units(self.conn.dialect.name)
            for decision_id, unit, arm, newest in self.conn.execute(query, {"experiment": key, "units": sorted(names)}):
                self.stored_latest[(key, unit, arm)] = decision_id
                if newest == 1:
                    self.stored_latest[(key, unit)] = decision_id
        return list(self.stored_latest.values())

    def _read_decisions(self, decision_ids: list[str]) -> None:
        if not decision_ids:
            return
        for row in self.conn.execute(decisions_in(self.conn.dialect.name), {"ids": decision_ids}).mappings():
            self.decisions[row["decision_id"]] = dict(row)

    def _exposure(self, ev: Event, exp: StoredExperiment, decision_id: str) -> str:
        """Log an imported exposure; returns its unit."""
        if decision_id in self.decisions:
            raise EventError(f"decision_id: {decision_id!r} was already logged")
        arm = exp.arms[ev.arm or ""]
        row = Exposure(decision_id, exp.spec.key, exp.version, exp.phase, ev.unit or "", arm.key,
                       arm.channel.value, None, None, "IMPORTED", ev.ts or self.now)._asdict()
        self.new_decisions.append(row)
        self.decisions[decision_id] = row
        self.latest[(exp.spec.key, row["unit"])] = row
        self.deltas.add(exp.spec.key, exp.phase, arm.key, exposures=1)
        self.ledger.expose(exp.spec, exp.phase, row["unit"], arm.key, row["ts"], None)  # no propensity logged
        return row["unit"]

    def _conversion(self, ev: Event, exp: StoredExperiment) -> tuple[str, int, str]:
        """Count a conversion; returns the unit, phase and metric it counts for."""
        decision = self._decision_of(ev)
        metric = exp.spec.measure(ev.metric)
        assert metric is not None  # check_event
        # Counted in the decision's own phase: the caller's snapshot may be behind a phase change.
        phase, ts = decision["phase"], ev.ts or self.now
        self.ledger.convert(Conversion(exp.spec, phase, decision["unit"], decision["decision_id"], decision["ts"],
                                       decision["arm"], metric.name, ev.value, ts, decision["propensity"]))
        if metric is exp.spec.primary:  # the decision log carries the primary outcome (OPE, targeting)
            before = decision["value"]
            after = before + (ev.value or 0.0) if metric.revenue else 1.0
            self.deltas.add(exp.spec.key, phase, decision["arm"], conversions=0 if decision["converted"] else 1,
                            total=after - before, total_sq=after * after - before * before)
            decision["converted"], decision["value"] = True, after
            self.converted[decision["decision_id"]] = decision  # new decisions are inserted as they stand
        return decision["unit"], phase, metric.name

    def _decision_of(self, ev: Event) -> dict[str, Any]:
        """The exposure a conversion belongs to: the named decision, else the unit's latest."""
        if ev.decision_id is not None:
            row = self.decisions.get(ev.decision_id)
        else:
            row = self.latest.get((ev.experiment, ev.unit or ""))
            if row is None or (ev.arm is not None and row["arm"] != ev.arm):
                row = self._latest_stored(ev)
        if row is None:
            if ev.decision_id is not None:
                raise MissingExposureError(f"decision_id: no decision {ev.decision_id!r} was logged")
            raise MissingExposureError(f"unit: no exposure of unit {ev.unit!r} was logged in {ev.experiment!r}")
        if row["experiment"] != ev.experiment:
            raise EventError(f"decision_id: decision {ev.decision_id!r} belongs to {row['experiment']!r}")
        if ev.arm is not None and row["arm"] != ev.arm:
            raise EventError(f"arm: decision {row['decision_id']!r} served {row['arm']!r}, not {ev.arm!r}")
        return row

    def _latest_stored(self, ev: Event) -> dict[str, Any] | None:
        unit = (ev.experiment, ev.unit or "")
        decision_id = self.stored_latest.get(unit if ev.arm is None else (*unit, ev.arm))
        if decision_id is None:
            return None
        row = self.decisions[decision_id]  # read and locked with the named decisions
        if ev.arm is None:
            self.latest[(ev.experiment, ev.unit or "")] = row
        return row

    def _write(self, new_events: list[_EventRow]) -> None:
        new_ids = {d["decision_id"] for d in self.new_decisions}
        bulk_insert(self.conn, EVENTS, _EventRow._fields, new_events)
        bulk_insert(self.conn, DECISIONS, Exposure._fields,
                    [tuple(d[c] for c in Exposure._fields) for d in self.new_decisions])
        updates = [{"b_decision_id": i, "new_value": d["value"]} for i, d in self.converted.items() if i not in new_ids]
        if updates:
            self.conn.execute(_MARK_CONVERTED, updates)
        self.deltas.apply(self.conn)
        self.ledger.settle()

