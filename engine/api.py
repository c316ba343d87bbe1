"""`Engine`: the Python API an embedding service imports (apply, decide, record, report).

The decide path reads an in-memory snapshot (experiment specs, bucket ranges, bandit
weights) and appends the exposure to a buffer written in batches. Without a background
thread, SQL runs inline only when the snapshot or weights are due for a refresh or the buffer
for a flush; with `start_background()` (the HTTP service) the decide path runs no SQL at all,
except the insert-if-absent of a sticky bandit unit's first arm.

When the store is unreachable the engine degrades instead of failing: decisions come from
the last snapshot with reason `STALE`, and exposures and events go to the local spool (if
one is configured), which is drained into the store once it answers again.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.assignment import arm_for_bucket, arms_for_buckets, bucket, bucket_ranges, buckets
from engine.config import EngineConfig, load_config
from engine.db import StoreError, is_unavailable
from engine.decision import Decision, Reason
from engine.events import Event, EventError, RawRow, parse_event, read_rows, utcnow
from engine.loader import load_specs
from engine.spec import (
    EpsilonGreedyPolicy,
    ExperimentSpec,
    Kind,
    MetricType,
    Status,
    Targeting,
    ThompsonPolicy,
    UpdateCadence,
    declared_policy,
)
from engine.spool import Spool, SpoolFullError
from engine.store import ArmAggregate, Exposure, PlanItem, Store, StoredExperiment, check_event
from engine.targeting import HistoryRow, TargetingModel, fit_targeting
from policies.bandits.arm_stats import stats_from_sums
from policies.bandits.choice import NoEligibleArmError, choose_arm, draw_arms, draw_arms_per_unit, eligible_weights
from policies.bandits.registry import Policy
from policies.sufficient import ArmStats
from policies.targeting.blend import blend, choose_targeted

log = logging.getLogger("crosspromo")

SPEC_REFRESH_SECONDS = 5.0
MAX_UNIT_LENGTH = 256  # the decisions.unit column
SPEC_FORCED_REFRESH_SECONDS = 1.0  # an unknown key reloads the snapshot at most this often
INGEST_CHUNK = 500
STICKY_CACHE_SIZE = 100_000
SPOOL_WAIT_FOR_EXPOSURE = 600.0  # seconds a spooled conversion waits for its exposure to arrive
# Discounted sums ignore outcomes whose weight fell below this share of a fresh one.
DISCOUNT_CUTOFF = 0.01


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
    """`spooled` events were valid but the store was unreachable: they wait in the local spool."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    spooled: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "spooled": self.spooled,
                "rejected": [{"line": line, "error": err} for line, err in self.rejected]}


@dataclass
class _Live:
    """The decide path's view of one experiment, rebuilt when its version changes."""

    stored: StoredExperiment
    arms: tuple[str, ...]
    arm_facts: tuple[tuple[str, str, str, dict[str, Any]], ...]  # key, channel, campaign, payload
    channels: np.ndarray
    split: tuple[float, ...]  # the declared weights (A/B), computed once
    ranges: list[tuple[float, float]]
    policy: Policy | None
    cadence: UpdateCadence | None
    weights: np.ndarray | None = None
    weights_at: float = float("-inf")
    observations_since: int = 0
    sticky: dict[str, tuple[int, float]] = field(default_factory=dict)
    targeting: Targeting | None = None
    model: TargetingModel | None = None
    model_at: float = float("-inf")

    def eligible(self, context: Mapping[str, Any]) -> np.ndarray | None:
        return self.spec.eligibility.mask(self.arms, self.channels, context)

    def weights_due(self, now: float) -> bool:
        cadence = self.cadence or UpdateCadence()
        return (self.weights is None or self.observations_since >= cadence.every_outcomes
                or now - self.weights_at >= cadence.every_seconds)

    def model_due(self, now: float) -> bool:
        return self.targeting is not None and now - self.model_at >= self.targeting.refit_every_seconds

    @property
    def spec(self) -> ExperimentSpec:
        return self.stored.spec


def _build_live(stored: StoredExperiment) -> _Live:
    spec = stored.spec
    policy = declared_policy(spec)
    cadence = spec.policy.update if isinstance(spec.policy, ThompsonPolicy | EpsilonGreedyPolicy) else None
    return _Live(
        stored=stored,
        arms=spec.arm_keys,
        arm_facts=tuple((a.key, a.channel.value, a.campaign, dict(a.payload)) for a in spec.arms),
        channels=np.array([a.channel.value for a in spec.arms]),
        split=spec.weights,
        ranges=bucket_ranges(spec.weights, spec.traffic.coverage),
        policy=policy,
        cadence=cadence,
        targeting=spec.targeting if policy is not None and spec.targeting is not None and spec.targeting.active
        else None,
    )


def stats_for(spec: ExperimentSpec, aggregates: Sequence[ArmAggregate]) -> list[ArmStats]:
    """The sufficient statistics the experiment's metric calls for."""
    if spec.metric.type is MetricType.REVENUE:
        return [a.mean for a in aggregates]
    return [a.binary for a in aggregates]


def _weighted_stats(spec: ExperimentSpec, sums: np.ndarray) -> list[ArmStats]:
    """Stats from (arms, 4) weighted sums of (exposures, conversions, total, total_sq)."""
    n, conversions, total, total_sq = sums.T
    revenue = spec.metric.type is MetricType.REVENUE
    return stats_from_sums(spec.metric.type.value, n, total if revenue else conversions, total_sq)


class Engine:
    def __init__(self, store: Store, config: EngineConfig, rng: np.random.Generator,
                 clock: Callable[[], float] = time.monotonic, spool: Spool | None = None) -> None:
        self.store = store
        self.config = config
        self.spool = spool
        self._rng = rng
        self._clock = clock
        self._lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self._buffer: list[Exposure] = []
        self._last_flush = clock()
        self._live: dict[str, _Live] = {}
        self._specs_at = float("-inf")
        self._stale = False
        # Decision ids: a random 64-bit prefix per engine and a counter: unique across replicas
        # and restarts without a system call per decision. The counter is zero-padded so ids sort
        # in the order they were issued (decisions of one batch share a timestamp).
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = itertools.count()
        self._background: threading.Thread | None = None
        self._stopping = threading.Event()

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
        if self._background is not None:
            self._stopping.set()
            self._background.join()
            self._background = None
        self.flush()
        self.store.close()

    @property
    def stale(self) -> bool:
        """True while the store is unreachable (decisions are then served from the snapshot)."""
        return self._stale

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
        with self._lock:
            self._specs_at = float("-inf")
        return plan

    def experiments(self) -> list[StoredExperiment]:
        return [live.stored for live in self._snapshot().values()]

    def experiment(self, key: str) -> StoredExperiment:
        return self._get_live(key).stored

    def is_cached(self, key: str) -> bool:
        """Whether `key` is in the snapshot, so deciding for it needs no store access."""
        return key in self._live

    def _snapshot(self, force: bool = False) -> dict[str, _Live]:
        """The cached experiments, reloaded when due (or forced, at most once a second); the old
        ones while the store is down. Reloads back off on failure, so an outage costs one
        attempt per interval, not one per decision."""
        with self._lock:
            age = self._clock() - self._specs_at
            if age < (SPEC_FORCED_REFRESH_SECONDS if force else SPEC_REFRESH_SECONDS):
                return self._live
            self._specs_at = self._clock()
        try:
            stored = self.store.experiments()
        except Exception as exc:
            self._store_failed(exc, "loading experiments")
            if not self._live:
                raise StoreError("the store is unreachable and no experiments are cached",
                                 "check the database server; decisions resume when it answers") from None
            return self._live
        self._store_ok()
        with self._lock:
            self._live = {k: old if (old := self._live.get(k)) is not None and old.stored == s else _build_live(s)
                          for k, s in stored.items()}
            return self._live

    def _get_live(self, key: str) -> _Live:
        """The experiment's snapshot. With a background thread keeping it fresh, the decide path
        reloads only for a key it does not know yet."""
        live = (self._live if self._background is not None else self._snapshot()).get(key)
        if live is None:
            live = self._snapshot(force=True).get(key)
        if live is None:
            raise UnknownExperimentError(key, self._live)
        return live

    # -- decisions ---------------------------------------------------------------------

    def decide(self, experiment: str, unit: str, context: Mapping[str, Any] | None = None) -> Decision:
        """Which arm (campaign and channel) to use for `unit`; logs the exposure if in experiment."""
        return self._decide(self._get_live(experiment), str(unit), context or {})

    def decide_many(self, experiment: str, units: Sequence[str],
                    contexts: Sequence[Mapping[str, Any] | None] | None = None) -> list[Decision]:
        if contexts is not None and len(contexts) != len(units):
            raise ValueError(f"got {len(units)} units but {len(contexts)} contexts")
        live = self._get_live(experiment)
        names = [str(u) for u in units]
        ctxs = [c or {} for c in contexts] if contexts is not None else [{}] * len(names)
        spec = live.spec
        batchable = spec.status is Status.RUNNING and (
            spec.kind is Kind.AB_TEST or not (spec.traffic.sticky or live.targeting is not None))
        if not batchable or not names:
            return [self._decide(live, u, c) for u, c in zip(names, ctxs, strict=True)]
        return self._decide_batch(live, names, ctxs)

    def _decide_batch(self, live: _Live, units: list[str], contexts: list[Mapping[str, Any]]) -> list[Decision]:
        """`_decide` for many units of a running A/B test or plain bandit, vectorised: one numpy
        pass for the buckets and the draws; every unit gets exactly the answer `_decide` would give."""
        spec = live.spec
        for unit in units:
            _check_unit(unit)
        b = buckets(spec.seed, units)
        masks = [live.eligible(c) for c in contexts]
        if spec.kind is Kind.AB_TEST:
            indices = arms_for_buckets(b, live.ranges)
            for i, mask in enumerate(masks):
                if mask is not None and not mask.all():  # as in `_decide`: such a unit stays out
                    indices[i] = -1
            propensities = np.asarray(live.split)[np.maximum(indices, 0)]
            reason = Reason.SPLIT
        else:
            indices, propensities = self._draw_batch(live, b, masks)
            reason = Reason.BANDIT
        inside = np.flatnonzero(indices >= 0).tolist()
        decided = dict(zip(inside, self._inside_many(
            live, [units[i] for i in inside], indices[inside].tolist(), reason, b[inside].tolist(),
            propensities[inside].tolist(), [contexts[i] for i in inside]), strict=True))
        # Out: the fallback arm, except for a bandit unit in coverage with no eligible arm.
        for i in np.flatnonzero(indices < 0).tolist():
            arm = None if spec.kind is Kind.BANDIT and b[i] < spec.traffic.coverage else spec.fallback_arm
            decided[i] = self._outside(live, arm, Reason.DEFAULT, float(b[i]), masks[i])
        return [decided[i] for i in range(len(units))]

    def _draw_batch(self, live: _Live, b: np.ndarray, masks: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
        """Arms and propensities of a bandit's units in coverage, -1 for the others (and for units
        with no eligible arm): one draw for the units free to get any arm, one per eligibility row
        for the rest."""
        with self._lock:
            weights = self._bandit_weights(live)
        indices, propensities = np.full(b.size, -1, dtype=np.intp), np.zeros(b.size)
        covered = b < live.spec.traffic.coverage
        free = np.flatnonzero(covered & np.array([m is None for m in masks], dtype=bool))
        indices[free] = draw_arms(weights, self._rng, free.size)
        propensities[free] = weights[indices[free]]
        limited = [i for i in np.flatnonzero(covered).tolist() if (m := masks[i]) is not None and m.any()]
        if limited:
            draws = draw_arms_per_unit(weights, np.array([masks[i] for i in limited]), self._rng)
            indices[limited], propensities[limited] = draws.arms, draws.propensities
        return indices, propensities

    def _decide(self, live: _Live, unit: str, context: Mapping[str, Any]) -> Decision:
        spec = live.spec
        _check_unit(unit)
        mask = live.eligible(context)
        if spec.status in (Status.PAUSED, Status.STOPPED, Status.CONCLUDED):
            return self._outside(live, spec.winner or spec.fallback_arm, Reason.STOPPED, None, mask)
        b = bucket(spec.seed, unit)
        if spec.status is Status.DRAFT:
            return self._outside(live, spec.fallback_arm, Reason.DEFAULT, b, mask)

        if spec.kind is Kind.AB_TEST:
            index = arm_for_bucket(b, live.ranges)
            # Eligibility filters units before assignment, never arms after it: an A/B unit that
            # cannot receive every arm stays out, so exclusion cannot depend on the arm drawn.
            if index is None or (mask is not None and not mask.all()):
                return self._outside(live, spec.fallback_arm, Reason.DEFAULT, b, mask)
            return self._inside(live, unit, index, Reason.SPLIT, b, live.split[index], context)

        if b >= spec.traffic.coverage:
            return self._outside(live, spec.fallback_arm, Reason.DEFAULT, b, mask)
        held = live.sticky.get(unit) if spec.traffic.sticky else None
        reason = Reason.BANDIT
        if held is None:
            try:
                with self._lock:
                    scores = self._targeting_scores(live, unit, context)
                    if scores is None:
                        index, propensity = choose_arm(self._bandit_weights(live), mask, self._rng)
                    else:
                        assert live.targeting is not None
                        choice = choose_targeted(self._bandit_weights(live), scores, mask, live.targeting.strength,
                                                 live.targeting.temperature, self._rng)
                        index, propensity = choice.arm, choice.propensity
                        reason = Reason.TARGETED if choice.tilted else Reason.BANDIT
            except NoEligibleArmError:
                return self._outside(live, None, Reason.DEFAULT, b)
            if spec.traffic.sticky:
                index, propensity = self._claim(live, unit, index, propensity)
        else:
            index, propensity = held
        if mask is not None and not mask[index]:
            # A sticky unit whose channel opt-in changed: not eligible for its arm any more.
            return self._outside(live, None, Reason.DEFAULT, b)
        return self._inside(live, unit, index, reason, b, propensity, context)

    def probabilities(self, experiment: str, unit: str, context: Mapping[str, Any] | None = None) -> dict[str, float]:
        """The probability of every arm in a bandit's next draw for `unit` (the propensity its
        decision would log): the eligible bandit weights, tilted by targeting when it applies."""
        live = self._get_live(experiment)
        if live.policy is None:
            raise ValueError(f"{experiment!r} is an A/B test: its split is fixed by the bucket")
        context = context or {}
        mask = live.eligible(context)
        with self._lock:
            weights = self._bandit_weights(live)
            scores = self._targeting_scores(live, str(unit), context)
        if scores is None or live.targeting is None:
            p = eligible_weights(weights, mask)
        else:
            p, _ = blend(weights, scores, mask, live.targeting.strength, live.targeting.temperature)
        return dict(zip(live.arms, (float(x) for x in p), strict=True))

    def _targeting_scores(self, live: _Live, unit: str, context: Mapping[str, Any]) -> np.ndarray | None:
        """The unit's recommender scores, or None (no targeting, no model yet, or a cold start).
        Without a background thread the model is refitted inline when due, as weights are."""
        if live.targeting is None:
            return None
        if self._background is None and live.model_due(self._clock()):
            self._refit_targeting(live)
        return None if live.model is None else live.model.scores(unit, context)

    def _refit_targeting(self, live: _Live) -> None:
        """Refit the experiment's recommender from its logged decisions (one query)."""
        spec, targeting = live.spec, live.targeting
        assert targeting is not None
        index = {a: i for i, a in enumerate(live.arms)}
        try:
            self.flush()
            rows = self.store.decision_history(spec.key, spec.traffic.phase)
        except Exception as exc:
            self._store_failed(exc, "refitting the recommender")
            live.model_at = self._clock()  # keep the old model; retry on the next cadence
            return
        self._store_ok()
        history = [HistoryRow(unit, index[arm], bool(converted), json.loads(ctx) if ctx else {})
                   for unit, arm, converted, ctx in rows if arm in index]
        model = fit_targeting(spec, targeting, history, self._rng)
        with self._lock:
            live.model, live.model_at = model, self._clock()

    def _claim(self, live: _Live, unit: str, index: int, propensity: float) -> tuple[int, float]:
        """The sticky arm of `unit`: the first one any replica stored (ours if we were first).

        While the store is down the fresh draw is served but not remembered, so the unit is
        claimed for real once the store answers."""
        spec = live.spec
        try:
            held, held_propensity = self.store.claim_assignment(spec.key, spec.traffic.phase, unit,
                                                                live.arms[index], propensity)
        except Exception as exc:
            self._store_failed(exc, "claiming a sticky assignment")
            return index, propensity
        self._store_ok()
        if held in live.arms:  # else its arm left the experiment: the fresh draw stands
            index, propensity = live.arms.index(held), held_propensity
        with self._lock:
            if len(live.sticky) >= STICKY_CACHE_SIZE:
                live.sticky.clear()
            live.sticky[unit] = (index, propensity)
        return index, propensity

    def _outside(self, live: _Live, arm: str | None, reason: Reason, b: float | None,
                 mask: np.ndarray | None = None) -> Decision:
        index = live.arms.index(arm) if arm in live.arms else None
        if index is not None and mask is not None and not mask[index]:
            index = None  # never send over a channel the unit did not opt into
        key, channel, campaign, payload = live.arm_facts[index] if index is not None else (None, None, None, {})
        return Decision(live.spec.key, key, channel, campaign, reason, False, b, None, None, live.stored.version,
                        dict(payload))

    def _inside(self, live: _Live, unit: str, index: int, reason: Reason, b: float,
                propensity: float, context: Mapping[str, Any] | None = None) -> Decision:
        return self._inside_many(live, [unit], [index], reason, [b], [propensity], [context or {}])[0]

    def _inside_many(self, live: _Live, units: list[str], indices: list[int], reason: Reason, bs: list[float],
                     propensities: list[float], contexts: list[Mapping[str, Any]]) -> list[Decision]:
        """Decisions that put units in arms, their exposures appended to the write buffer."""
        spec, version, phase = live.spec, live.stored.version, live.spec.traffic.phase
        if self._stale:
            reason = Reason.STALE
        now, why = utcnow(), reason.value
        exposures, decisions = [], []
        for unit, index, b, propensity, context in zip(units, indices, bs, propensities, contexts, strict=True):
            arm, channel, campaign, payload = live.arm_facts[index]
            decision_id = f"{self._id_prefix}{next(self._id_counter):012x}"
            context_json = json.dumps(context, default=str, separators=(",", ":")) if context else None
            exposures.append(Exposure(decision_id, spec.key, version, phase, unit, arm, channel, b, propensity, why,
                                      now, context_json))
            decisions.append(Decision(spec.key, arm, channel, campaign, reason, True, b, propensity, decision_id,
                                      version, dict(payload)))
        with self._lock:
            self._buffer += exposures
            live.observations_since += len(exposures)
            due = len(self._buffer) >= self.config.exposure_max_buffered or self._background is None and (
                len(self._buffer) >= self.config.exposure_batch_size
                or self._clock() - self._last_flush >= self.config.exposure_flush_seconds)
        if due:
            self.flush()
        return decisions

    def _bandit_weights(self, live: _Live) -> np.ndarray:
        """The cached weights; refreshed inline when due unless a background thread does it."""
        if live.weights is None or (self._background is None and live.weights_due(self._clock())):
            self._refresh_weights(live)
        assert live.weights is not None
        return live.weights

    def _refresh_weights(self, live: _Live) -> None:
        try:
            weights = self._compute_weights(live)
        except Exception as exc:
            self._store_failed(exc, "refreshing bandit weights")
            if live.weights is None and live.policy is not None:  # nothing cached: the prior's weights
                empty = stats_for(live.spec, [ArmAggregate(k, 0, 0, 0.0, 0.0) for k in live.arms])
                live.weights = live.policy.weights(empty, self._rng)
            return
        self._store_ok()
        live.weights, live.weights_at, live.observations_since = weights, self._clock(), 0

    def weights(self, key: str) -> np.ndarray:
        """Current selection probabilities per arm (the declared split for an A/B test)."""
        return self._compute_weights(self._get_live(key))

    def _compute_weights(self, live: _Live) -> np.ndarray:
        """The policy's weights from the stored aggregates (flushing this engine's exposures first).

        `discount` and `window` policies read the most recent exposures instead of all-time
        sums: a window weighs its last `window` exposures equally; a discount weighs an exposure
        `gamma ** (newer exposures // every_outcomes)`, dropping weights under DISCOUNT_CUTOFF.
        """
        self.flush()
        spec = live.spec
        if live.policy is None:
            return np.asarray(spec.weights, dtype=float)
        discount = getattr(spec.policy, "discount", None)
        window = getattr(spec.policy, "window", None)
        if (discount is None or discount == 1) and window is None:
            aggregates = self.store.arm_aggregates(spec.key, spec.traffic.phase, spec.arm_keys)
            return live.policy.weights(stats_for(spec, aggregates), self._rng)
        if window is not None:
            sums = self.store.recent_sums(spec.key, spec.traffic.phase, spec.arm_keys, limit=window, bucket=window)
            return live.policy.weights(_weighted_stats(spec, sums[:, 0, :]), self._rng)
        step = (live.cadence or UpdateCadence()).every_outcomes
        buckets = int(np.log(DISCOUNT_CUTOFF) / np.log(discount)) + 1
        sums = self.store.recent_sums(spec.key, spec.traffic.phase, spec.arm_keys, limit=buckets * step, bucket=step)
        decay = discount ** np.arange(sums.shape[1])
        return live.policy.weights(_weighted_stats(spec, np.einsum("abk,b->ak", sums, decay)), self._rng)

    # -- writes and their failures -----------------------------------------------------

    def flush(self) -> int:
        """Write buffered exposures; returns how many were written (0 if they went to the spool).

        One flush at a time: a caller that needs the buffer in the store (a conversion about to
        name a decision) waits for a flush already under way instead of finding the buffer empty.
        """
        with self._flush_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
                self._last_flush = self._clock()
            if not batch:
                return 0
            try:
                written = self.store.log_exposures(batch)
            except Exception as exc:
                if self.spool is None or not is_unavailable(exc):
                    self._requeue(batch)
                    raise
                self._store_failed(exc, "logging exposures")
                try:
                    self.spool.append([{"kind": "exposure", **_exposure_record(e)} for e in batch])
                except SpoolFullError:
                    self._requeue(batch)
                    raise
                return 0
            self._store_ok()
            return written

    def _requeue(self, batch: list[Exposure]) -> None:
        with self._lock:
            self._buffer = batch + self._buffer  # kept for the next flush

    def _store_failed(self, exc: Exception, doing: str) -> None:
        if not is_unavailable(exc):
            raise exc
        if not self._stale:
            log.warning("store unreachable while %s: %s; serving from the snapshot", doing, exc)
        self._stale = True

    def _store_ok(self) -> None:
        if self._stale:
            log.warning("store reachable again")
        self._stale = False

    def drain_spool(self) -> int:
        """Write what the spool holds into the store (idempotently); returns how many records."""
        if self.spool is None:
            return 0
        return self.spool.drain(self._replay)

    def _replay(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write spooled records; returns the conversions to keep for later.

        Another replica may still hold the exposure a conversion names in its own spool, so
        such conversions wait (up to SPOOL_WAIT_FOR_EXPOSURE) instead of being dropped.
        """
        exposures = [_exposure_from_record(r) for r in records if r["kind"] == "exposure"]
        self.store.log_exposures(exposures)
        events = [(i, parse_event(r["event"])) for i, r in enumerate(records) if r["kind"] == "event"]
        known = {k: v.stored for k, v in self._snapshot(force=True).items()}  # an adopted spool may name any
        keep = []
        now = time.time()
        for start in range(0, len(events), INGEST_CHUNK):
            outcome = self.store.apply_events(events[start:start + INGEST_CHUNK], known)
            for index, reason in outcome.rejected:
                record = records[index]
                if index in outcome.missing and now - record["spooled_at"] < SPOOL_WAIT_FOR_EXPOSURE:
                    keep.append(record)
                else:
                    log.warning("spooled event %s rejected on replay: %s", record["event"].get("event_id"), reason)
        return keep

    def maintain(self) -> None:
        """One round of background upkeep: flush, drain the spool, refresh snapshot and weights.

        Each step runs on its own: an outage skips the round's writes, and an error in one step
        is logged without stopping the others (the next round retries it)."""
        for step in (self.flush, self._check_recovery, self.drain_spool):
            try:
                step()
            except Exception as exc:
                if is_unavailable(exc):
                    self._store_failed(exc, "maintenance")
                    return
                log.exception("maintenance step %s failed", step.__name__)
        now = self._clock()
        for live in list(self._snapshot().values()):
            if live.policy is not None and live.weights_due(now):
                self._refresh_weights(live)
            if live.model_due(now):
                self._refit_targeting(live)

    def _check_recovery(self) -> None:
        if self._stale:
            self.store.ping()
            self._store_ok()

    def start_background(self, interval: float = 0.2) -> None:
        """Move flushing and refreshing off the decide path, into a daemon thread."""
        if self._background is not None:
            return
        self._snapshot(force=True)

        def loop() -> None:
            while not self._stopping.wait(interval):
                try:
                    self.maintain()
                except Exception:  # never let upkeep die; the next round retries
                    log.exception("background maintenance failed")

        self._background = threading.Thread(target=loop, name="crosspromo-maintenance", daemon=True)
        self._background.start()

    # -- outcomes ----------------------------------------------------------------------

    def record(self, event: Mapping[str, Any] | Event) -> bool:
        """Apply one event; True if new (or spooled), False if its `event_id` was already recorded.
        Raises `EventError` with the reason for an invalid event."""
        summary = self.ingest([event])
        if summary.rejected:
            raise EventError(summary.rejected[0][1])
        return summary.accepted + summary.spooled == 1

    def ingest(self, events: Iterable[Mapping[str, Any] | Event | RawRow],
               progress: Callable[[int], None] | None = None) -> IngestSummary:
        """Apply events in chunks of one transaction each. Bad events are reported by line
        (`RawRow.line`, else their 1-based position) and skipped; good ones are kept."""
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
            known = self._snapshot(force=True)
        stored = {k: v.stored for k, v in known.items()}
        try:
            self.flush()  # conversions may name decisions still in the buffer
            outcome = self.store.apply_events(chunk, stored)
        except Exception as exc:
            if self.spool is None or not is_unavailable(exc):
                raise
            self._store_failed(exc, "recording events")
            self._spool_events(chunk, stored, summary)
        else:
            self._store_ok()
            summary.accepted += outcome.accepted
            summary.duplicates += outcome.duplicates
            if self.spool is not None and outcome.missing:
                # The exposure may still be in another replica's buffer or spool: wait for it.
                waiting = [(i, ev) for i, ev in chunk if i in outcome.missing]
                self._spool_events(waiting, stored, summary)
            summary.rejected += [(i, reason) for i, reason in outcome.rejected if i not in outcome.missing
                                 or self.spool is None]
        with self._lock:
            for _, ev in chunk:
                if ev.experiment in known:
                    known[ev.experiment].observations_since += 1
        if progress is not None:
            progress(len(chunk))

    def _spool_events(self, chunk: list[tuple[int, Event]], known: dict[str, StoredExperiment],
                      summary: IngestSummary) -> None:
        """Keep the events the snapshot can vouch for; the rest are rejected now, not on replay."""
        keep = []
        for index, ev in chunk:
            try:
                check_event(ev, known)
            except EventError as exc:
                summary.rejected.append((index, str(exc)))
            else:
                keep.append({"kind": "event", "event": ev.model_dump(mode="json"), "spooled_at": time.time()})
        assert self.spool is not None
        self.spool.append(keep)
        summary.spooled += len(keep)

    # -- reports -----------------------------------------------------------------------

    def aggregates(self, key: str) -> tuple[StoredExperiment, list[ArmAggregate]]:
        self.flush()
        stored = self.experiment(key)
        spec = stored.spec
        return stored, self.store.arm_aggregates(spec.key, spec.traffic.phase, spec.arm_keys)


def _check_unit(unit: str) -> None:
    if not 0 < len(unit) <= MAX_UNIT_LENGTH:
        raise ValueError(f"unit: must be 1 to {MAX_UNIT_LENGTH} characters long")


def _exposure_record(e: Exposure) -> dict[str, Any]:
    return {f: (v.isoformat() if isinstance(v, datetime) else v) for f, v in e._asdict().items()}


def _exposure_from_record(r: dict[str, Any]) -> Exposure:
    values = {k: v for k, v in r.items() if k != "kind"}
    values["ts"] = datetime.fromisoformat(values["ts"])
    return Exposure(**values)
