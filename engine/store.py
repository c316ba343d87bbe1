"""The store: versioned experiments, logged exposures, idempotent events and per-arm aggregates.

Aggregates change only in the transaction that writes the rows they summarise, so a crash
at any point leaves them equal to what a recount of the raw rows would give.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property, lru_cache
from typing import Any, Literal, NamedTuple, TypeVar

import numpy as np
from sqlalchemy import Connection, Row, Select, bindparam, case, func, inspect, select, text, update
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import DBAPIError, IntegrityError

from engine.db import bulk_insert, check_sqlite_file, create_engine, insert_if_absent, member_of, read, write
from engine.events import Event, EventError, MissingExposureError, utcnow
from engine.spec import Arm, ExperimentSpec, Kind, MetricType, Status
from engine.tables import (
    ArmStatsRow,
    AssignmentRow,
    DecisionRow,
    EventRow,
    ExperimentRow,
    ExperimentVersionRow,
)
from policies.sufficient import BinaryStats, MeanStats

EXPERIMENTS = ExperimentRow.__table__  # type: ignore[attr-defined]
VERSIONS = ExperimentVersionRow.__table__  # type: ignore[attr-defined]
ARM_STATS = ArmStatsRow.__table__  # type: ignore[attr-defined]
DECISIONS = DecisionRow.__table__  # type: ignore[attr-defined]
EVENTS = EventRow.__table__  # type: ignore[attr-defined]
ASSIGNMENTS = AssignmentRow.__table__  # type: ignore[attr-defined]

Action = Literal["create", "update", "unchanged", "refused"]
T = TypeVar("T")
# PostgreSQL's deadlock_detected, serialization_failure and unique_violation (another writer
# inserted the same event_id first; the rerun sees it as a duplicate): the transaction runs again.
RETRY_SQLSTATES = frozenset({"40P01", "40001", "23505"})
DEADLOCK_RETRIES = 5

# Statements are built once: building SQLAlchemy expressions per event costs more than running them.
_S = ARM_STATS.c
_BUMP = (
    update(ARM_STATS)
    .where(_S.experiment == bindparam("b_key"), _S.phase == bindparam("b_phase"), _S.arm == bindparam("b_arm"))
    .values(exposures=_S.exposures + bindparam("d_exposures"),
            conversions=_S.conversions + bindparam("d_conversions"),
            total=_S.total + bindparam("d_total"), total_sq=_S.total_sq + bindparam("d_total_sq"))
)
_DECISION_STATE = tuple(DECISIONS.c[c] for c in ("decision_id", "experiment", "phase", "arm", "converted", "value"))


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


@lru_cache(maxsize=4)
def _decisions_in(dialect: str) -> Select[Any]:
    # A fixed lock order: two transactions locking overlapping decisions cannot deadlock.
    return (select(*_DECISION_STATE).where(member_of(DECISIONS.c.decision_id, "ids", dialect))
            .order_by(DECISIONS.c.decision_id).with_for_update())


_MARK_CONVERTED = (
    update(DECISIONS).where(DECISIONS.c.decision_id == bindparam("b_decision_id"))
    .values(converted=True, value=bindparam("new_value"))
)
_ASSIGNMENT = select(ASSIGNMENTS.c.arm, ASSIGNMENTS.c.propensity).where(
    ASSIGNMENTS.c.experiment == bindparam("experiment"), ASSIGNMENTS.c.phase == bindparam("phase"),
    ASSIGNMENTS.c.unit == bindparam("unit"),
)


@dataclass(frozen=True)
class StoredExperiment:
    spec: ExperimentSpec
    version: int

    @cached_property
    def arms(self) -> dict[str, Arm]:
        return {a.key: a for a in self.spec.arms}

    @property
    def phase(self) -> int:
        return self.spec.traffic.phase


@dataclass(frozen=True)
class PlanItem:
    key: str
    action: Action
    version: int | None
    changes: tuple[str, ...] = ()
    reason: str = ""
    hint: str = ""


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


@dataclass(frozen=True)
class ArmAggregate:
    arm: str
    exposures: int
    conversions: int
    total: float
    total_sq: float

    @property
    def binary(self) -> BinaryStats:
        return BinaryStats(self.exposures, self.conversions)

    @property
    def mean(self) -> MeanStats:
        return MeanStats(self.exposures, self.total, self.total_sq)


@dataclass
class EventOutcome:
    """`missing` lists the indexes among `rejected` whose exposure was not found."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    missing: set[int] = field(default_factory=set)


def _changes(old: ExperimentSpec, new: ExperimentSpec) -> list[str]:
    before, after = old.to_json_dict(), new.to_json_dict()
    return [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in after if before.get(k) != after.get(k)]


def _unsafe_change(old: ExperimentSpec, new: ExperimentSpec) -> str:
    """Why applying `new` over a running A/B test (or sticky bandit) would move units between
    arms ('' if it would not)."""
    if old.status is not Status.RUNNING:
        return ""
    if old.kind is Kind.BANDIT:
        sticky_arm_removed = old.traffic.sticky and not set(old.arm_keys) <= set(new.arm_keys)
        if sticky_arm_removed and new.traffic.phase == old.traffic.phase:
            return "removing an arm of a running sticky bandit strands the units that hold it"
        return ""
    if new.traffic.phase > old.traffic.phase:
        return ""
    if new.traffic.phase < old.traffic.phase:
        return f"traffic.phase cannot go back from {old.traffic.phase} to {new.traffic.phase}"
    if new.kind is not old.kind:
        return "changing kind reassigns every unit"
    if new.arm_keys != old.arm_keys:
        return "changing the arms of a running A/B test reshuffles its units"
    if new.weights != old.weights:
        return "changing the weights of a running A/B test reshuffles its units"
    if new.seed != old.seed:
        return "changing traffic.seed reshuffles every unit"
    if new.traffic.coverage < old.traffic.coverage:
        return "lowering coverage removes units that were already exposed"
    if new.metric != old.metric:
        return "changing the metric mixes two measurements in one analysis"
    return ""


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.sa: SAEngine = create_engine(url)
        _add_missing_columns(self.sa)

    def close(self) -> None:
        self.sa.dispose()

    def ping(self) -> None:
        """Raise if the store cannot be reached, or (SQLite) its file is not the one opened."""
        check_sqlite_file(self.sa)
        with read(self.sa) as conn:
            conn.exec_driver_sql("SELECT 1")

    def claim_assignment(self, key: str, phase: int, unit: str, arm: str, propensity: float) -> tuple[str, float]:
        """Store `arm` as the unit's sticky arm unless one exists; returns the arm that holds.

        Insert-if-absent makes concurrent first decisions on several replicas agree."""
        row = dict(experiment=key, phase=phase, unit=unit, arm=arm, propensity=propensity, ts=utcnow())
        with write(self.sa) as conn:
            if insert_if_absent(conn, ASSIGNMENTS, row):
                return arm, propensity
            held = conn.execute(_ASSIGNMENT, {"experiment": key, "phase": phase, "unit": unit}).one()
            return held.arm, held.propensity

    # -- experiments ------------------------------------------------------------------

    def experiments(self) -> dict[str, StoredExperiment]:
        with read(self.sa) as conn:
            rows = conn.execute(select(EXPERIMENTS.c.spec_json, EXPERIMENTS.c.version)).all()
        out = {}
        for spec_json, version in rows:
            spec = ExperimentSpec.model_validate_json(spec_json)
            out[spec.key] = StoredExperiment(spec, version)
        return out

    def apply(self, specs: Sequence[ExperimentSpec], dry_run: bool = False) -> list[PlanItem]:
        """Plan every spec and, unless `dry_run` or a change is refused, write them all: one
        transaction, so a set of declarations is applied whole or not at all."""
        with write(self.sa) as conn:
            items = [self._plan(conn, spec) for spec in specs]
            if dry_run or any(item.action == "refused" for item in items):
                return items
            for spec, item in zip(specs, items, strict=True):
                if item.action in ("create", "update"):
                    self._write_experiment(conn, spec, item.version or 1, is_new=item.action == "create")
            return items

    @staticmethod
    def _plan(conn: Connection, spec: ExperimentSpec) -> PlanItem:
        row = conn.execute(
            select(EXPERIMENTS.c.spec_json, EXPERIMENTS.c.version).where(EXPERIMENTS.c.key == spec.key)
        ).first()
        if row is None:
            return PlanItem(spec.key, "create", 1, ("new experiment",))
        old = ExperimentSpec.model_validate_json(row.spec_json)
        if old == spec:
            return PlanItem(spec.key, "unchanged", row.version)
        unsafe = _unsafe_change(old, spec)
        changes = tuple(_changes(old, spec))
        if unsafe:
            return PlanItem(
                spec.key, "refused", row.version, changes, unsafe,
                f"declare traffic.phase: {old.traffic.phase + 1} to start a new phase "
                "(its analysis starts from zero), or stop the experiment first",
            )
        return PlanItem(spec.key, "update", row.version + 1, changes)

    def _write_experiment(self, conn: Connection, spec: ExperimentSpec, version: int, is_new: bool) -> None:
        now = utcnow()
        spec_json = spec.model_dump_json(by_alias=True)
        values = dict(version=version, phase=spec.traffic.phase, status=spec.status.value,
                      kind=spec.kind.value, spec_json=spec_json, updated_at=now)
        if is_new:
            conn.execute(EXPERIMENTS.insert().values(key=spec.key, **values))
        else:
            conn.execute(EXPERIMENTS.update().where(EXPERIMENTS.c.key == spec.key).values(**values))
        conn.execute(VERSIONS.insert().values(key=spec.key, version=version, spec_json=spec_json, applied_at=now))
        for arm in spec.arm_keys:
            insert_if_absent(conn, ARM_STATS, dict(experiment=spec.key, phase=spec.traffic.phase, arm=arm,
                                                   exposures=0, conversions=0, total=0.0, total_sq=0.0))

    # -- aggregates --------------------------------------------------------------------

    def arm_aggregates(self, key: str, phase: int, arms: Sequence[str]) -> list[ArmAggregate]:
        """Aggregates in the order of `arms` (zeros for an arm with no row yet)."""
        with read(self.sa) as conn:
            rows = conn.execute(
                select(ARM_STATS).where(ARM_STATS.c.experiment == key, ARM_STATS.c.phase == phase)
            ).mappings().all()
        by_arm = {r["arm"]: r for r in rows}
        return [
            ArmAggregate(a, by_arm[a]["exposures"], by_arm[a]["conversions"], by_arm[a]["total"], by_arm[a]["total_sq"])
            if a in by_arm else ArmAggregate(a, 0, 0, 0.0, 0.0)
            for a in arms
        ]

    def recent_sums(self, key: str, phase: int, arms: Sequence[str], limit: int, bucket: int) -> np.ndarray:
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
        with read(self.sa) as conn:
            for arm, age, n, conversions, total, total_sq in conn.execute(query):
                if arm in index:
                    out[index[arm], int(age)] = (n, conversions, total or 0.0, total_sq or 0.0)
        return out

    # -- exposures ---------------------------------------------------------------------

    def log_exposures(self, exposures: Sequence[Exposure]) -> int:
        """Write buffered exposures and their counts in one transaction; returns how many were new.

        Fresh decision ids are unique, so one bulk insert does; a batch replayed from a spool
        may hold ids already stored, and then only the ids not stored yet are inserted."""
        if not exposures:
            return 0

        def work(conn: Connection) -> int:
            new = exposures if self._bulk_insert_fresh(conn, exposures) else self._insert_absent(conn, exposures)
            deltas = _Deltas()
            for (key, phase, arm), n in Counter((e.experiment, e.phase, e.arm) for e in new).items():
                deltas.add(key, phase, arm, exposures=n)
            deltas.apply(conn)
            return len(new)

        return self._transaction(work)

    # -- events ------------------------------------------------------------------------

    def apply_events(self, events: Sequence[tuple[int, Event]],
                     experiments: dict[str, StoredExperiment]) -> EventOutcome:
        """Apply validated events in one transaction, with a few bulk statements per chunk. Each
        is accepted, a duplicate (its `event_id` was seen before, in the store or earlier in the
        chunk: nothing changes) or rejected with its index and reason."""
        return self._transaction(lambda conn: _EventBatch(conn, experiments).apply(events))

    @staticmethod
    def _bulk_insert_fresh(conn: Connection, exposures: Sequence[Exposure]) -> bool:
        """Insert all exposures at once; False (nothing inserted) if any id already exists."""
        try:
            with conn.begin_nested():
                bulk_insert(conn, DECISIONS, Exposure._fields, exposures)
        except IntegrityError:
            return False
        return True

    @staticmethod
    def _insert_absent(conn: Connection, exposures: Sequence[Exposure]) -> list[Exposure]:
        """Insert the exposures whose ids are not stored yet (the first of repeats); returns them."""
        stored = set(conn.execute(_decisions_in(conn.dialect.name), {"ids": [e.decision_id for e in exposures]})
                     .scalars())
        new = []
        for e in exposures:
            if e.decision_id not in stored:
                stored.add(e.decision_id)
                new.append(e)
        bulk_insert(conn, DECISIONS, Exposure._fields, new)
        return new

    def _transaction(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one write transaction, again if the database chose it as a deadlock victim."""
        for attempt in range(DEADLOCK_RETRIES):
            try:
                with write(self.sa) as conn:
                    return work(conn)
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) not in RETRY_SQLSTATES or attempt == DEADLOCK_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    # -- decision history (targeting, export) --------------------------------------------

    def decision_history(self, key: str, phase: int) -> list[Row]:
        """(unit, arm, converted, context_json) of every logged decision of the phase: the
        recommender's training data, read in one query on the refit cadence."""
        d = DECISIONS.c
        query = select(d.unit, d.arm, d.converted, d.context_json).where(d.experiment == key, d.phase == phase)
        with read(self.sa) as conn:
            return list(conn.execute(query).all())

    def decision_log(self, key: str, phase: int) -> Iterator[Row]:
        """Decisions with a propensity, oldest first: (arm, converted, value, propensity, unit, ts,
        context_json). Streamed, for exports of any size."""
        d = DECISIONS.c
        query = (select(d.arm, d.converted, d.value, d.propensity, d.unit, d.ts, d.context_json)
                 .where(d.experiment == key, d.phase == phase, d.propensity.is_not(None))
                 .order_by(d.ts, d.decision_id))
        with read(self.sa) as conn:
            yield from conn.execution_options(yield_per=5000).execute(query)

    def counts(self) -> dict[str, int]:
        """Row counts per table (for summaries and tests)."""
        with read(self.sa) as conn:
            return {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (EXPERIMENTS, DECISIONS, EVENTS)
            }


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


assert sorted(Exposure._fields) == sorted(c.name for c in DECISIONS.columns)
assert sorted(_EventRow._fields) == sorted(c.name for c in EVENTS.columns)


def _add_missing_columns(sa: SAEngine) -> None:
    """Add columns introduced after a store was created (portable `ALTER TABLE ... ADD COLUMN`)."""
    def present() -> bool:
        return "context_json" in {c["name"] for c in inspect(sa).get_columns(DECISIONS.name)}

    if present():
        return
    try:
        with write(sa) as conn:
            conn.execute(text(f"ALTER TABLE {DECISIONS.name} ADD COLUMN context_json TEXT"))
    except Exception:
        if not present():  # another process may have added it first
            raise


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
    if ev.type == "conversion" and exp.spec.metric.type is MetricType.REVENUE and ev.value is None:
        raise EventError("value: required for a revenue metric")
    return exp


class _EventBatch:
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
        self.deltas = _Deltas()
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
                    self._exposure(ev, exp, decision_id)
                else:
                    self._conversion(ev, exp)
            except EventError as exc:
                outcome.rejected.append((index, str(exc)))
                if isinstance(exc, MissingExposureError):
                    outcome.missing.add(index)
                continue
            seen.add(ev.event_id)
            new_events.append(_EventRow(ev.event_id, ev.type, ev.experiment, ev.unit, ev.decision_id, ev.arm, ev.value,
                                        ev.ts or self.now, self.now))
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
        for row in self.conn.execute(_decisions_in(self.conn.dialect.name), {"ids": decision_ids}).mappings():
            self.decisions[row["decision_id"]] = dict(row)

    def _exposure(self, ev: Event, exp: StoredExperiment, decision_id: str) -> None:
        if decision_id in self.decisions:
            raise EventError(f"decision_id: {decision_id!r} was already logged")
        arm = exp.arms[ev.arm or ""]
        row = Exposure(decision_id, exp.spec.key, exp.version, exp.phase, ev.unit or "", arm.key,
                       arm.channel.value, None, None, "IMPORTED", ev.ts or self.now)._asdict()
        self.new_decisions.append(row)
        self.decisions[decision_id] = row
        self.latest[(exp.spec.key, row["unit"])] = row
        self.deltas.add(exp.spec.key, exp.phase, arm.key, exposures=1)

    def _conversion(self, ev: Event, exp: StoredExperiment) -> None:
        decision = self._decision_of(ev)
        # Counted in the decision's own phase: the caller's snapshot may be behind a phase change.
        before = decision["value"]
        after = before + ev.value if exp.spec.metric.type is MetricType.REVENUE else 1.0  # type: ignore[operator]
        self.deltas.add(exp.spec.key, decision["phase"], decision["arm"], conversions=0 if decision["converted"] else 1,
                        total=after - before, total_sq=after * after - before * before)
        decision["converted"], decision["value"] = True, after
        self.converted[decision["decision_id"]] = decision  # new decisions are inserted as they stand

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


class _Deltas:
    """Aggregate increments of one transaction, applied at its end in a fixed (sorted) order:
    two transactions never lock the same arm rows in opposite orders, so they cannot deadlock."""

    def __init__(self) -> None:
        self._by_arm: dict[tuple[str, int, str], list[float]] = {}

    def add(self, key: str, phase: int, arm: str, exposures: int = 0, conversions: int = 0,
            total: float = 0.0, total_sq: float = 0.0) -> None:
        d = self._by_arm.setdefault((key, phase, arm), [0, 0, 0.0, 0.0])
        d[0] += exposures
        d[1] += conversions
        d[2] += total
        d[3] += total_sq

    def apply(self, conn: Connection) -> None:
        """Atomic increments (`SET n = n + :d`): concurrent writers never lose an update."""
        for (key, phase, arm), (n, c, t, t2) in sorted(self._by_arm.items()):
            conn.execute(_BUMP, {"b_key": key, "b_phase": phase, "b_arm": arm, "d_exposures": int(n),
                                 "d_conversions": int(c), "d_total": t, "d_total_sq": t2})
