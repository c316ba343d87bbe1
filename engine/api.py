"""`Engine`: the Python API an embedding service imports (apply, decide, record, report).

The decide path reads an in-memory snapshot (experiment specs, bucket ranges, bandit
weights) and appends the exposure to a buffer written in batches; SQL runs only when the
snapshot or the weights are due for a refresh, or the buffer for a flush.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.assignment import bucket, bucket_ranges, choose_arm
from engine.config import EngineConfig, load_config
from engine.decision import Decision, Reason
from engine.events import Event, EventError, RawRow, parse_event, read_rows, utcnow
from engine.loader import load_specs
from engine.spec import (
    EpsilonGreedyPolicy,
    ExperimentSpec,
    Kind,
    MetricType,
    Status,
    ThompsonPolicy,
    UpdateCadence,
)
from engine.store import ArmAggregate, Exposure, PlanItem, Store, StoredExperiment
from policies.choice import NoEligibleArmError, draw_arms, eligible_weights
from policies.registry import Policy, make_policy
from policies.stats import ArmStats

SPEC_REFRESH_SECONDS = 5.0
INGEST_CHUNK = 500


class UnknownExperimentError(KeyError):
    def __init__(self, key: str, known: Iterable[str]) -> None:
        super().__init__(key)
        self.key = key
        self.hint = f"known experiments: {', '.join(sorted(known)) or '(none: run crosspromo apply)'}"

    def __str__(self) -> str:
        return f"unknown experiment {self.key!r}"


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


@dataclass
class IngestSummary:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates,
                "rejected": [{"line": line, "error": err} for line, err in self.rejected]}


@dataclass
class _Live:
    """The decide path's view of one experiment, rebuilt when its version changes."""

    stored: StoredExperiment
    arms: tuple[str, ...]
    channels: np.ndarray
    ranges: list[tuple[float, float]]
    policy: Policy | None
    cadence: UpdateCadence | None
    weights: np.ndarray | None = None
    weights_at: float = float("-inf")
    observations_since: int = 0

    @property
    def spec(self) -> ExperimentSpec:
        return self.stored.spec


def _build_live(stored: StoredExperiment) -> _Live:
    spec = stored.spec
    policy, cadence = None, None
    if isinstance(spec.policy, ThompsonPolicy | EpsilonGreedyPolicy):
        params = spec.policy.model_dump(exclude={"name", "update"})
        policy = make_policy(spec.policy.name, metric=spec.metric.type.value, **params)
        cadence = spec.policy.update
    return _Live(
        stored=stored,
        arms=spec.arm_keys,
        channels=np.array([a.channel.value for a in spec.arms]),
        ranges=bucket_ranges(spec.weights, spec.traffic.coverage),
        policy=policy,
        cadence=cadence,
    )


def stats_for(spec: ExperimentSpec, aggregates: Sequence[ArmAggregate]) -> list[ArmStats]:
    """The sufficient statistics the experiment's metric calls for."""
    if spec.metric.type is MetricType.REVENUE:
        return [a.mean for a in aggregates]
    return [a.binary for a in aggregates]


class Engine:
    def __init__(self, store: Store, config: EngineConfig, rng: np.random.Generator,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.config = config
        self._rng = rng
        self._clock = clock
        self._lock = threading.RLock()
        self._buffer: list[Exposure] = []
        self._last_flush = clock()
        self._live: dict[str, _Live] = {}
        self._specs_at = float("-inf")

    @classmethod
    def open(cls, url: str | None = None, *, seed: int | None = None,
             config: EngineConfig | None = None) -> Engine:
        """Open the store at `url` (default: CROSSPROMO_DATABASE_URL, then configs/engine.yaml).

        `seed` makes bandit draws reproducible; A/B assignment never depends on it.
        """
        config = config or load_config()
        return cls(Store(url or config.database_url), config, np.random.default_rng(seed))

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.flush()
        self.store.close()

    # -- declarations ------------------------------------------------------------------

    def apply(self, items: Iterable[Path | str | ExperimentSpec], dry_run: bool = False) -> Plan:
        """Create or update experiments. Unsafe changes to a running A/B test are refused as a
        whole: with `dry_run=False` nothing is written and `UnsafeChangeError` is raised."""
        items = list(items)
        specs = [i for i in items if isinstance(i, ExperimentSpec)]
        paths = [Path(i) for i in items if not isinstance(i, ExperimentSpec)]
        specs += load_specs(paths) if paths else []
        plan = Plan(tuple(self.store.apply(s, dry_run=True) for s in specs), dry_run)
        if dry_run:
            return plan
        if plan.refused:
            raise UnsafeChangeError(plan)
        plan = Plan(tuple(self.store.apply(s) for s in specs), dry_run)
        with self._lock:
            self._specs_at = float("-inf")
        return plan

    def experiments(self) -> list[StoredExperiment]:
        return [live.stored for live in self._snapshot().values()]

    def experiment(self, key: str) -> StoredExperiment:
        return self._get_live(key).stored

    def _snapshot(self) -> dict[str, _Live]:
        with self._lock:
            if self._clock() - self._specs_at >= SPEC_REFRESH_SECONDS:
                stored = self.store.experiments()
                live = {}
                for key, s in stored.items():
                    old = self._live.get(key)
                    live[key] = old if old is not None and old.stored == s else _build_live(s)
                self._live = live
                self._specs_at = self._clock()
            return self._live

    def _get_live(self, key: str) -> _Live:
        live = self._snapshot().get(key)
        if live is None:
            live = self._snapshot_now().get(key)
        if live is None:
            raise UnknownExperimentError(key, self._live)
        return live

    def _snapshot_now(self) -> dict[str, _Live]:
        with self._lock:
            self._specs_at = float("-inf")
            return self._snapshot()

    # -- decisions ---------------------------------------------------------------------

    def decide(self, experiment: str, unit: str, context: Mapping[str, Any] | None = None) -> Decision:
        """Which arm (campaign and channel) to use for `unit`; logs the exposure if in experiment."""
        live = self._get_live(experiment)
        with self._lock:
            decision = self._decide(live, str(unit), context or {})
        return decision

    def decide_many(self, experiment: str, units: Sequence[str],
                    contexts: Sequence[Mapping[str, Any] | None] | None = None) -> list[Decision]:
        if contexts is not None and len(contexts) != len(units):
            raise ValueError(f"got {len(units)} units but {len(contexts)} contexts")
        live = self._get_live(experiment)
        ctxs = contexts or [None] * len(units)
        with self._lock:
            return [self._decide(live, str(u), c or {}) for u, c in zip(units, ctxs, strict=True)]

    def _decide(self, live: _Live, unit: str, context: Mapping[str, Any]) -> Decision:
        spec = live.spec
        if spec.status in (Status.PAUSED, Status.STOPPED, Status.CONCLUDED):
            return self._outside(live, spec.winner or spec.fallback_arm, Reason.STOPPED, None)
        b = bucket(spec.seed, unit)
        if spec.status is Status.DRAFT:
            return self._outside(live, spec.fallback_arm, Reason.DEFAULT, b)
        mask = self._eligible(live, context)

        if spec.kind is Kind.AB_TEST:
            index = choose_arm(b, live.ranges)
            # Eligibility filters units before assignment, never arms after it: an A/B unit that
            # cannot receive every arm stays out, so exclusion cannot depend on the arm drawn.
            if index is None or (mask is not None and not mask.all()):
                return self._outside(live, spec.fallback_arm, Reason.DEFAULT, b, mask)
            return self._inside(live, unit, index, Reason.SPLIT, b, spec.weights[index])

        if b >= spec.traffic.coverage:
            return self._outside(live, spec.fallback_arm, Reason.DEFAULT, b, mask)
        try:
            weights = eligible_weights(self._weights(live), mask)
        except NoEligibleArmError:
            return self._outside(live, None, Reason.DEFAULT, b)
        index = int(draw_arms(weights, self._rng, 1)[0])
        return self._inside(live, unit, index, Reason.BANDIT, b, float(weights[index]))

    def _eligible(self, live: _Live, context: Mapping[str, Any]) -> np.ndarray | None:
        attr = live.spec.eligibility.channels_from
        if attr is None or attr not in context:
            return None
        allowed = context[attr]
        if isinstance(allowed, str):
            allowed = [c.strip() for c in allowed.split(",") if c.strip()]
        return np.isin(live.channels, list(allowed))

    def _outside(self, live: _Live, arm: str | None, reason: Reason, b: float | None,
                 mask: np.ndarray | None = None) -> Decision:
        spec = live.spec
        chosen = next((a for a in spec.arms if a.key == arm), None)
        if chosen is not None and mask is not None and not mask[spec.arm_keys.index(chosen.key)]:
            chosen = None  # never send over a channel the unit did not opt into
        return Decision(
            experiment=spec.key, arm=chosen.key if chosen else None,
            channel=chosen.channel.value if chosen else None,
            campaign=chosen.campaign if chosen else None, reason=reason, in_experiment=False,
            bucket=b, propensity=None, decision_id=None, experiment_version=live.stored.version,
            payload=dict(chosen.payload) if chosen else {},
        )

    def _inside(self, live: _Live, unit: str, index: int, reason: Reason, b: float,
                propensity: float) -> Decision:
        spec = live.spec
        arm = spec.arms[index]
        decision_id = uuid.uuid4().hex
        self._buffer.append(Exposure(decision_id, spec.key, live.stored.version, spec.traffic.phase, unit,
                                     arm.key, arm.channel.value, b, propensity, reason.value, utcnow()))
        live.observations_since += 1
        if (len(self._buffer) >= self.config.exposure_batch_size
                or self._clock() - self._last_flush >= self.config.exposure_flush_seconds):
            self.flush()
        return Decision(
            experiment=spec.key, arm=arm.key, channel=arm.channel.value, campaign=arm.campaign,
            reason=reason, in_experiment=True, bucket=b, propensity=propensity,
            decision_id=decision_id, experiment_version=live.stored.version, payload=dict(arm.payload),
        )

    def _weights(self, live: _Live) -> np.ndarray:
        now = self._clock()
        cadence = live.cadence or UpdateCadence()
        if (live.weights is None or live.observations_since >= cadence.every_outcomes
                or now - live.weights_at >= cadence.every_seconds):
            live.weights = self._compute_weights(live)
            live.weights_at = now
            live.observations_since = 0
        return live.weights

    def weights(self, key: str) -> np.ndarray:
        """Current selection probabilities per arm (the declared split for an A/B test)."""
        return self._compute_weights(self._get_live(key))

    def _compute_weights(self, live: _Live) -> np.ndarray:
        """The policy's weights from the stored aggregates (flushing this engine's exposures first)."""
        self.flush()
        spec = live.spec
        if live.policy is None:
            return np.asarray(spec.weights, dtype=float)
        aggregates = self.store.arm_aggregates(spec.key, spec.traffic.phase, spec.arm_keys)
        return live.policy.weights(stats_for(spec, aggregates), self._rng)

    def flush(self) -> int:
        """Write buffered exposures; returns how many were written."""
        with self._lock:
            batch, self._buffer = self._buffer, []
            self._last_flush = self._clock()
            if not batch:
                return 0
            try:
                return self.store.log_exposures(batch)
            except Exception:
                self._buffer = batch + self._buffer  # keep them for the next flush
                raise

    # -- outcomes ----------------------------------------------------------------------

    def record(self, event: Mapping[str, Any] | Event) -> bool:
        """Apply one event; True if new, False if its `event_id` was already recorded.
        Raises `EventError` with the reason for an invalid event."""
        summary = self.ingest([event])
        if summary.rejected:
            raise EventError(summary.rejected[0][1])
        return summary.accepted == 1

    def ingest(self, events: Iterable[Mapping[str, Any] | Event | RawRow],
               progress: Callable[[int], None] | None = None) -> IngestSummary:
        """Apply events in chunks of one transaction each. Bad events are reported by line
        (`RawRow.line`, else their 1-based position) and skipped; good ones are kept."""
        self.flush()
        summary = IngestSummary()
        chunk: list[tuple[int, Event]] = []
        for position, item in enumerate(events, start=1):
            line, raw = (item.line, item.data) if isinstance(item, RawRow) else (position, item)
            if isinstance(item, RawRow) and item.error:
                summary.rejected.append((line, item.error))
                continue
            try:
                chunk.append((line, parse_event(raw)))
            except EventError as exc:
                summary.rejected.append((line, str(exc)))
            if len(chunk) >= INGEST_CHUNK:
                self._apply_chunk(chunk, summary, progress)
                chunk = []
        self._apply_chunk(chunk, summary, progress)
        summary.rejected.sort()
        return summary

    def ingest_file(self, path: Path, progress: Callable[[int], None] | None = None) -> IngestSummary:
        return self.ingest(read_rows(path), progress)

    def _apply_chunk(self, chunk: list[tuple[int, Event]], summary: IngestSummary,
                     progress: Callable[[int], None] | None) -> None:
        if not chunk:
            return
        known = self._snapshot()
        if any(ev.experiment not in known for _, ev in chunk):
            known = self._snapshot_now()
        outcome = self.store.apply_events(chunk, {k: v.stored for k, v in known.items()})
        summary.accepted += outcome.accepted
        summary.duplicates += outcome.duplicates
        summary.rejected += outcome.rejected
        with self._lock:
            for _, ev in chunk:
                if ev.experiment in known:
                    known[ev.experiment].observations_since += 1
        if progress is not None:
            progress(len(chunk))

    # -- reports -----------------------------------------------------------------------

    def aggregates(self, key: str) -> tuple[StoredExperiment, list[ArmAggregate]]:
        self.flush()
        stored = self.experiment(key)
        spec = stored.spec
        return stored, self.store.arm_aggregates(spec.key, spec.traffic.phase, spec.arm_keys)
