"""`Engine`: the Python API an embedding service imports (apply, decide, record, report).

A thin facade over the modules that do the work: `snapshot` (the in-memory view of the
experiments), `decide` (the decide path), `writes` (the exposure buffer and the spool),
`upkeep` (weights, targeting refits, the background thread) and `intake` (events).

Without a background thread, SQL runs inline only when the snapshot or weights are due for a
refresh or the buffer for a flush; with `start_background()` (the HTTP service) the decide
path runs no SQL at all, except the insert-if-absent of a sticky bandit unit's first arm.
When the store is unreachable the engine degrades instead of failing: decisions come from
the last snapshot with reason `STALE`, and exposures and events go to the local spool (if
one is configured), which is drained into the store once it answers again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.config import EngineConfig, load_config
from engine.decide import Decider
from engine.decision import Decision
from engine.events import Event, InputFormat, RawRow
from engine.graph import GraphSummary, ingest_edge_file, ingest_edges
from engine.health import StoreHealth
from engine.intake import KEPT_REJECTIONS, IngestSummary, Intake, Progress, Reject
from engine.loader import load_specs
from engine.snapshot import Live, Snapshot, UnknownExperimentError, stats_for
from engine.spec import ExperimentSpec
from engine.spool import Spool
from engine.store import ArmAggregate, PlanItem, Store, StoredExperiment, Tally
from engine.upkeep import Upkeep
from engine.writes import ExposureWriter

if TYPE_CHECKING:
    from engine.report import Report

__all__ = ["Engine", "IngestSummary", "Plan", "UnknownExperimentError", "UnsafeChangeError", "stats_for"]


class UnsafeChangeError(ValueError):
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        refused = plan.refused
        super().__init__("; ".join(f"{i.key}: {i.reason}" for i in refused))
        self.hint = refused[0].hint if refused else ""


@dataclass(frozen=True)
class Plan:
    items: tuple[PlanItem, ...]
    dry_run: bool

    @property
    def refused(self) -> list[PlanItem]:
        return [i for i in self.items if i.action == "refused"]


class Engine:
    def __init__(self, store: Store, config: EngineConfig, rng: np.random.Generator,
                 clock: Callable[[], float] = time.monotonic, spool: Spool | None = None) -> None:
        self.store = store
        self.config = config
        # One lock guards what the parts share: the snapshot, the buffer, weights and the rng.
        lock = threading.RLock()
        self.health = StoreHealth()
        self.snapshot = Snapshot(store, self.health, clock, lock)
        self.writer = ExposureWriter(store, config, self.health, spool, clock, lock)
        self.upkeep = Upkeep(store, self.snapshot, self.writer, self.health, rng, clock, lock, config.channel_costs)
        self.decider = Decider(store, self.upkeep, self.writer, self.health, rng, lock)
        self.intake = Intake(store, self.snapshot, self.writer, self.health, lock)

    @classmethod
    def open(cls, url: str | None = None, *, seed: int | None = None, config: EngineConfig | None = None,
             spool: Spool | None = None) -> Engine:
        """Open the store at `url` (default: CROSSPROMO_DATABASE_URL, then configs/engine.yaml).

        `seed` makes bandit draws reproducible; A/B assignment never depends on it. With a
        `spool`, writes the store cannot take wait there instead of raising.
        """
        config = config or load_config()
        return cls(Store(url or config.database_url), config, np.random.default_rng(seed), spool=spool)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.upkeep.stop()
        self.flush()
        self.store.close()

    @property
    def spool(self) -> Spool | None:
        return self.writer.spool

    @property
    def stale(self) -> bool:
        """True while the store is unreachable (decisions are then served from the snapshot)."""
        return self.health.stale

    # -- declarations ------------------------------------------------------------------

    def apply(self, items: Iterable[Path | str | ExperimentSpec], dry_run: bool = False) -> Plan:
        """Create or update experiments. Unsafe changes to a running A/B test are refused as a
        whole: with `dry_run=False` nothing is written and `UnsafeChangeError` is raised."""
        items = list(items)
        specs = [i for i in items if isinstance(i, ExperimentSpec)]
        paths = [Path(i) for i in items if not isinstance(i, ExperimentSpec)]
        specs += load_specs(paths) if paths else []
        plan = Plan(tuple(self.store.apply(specs, dry_run=dry_run)), dry_run)
        if dry_run:
            return plan
        if plan.refused:
            raise UnsafeChangeError(plan)
        self.snapshot.invalidate()
        return plan

    def experiments(self) -> list[StoredExperiment]:
        return [live.stored for live in self.snapshot.load().values()]

    def experiment(self, key: str) -> StoredExperiment:
        return self._live(key).stored

    def _live(self, key: str) -> Live:
        return self.snapshot.get(key, reload_due=not self.upkeep.running)

    # -- decisions ---------------------------------------------------------------------

    def decide(self, experiment: str, unit: str, context: Mapping[str, Any] | None = None) -> Decision:
        """Which arm (campaign and channel) to use for `unit`; logs the exposure if in experiment."""
        return self.decider.decide(self._live(experiment), str(unit), context or {})

    def decide_many(self, experiment: str, units: Sequence[str],
                    contexts: Sequence[Mapping[str, Any] | None] | None = None) -> Sequence[Decision]:
        """`decide` for every unit (logged alike). The answer is a sequence of `Decision`; a batch
        of a running A/B test or plain bandit keeps it column by column until it is read."""
        if contexts is not None and len(contexts) != len(units):
            raise ValueError(f"got {len(units)} units but {len(contexts)} contexts")
        live = self._live(experiment)
        names = [str(u) for u in units]
        ctxs = [c or {} for c in contexts] if contexts is not None else [{}] * len(names)
        return self.decider.decide_many(live, names, ctxs)

    def decides_in_memory(self, experiment: str) -> bool:
        """Whether a decision for `experiment` touches no store inside `flush_deferred()`: the
        HTTP service then decides on its event loop instead of hopping to a thread."""
        live = self.snapshot.live.get(experiment)
        return live is not None and self.decider.in_memory(live)

    def flush_deferred(self) -> AbstractContextManager[None]:
        """Decisions made inside leave a flush they make due to the caller (see `flush_due`)."""
        return self.decider.flush_deferred()

    @property
    def flush_due(self) -> bool:
        """The write buffer is full: the caller of deferred decisions should `flush()` now."""
        return self.writer.full

    def probabilities(self, experiment: str, unit: str, context: Mapping[str, Any] | None = None) -> dict[str, float]:
        """The probability of every arm in a bandit's next draw for `unit` (the propensity its
        decision would log)."""
        return self.decider.probabilities(self._live(experiment), str(unit), context or {})

    def weights(self, key: str) -> np.ndarray:
        """Current selection probabilities per arm (the declared split for an A/B test)."""
        return self.upkeep.compute_weights(self._live(key))

    # -- writes and upkeep -------------------------------------------------------------

    def flush(self) -> int:
        """Write buffered exposures; returns how many were written (0 if they went to the spool)."""
        return self.writer.flush()

    def drain_spool(self) -> int:
        """Write what the spool holds into the store (idempotently); returns how many records."""
        return self.upkeep.drain_spool()

    def maintain(self) -> None:
        """One round of upkeep: flush, drain the spool, refresh snapshot, weights and models."""
        self.upkeep.maintain()

    def start_background(self, interval: float = 0.2) -> None:
        """Move flushing and refreshing off the decide path, into a daemon thread."""
        self.upkeep.start(interval)

    # -- outcomes ----------------------------------------------------------------------

    def record(self, event: Mapping[str, Any] | Event) -> bool:
        """Apply one event; True if new (or spooled), False if its `event_id` was already recorded.
        Raises `EventError` with the reason for an invalid event."""
        return self.intake.record(event)

    def ingest(self, events: Iterable[Mapping[str, Any] | Event | RawRow], progress: Progress | None = None,
               on_reject: Reject | None = None, keep_rejected: int | None = None) -> IngestSummary:
        """Apply events in chunks of one transaction each; bad events are reported by line (to
        `on_reject` as found, and in the summary: the first `keep_rejected`, all if None) and
        skipped, good ones kept."""
        return self.intake.ingest(events, progress, on_reject, keep_rejected)

    def ingest_file(self, path: Path, progress: Progress | None = None, on_reject: Reject | None = None,
                    fmt: InputFormat | None = None, keep_rejected: int | None = KEPT_REJECTIONS) -> IngestSummary:
        """Ingest a JSONL or CSV file, or standard input for `-`. The summary keeps the first
        `keep_rejected` rejections (and counts them all); `on_reject` sees every one."""
        return self.intake.ingest_file(path, progress, on_reject, fmt, keep_rejected)

    # -- social graph ------------------------------------------------------------------

    def ingest_graph(self, edges: Iterable[Mapping[str, Any] | RawRow], progress: Progress | None = None,
                     on_reject: Reject | None = None, keep_rejected: int | None = None) -> GraphSummary:
        """Upsert social-graph edges (`engine.graph`): idempotent on (source, target, kind), bad
        rows reported by line and skipped. Social recommenders see them at their next refit."""
        return ingest_edges(self.store, edges, progress, on_reject, keep_rejected)

    def ingest_graph_file(self, path: Path, progress: Progress | None = None, on_reject: Reject | None = None,
                          fmt: InputFormat | None = None, keep_rejected: int | None = KEPT_REJECTIONS) -> GraphSummary:
        """`ingest_graph` from a JSONL or CSV file of edges, or standard input for `-`."""
        return ingest_edge_file(self.store, path, progress, on_reject, fmt, keep_rejected)

    # -- reports -----------------------------------------------------------------------

    def aggregates(self, key: str) -> tuple[StoredExperiment, list[ArmAggregate]]:
        self.flush()
        stored = self.experiment(key)
        spec = stored.spec
        return stored, self.store.arm_aggregates(spec.key, spec.traffic.phase, spec.arm_keys)

    def tally(self, key: str) -> tuple[StoredExperiment, Tally]:
        """The experiment and the per-unit sums of its metrics in the current phase."""
        self.flush()
        stored = self.experiment(key)
        spec = stored.spec
        return stored, self.store.tally(spec.key, spec.traffic.phase, spec.arm_keys)

    def report(self, key: str, seed: int = 0, by: str | None = None) -> Report:
        """The experiment's report (`engine.report`); `.to_dict()` is the JSON contract. `by`
        adds the exploratory breakdown by `channel` or a context attribute."""
        from engine.report import build_report  # the report module builds on this one

        return build_report(self, key, seed, by)

    def costs(self, spec: ExperimentSpec) -> tuple[float, ...]:
        """Each arm's cost per decision (declared, else the channel's default in the settings)."""
        return spec.arm_costs(self.config.channel_costs)
