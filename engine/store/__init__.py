"""The store: versioned experiments, logged exposures, idempotent events and per-arm aggregates.

`Store` is the one door to the database; what it stores lives in a module each:
`experiments` (declarations and the plan of a change), `decisions` (exposures and sticky
assignments), `outcomes` (events), `aggregates` (the per-arm counters), `quarantine`
(rows the database refused), `tags` (arm tags a classifier predicted) and `plans` (frozen
plans and kept verdicts). Aggregates change
only in the transaction that writes the rows they summarise, so a crash at any point leaves
them equal to what a recount would give.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import Connection, Row, func, select
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import DBAPIError

from engine.db import check_sqlite_file, create_engine, read, write
from engine.events import Event, utcnow
from engine.migrations import bring_to_head
from engine.spec import ExperimentSpec
from engine.store.aggregates import ArmAggregate, Tally, read_aggregates, read_tally
from engine.store.decisions import Exposure, claim_assignment, history_query, insert_exposures, log_query, recent_sums
from engine.store.experiments import PlanItem, StoredExperiment, load_experiments, plan_experiment, write_experiment
from engine.store.graph import EdgeOutcome, EdgeRecord, StoredGraph, count_edges, read_graph, upsert_edges
from engine.store.outcomes import EventBatch, EventOutcome, check_event, imported_decision_id
from engine.store.plans import FrozenPlan, KeptVerdict, freeze_plan, keep_verdict, read_plan, read_verdict
from engine.store.quarantine import quarantine, read_quarantine, write_isolating
from engine.store.tags import ArmTags, read_tags, write_tags
from engine.store.units import UnitRecord, unit_records
from engine.store.weights import (
    Exclusion,
    WeightsEntry,
    exclude_arm,
    read_exclusions,
    read_weights_history,
    record_weights,
)
from engine.tables import DECISIONS, EVENTS, EXPERIMENTS, QUARANTINE

__all__ = [
    "ArmAggregate", "ArmTags", "DECISIONS", "EdgeOutcome", "EdgeRecord", "EventOutcome", "Exposure", "FrozenPlan",
    "KeptVerdict", "PlanItem",
    "Store", "StoredExperiment", "StoredGraph", "Tally", "check_event", "imported_decision_id",
]

T = TypeVar("T")
# PostgreSQL's deadlock_detected, serialization_failure and unique_violation (another writer
# inserted the same event_id first; the rerun sees it as a duplicate): the transaction runs again.
RETRY_SQLSTATES = frozenset({"40P01", "40001", "23505"})

DEADLOCK_RETRIES = 5



class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.sa: SAEngine = create_engine(url)
        bring_to_head(self.sa, url)

    def close(self) -> None:
        self.sa.dispose()

    def ping(self) -> None:
        """Raise if the store cannot be reached, or (SQLite) its file is not the one opened."""
        check_sqlite_file(self.sa)
        with read(self.sa) as conn:
            conn.exec_driver_sql("SELECT 1")

    # -- experiments ------------------------------------------------------------------

    def experiments(self) -> dict[str, StoredExperiment]:
        with read(self.sa) as conn:
            return load_experiments(conn)

    def apply(self, specs: Sequence[ExperimentSpec], dry_run: bool = False) -> list[PlanItem]:
        """Plan every spec and, unless `dry_run` or a change is refused, write them all: one
        transaction, so a set of declarations is applied whole or not at all."""
        with write(self.sa) as conn:
            items = [plan_experiment(conn, spec) for spec in specs]
            if dry_run or any(item.action == "refused" for item in items):
                return items
            for spec, item in zip(specs, items, strict=True):
                if item.action in ("create", "update"):
                    write_experiment(conn, spec, item.version or 1, is_new=item.action == "create")
            return items

    # -- aggregates --------------------------------------------------------------------

    def arm_aggregates(self, key: str, phase: int, arms: Sequence[str]) -> list[ArmAggregate]:
        """Aggregates in the order of `arms` (zeros for an arm with no row yet)."""
        with read(self.sa) as conn:
            return read_aggregates(conn, key, phase, arms)

    def tally(self, key: str, phase: int, arms: Sequence[str]) -> Tally:
        """The per-unit sums of every metric (`aggregates.Tally`)."""
        with read(self.sa) as conn:
            return read_tally(conn, key, phase, arms)

    def exclusions(self, key: str, phase: int) -> list[Exclusion]:
        """The arms a guardrail took out of the phase's traffic, with why."""
        with read(self.sa) as conn:
            return read_exclusions(conn, key, phase)

    def exclude_arm(self, key: str, phase: int, arm: str, reason: str) -> bool:
        with write(self.sa) as conn:
            return exclude_arm(conn, key, phase, arm, reason)

    def record_weights(self, key: str, phase: int, weights: Mapping[str, float], reason: str) -> None:
        with write(self.sa) as conn:
            record_weights(conn, key, phase, weights, reason)

    def weights_history(self, key: str, phase: int, limit: int | None = None) -> list[WeightsEntry]:
        with read(self.sa) as conn:
            return read_weights_history(conn, key, phase, limit)

    def recent_sums(self, key: str, phase: int, arms: Sequence[str], limit: int, bucket: int) -> np.ndarray:
        """Sums over the most recent exposures by arm and age bucket (`decisions.recent_sums`)."""
        with read(self.sa) as conn:
            return recent_sums(conn, key, phase, arms, limit, bucket)

    # -- frozen plans and kept verdicts (`plans`) ---------------------------------------

    def frozen_plan(self, key: str, phase: int, metric: str) -> FrozenPlan | None:
        with read(self.sa) as conn:
            return read_plan(conn, key, phase, metric)

    def freeze_plan(self, plan: FrozenPlan) -> FrozenPlan:
        """Store `plan` if its phase and metric have none; the plan that stands."""
        with write(self.sa) as conn:
            return freeze_plan(conn, plan)

    def kept_verdict(self, key: str, phase: int) -> KeptVerdict | None:
        with read(self.sa) as conn:
            return read_verdict(conn, key, phase)

    def keep_verdict(self, verdict: KeptVerdict) -> KeptVerdict:
        """Store `verdict` if its phase has none; the verdict that stands."""
        with write(self.sa) as conn:
            return keep_verdict(conn, verdict)

    # -- decisions and events ------------------------------------------------------------

    def claim_assignment(self, key: str, phase: int, unit: str, arm: str, propensity: float) -> tuple[str, float]:
        """The unit's sticky arm: `arm` unless another decision (on any replica) stored one first."""
        with write(self.sa) as conn:
            return claim_assignment(conn, key, phase, unit, arm, propensity)

    def log_exposures(self, exposures: Sequence[Exposure]) -> int:
        """Write buffered exposures and their counts in one transaction; returns how many were new.
        Rows the database refuses are quarantined and the rest written (`quarantine`)."""
        if not exposures:
            return 0

        def refused(exposure: Exposure, reason: str) -> int:
            self._quarantine("exposure", reason, exposure._asdict())
            return 0

        return write_isolating(exposures, lambda part: self._transaction(lambda conn: insert_exposures(conn, part)),
                               lambda left, right, _: left + right, refused)

    def apply_events(self, events: Sequence[tuple[int, Event]],
                     experiments: dict[str, StoredExperiment]) -> EventOutcome:
        """Apply validated events in one transaction, with a few bulk statements per chunk. Each
        is accepted, a duplicate (its `event_id` was seen before, in the store or earlier in the
        chunk: nothing changes) or rejected with its index and reason; an event the database
        refuses is quarantined and rejected, and the rest of the chunk applied."""
        def refused(item: tuple[int, Event], reason: str) -> EventOutcome:
            self._quarantine("event", reason, item[1].model_dump(mode="json"))
            return EventOutcome(rejected=[(item[0], f"the database refused it (quarantined): {reason}")])

        return write_isolating(events, lambda part: self._transaction(lambda conn: EventBatch(conn, experiments)
                                                                      .apply(part)),
                               lambda left, right, _: left.merged(right), refused)

    # -- social graph ----------------------------------------------------------------------

    def upsert_edges(self, edges: Sequence[tuple[int, EdgeRecord]]) -> EdgeOutcome:
        """Store validated edges ((index, edge)) in one transaction (`graph.upsert_edges`); an
        edge the database refuses is quarantined and rejected with its index, the rest stored."""
        if not edges:
            return EdgeOutcome()

        def refused(item: tuple[int, EdgeRecord], reason: str) -> EdgeOutcome:
            self._quarantine("edge", reason, item[1]._asdict())
            return EdgeOutcome(rejected=[(item[0], f"the database refused it (quarantined): {reason}")])

        now = utcnow()
        return write_isolating(edges, lambda part: self._transaction(lambda conn: upsert_edges(conn, part, now)),
                               lambda left, right, _: left.merged(right), refused)

    def graph(self) -> StoredGraph:
        """Every stored edge as arrays (`graph.read_graph`): what social refits propagate over."""
        with read(self.sa) as conn:
            return read_graph(conn)

    def edge_counts(self) -> dict[str, int]:
        with read(self.sa) as conn:
            return count_edges(conn)

    def _quarantine(self, kind: str, reason: str, record: dict[str, Any]) -> None:
        with write(self.sa) as conn:
            quarantine(conn, kind, reason, record)

    def quarantined(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The rows the database refused, oldest first: {id, kind, reason, record, ts}."""
        with read(self.sa) as conn:
            return read_quarantine(conn, limit)

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

    # -- predicted arm tags (classifier) ------------------------------------------------

    def write_arm_tags(self, tags: Sequence[ArmTags]) -> None:
        """Store predicted tags, replacing those the same arms had, in one transaction."""
        with write(self.sa) as conn:
            write_tags(conn, tags)

    def arm_tags(self, experiment: str | None = None) -> list[ArmTags]:
        """Predicted tags of one experiment's arms (of all experiments if None)."""
        with read(self.sa) as conn:
            return read_tags(conn, experiment)

    # -- decision history (targeting, export) --------------------------------------------

    def decision_history(self, key: str, phase: int) -> list[Row]:
        """(unit, arm, converted, context_json) of every logged decision of the phase: the
        recommender's training data, read in one query on the refit cadence."""
        with read(self.sa) as conn:
            return list(conn.execute(history_query(key, phase)).all())

    def decision_log(self, key: str, phase: int) -> Iterator[Row]:
        """Decisions with a propensity, oldest first (`decisions.log_query`). Streamed, for
        exports of any size."""
        with read(self.sa) as conn:
            yield from conn.execution_options(yield_per=5000).execute(log_query(key, phase))

    def unit_records(self, key: str, phase: int, metric: str, per_user: bool) -> list[UnitRecord]:
        """Every analysis unit of the phase with its first exposure and value of `metric`
        (`units.unit_records`), for breakdowns."""
        with read(self.sa) as conn:
            return list(unit_records(conn, key, phase, metric, per_user))

    def counts(self) -> dict[str, int]:
        """Row counts per table (for summaries and tests)."""
        with read(self.sa) as conn:
            return {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (EXPERIMENTS, DECISIONS, EVENTS, QUARANTINE)
            }
