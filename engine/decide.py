"""The decide path: which arm (campaign and channel) a unit gets, and the exposure it logs.

Reads only the snapshot and the cached weights; the exposure goes to the write buffer. The
one store call is the insert-if-absent of a sticky bandit unit's first arm. Batches of a
running A/B test or plain bandit are vectorised: one numpy pass for buckets and draws, and
every unit gets exactly the answer a single decision would give. Such a batch stays column by
column (`DecisionBatch` for the caller, one `ExposureBatch` block in the write buffer): no
object per unit is built until the caller reads one.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from engine.assignment import arm_for_bucket, arms_for_buckets, bucket, buckets
from engine.covariate import covariate_value
from engine.decision import Decision, DecisionBatch, Reason
from engine.events import utcnow
from engine.health import StoreHealth
from engine.snapshot import Live
from engine.spec import Kind, Status
from engine.spool import SpoolFullError
from engine.store import Store
from engine.store.decisions import Exposure, ExposureBatch
from engine.text import check_context, check_text
from engine.upkeep import Upkeep
from engine.writes import ExposureWriter
from policies.bandits.choice import (
    NoEligibleArmError,
    choose_arm,
    draw_arms,
    draw_arms_per_unit,
    eligible_weights,
)
from policies.targeting.blend import blend, choose_targeted

log = logging.getLogger("crosspromo")

MAX_UNIT_LENGTH = 256  # the decisions.unit column
STICKY_CACHE_SIZE = 100_000


def check_unit(unit: str) -> None:
    if not 0 < len(unit) <= MAX_UNIT_LENGTH:
        raise ValueError(f"unit: must be 1 to {MAX_UNIT_LENGTH} characters long")
    check_text("unit", unit)


def check_units(units: list[str]) -> None:
    """`check_unit` for every unit; the text check in one pass over the batch."""
    lengths = list(map(len, units))
    if min(lengths) > 0 and max(lengths) <= MAX_UNIT_LENGTH:
        check_text("unit", "".join(units))  # its message names the field, not the unit
        return
    for unit in units:
        check_unit(unit)


class Decider:
    def __init__(self, store: Store, upkeep: Upkeep, writer: ExposureWriter, health: StoreHealth,
                 rng: np.random.Generator, lock: threading.RLock) -> None:
        self.store = store
        self.upkeep = upkeep
        self.writer = writer
        self.health = health
        self._rng = rng
        self._lock = lock
        self._deferring = threading.local()  # per thread: inside `flush_deferred`
        # Decision ids: a random 64-bit prefix per engine and a counter: unique across replicas
        # and restarts without a system call per decision. The counter is zero-padded so ids sort
        # in the order they were issued (decisions of one batch share a timestamp).
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = 0

    def decide_many(self, live: Live, units: list[str], contexts: list[Mapping[str, Any]]) -> Sequence[Decision]:
        spec = live.spec
        batchable = spec.status is Status.RUNNING and (
            spec.kind is Kind.AB_TEST or not (spec.traffic.sticky or live.targeting is not None))
        if not batchable or not units:
            return [self.decide(live, u, c) for u, c in zip(units, contexts, strict=True)]
        return self._decide_batch(live, units, contexts)

    def _decide_batch(self, live: Live, units: list[str], contexts: list[Mapping[str, Any]]) -> DecisionBatch:
        """`decide` for many units of a running A/B test or plain bandit, vectorised."""
        spec = live.spec
        check_units(units)
        for context in contexts:
            if context:
                check_context(context)
                if spec.analysis.covariate is not None:
                    covariate_value(spec.analysis.covariate, context)
        b = buckets(spec.seed, units)
        masks = [live.eligible(c) if c else None for c in contexts]
        if spec.kind is Kind.AB_TEST:
            indices = arms_for_buckets(b, live.ranges)
            for i, mask in enumerate(masks):
                if mask is not None and not mask.all():  # as in `decide`: such a unit stays out
                    indices[i] = -1
            propensities = np.asarray(live.split)[np.maximum(indices, 0)]
            reason = Reason.SPLIT
        else:
            indices, propensities = self._draw_batch(live, b, masks)
            reason = Reason.BANDIT
        reason = self._logged(reason)
        inside = indices >= 0
        where = np.flatnonzero(inside)
        everyone = where.size == len(units)
        ids = self._log(live, units if everyone else [units[i] for i in where.tolist()], indices[where].tolist(),
                        reason, b[where].tolist(), propensities[where].tolist(),
                        contexts if everyone else [contexts[i] for i in where.tolist()])
        decision_ids = np.full(len(units), None, dtype=object)
        decision_ids[where] = ids
        arms = indices.copy()
        # Out: the fallback arm, except for a bandit unit in coverage with no eligible arm.
        for i in np.flatnonzero(~inside).tolist():
            arm = None if spec.kind is Kind.BANDIT and b[i] < spec.traffic.coverage else spec.fallback_arm
            arms[i] = self._outside_index(live, arm, masks[i])
        return DecisionBatch(spec.key, live.stored.version, live.arm_facts, (Reason.DEFAULT, reason),
                             arms, inside, b, propensities, decision_ids)

    def _draw_batch(self, live: Live, b: np.ndarray, masks: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
        """Arms and propensities of a bandit's units in coverage, -1 for the others (and for units
        with no eligible arm): one draw for the units free to get any arm, one per eligibility row
        for the rest."""
        with self._lock:
            weights = self.upkeep.bandit_weights(live)
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

    def decide(self, live: Live, unit: str, context: Mapping[str, Any]) -> Decision:
        spec = live.spec
        check_unit(unit)
        if context:
            check_context(context)
            if spec.analysis.covariate is not None:
                covariate_value(spec.analysis.covariate, context)
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
                    scores = self.upkeep.targeting_scores(live, unit, context)
                    if scores is None:
                        index, propensity = choose_arm(self.upkeep.bandit_weights(live), mask, self._rng)
                    else:
                        assert live.targeting is not None
                        choice = choose_targeted(self.upkeep.bandit_weights(live), scores, mask,
                                                 live.targeting.strength, live.targeting.temperature, self._rng)
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

    def probabilities(self, live: Live, unit: str, context: Mapping[str, Any]) -> dict[str, float]:
        """The probability of every arm in a bandit's next draw for `unit` (the propensity its
        decision would log): the eligible bandit weights, tilted by targeting when it applies."""
        if live.policy is None:
            raise ValueError(f"{live.spec.key!r} is an A/B test: its split is fixed by the bucket")
        mask = live.eligible(context)
        with self._lock:
            weights = self.upkeep.bandit_weights(live)
            scores = self.upkeep.targeting_scores(live, unit, context)
        if scores is None or live.targeting is None:
            p = eligible_weights(weights, mask)
        else:
            p, _ = blend(weights, scores, mask, live.targeting.strength, live.targeting.temperature)
        return dict(zip(live.arms, (float(x) for x in p), strict=True))

    def _claim(self, live: Live, unit: str, index: int, propensity: float) -> tuple[int, float]:
        """The sticky arm of `unit`: the first one any replica stored (ours if we were first).

        While the store is down the fresh draw is served but not remembered, so the unit is
        claimed for real once the store answers."""
        spec = live.spec
        try:
            held, held_propensity = self.store.claim_assignment(spec.key, spec.traffic.phase, unit,
                                                                live.arms[index], propensity)
        except Exception as exc:
            self.health.failed(exc, "claiming a sticky assignment")
            return index, propensity
        self.health.ok()
        if held in live.arms:  # else its arm left the experiment: the fresh draw stands
            index, propensity = live.arms.index(held), held_propensity
        with self._lock:
            if len(live.sticky) >= STICKY_CACHE_SIZE:
                live.sticky.clear()
            live.sticky[unit] = (index, propensity)
        return index, propensity

    def _outside(self, live: Live, arm: str | None, reason: Reason, b: float | None,
                 mask: np.ndarray | None = None) -> Decision:
        index = self._outside_index(live, arm, mask)
        key, channel, campaign, payload = live.arm_facts[index] if index >= 0 else (None, None, None, {})
        return Decision(live.spec.key, key, channel, campaign, reason, False, b, None, None, live.stored.version,
                        dict(payload))

    @staticmethod
    def _outside_index(live: Live, arm: str | None, mask: np.ndarray | None) -> int:
        """The index of the arm a unit out of the experiment gets (-1: none): never one over a
        channel the unit did not opt into."""
        index = live.arms.index(arm) if arm in live.arms else -1
        return -1 if index >= 0 and mask is not None and not mask[index] else index

    def _inside(self, live: Live, unit: str, index: int, reason: Reason, b: float,
                propensity: float, context: Mapping[str, Any] | None = None) -> Decision:
        reason = self._logged(reason)
        arm, channel, campaign, payload = live.arm_facts[index]
        decision_id = f"{self._id_prefix}{self._reserve_ids(1):012x}"
        context_json = json.dumps(context, default=str, separators=(",", ":")) if context else None
        spec = live.spec
        self._buffer(live, Exposure(decision_id, spec.key, live.stored.version, spec.traffic.phase, unit, arm, channel,
                                    b, propensity, reason.value, utcnow(), context_json), 1)
        return Decision(live.spec.key, arm, channel, campaign, reason, True, b, propensity, decision_id,
                        live.stored.version, dict(payload))

    def _logged(self, reason: Reason) -> Reason:
        """The reason of a decision that put a unit in an arm: STALE while the store is down."""
        return Reason.STALE if self.health.stale else reason

    def _log(self, live: Live, units: list[str], indices: list[int], reason: Reason, bs: list[float],
             propensities: list[float], contexts: list[Mapping[str, Any]]) -> list[str]:
        """Append the exposures of units put in arms (for `reason`) to the write buffer, as one
        columnar block; returns their decision ids."""
        spec, n = live.spec, len(units)
        if not n:
            return []
        first = self._reserve_ids(n)
        ids = [f"{self._id_prefix}{k:012x}" for k in range(first, first + n)]
        keys, channels = zip(*((a[0], a[1]) for a in live.arm_facts), strict=True)
        exposures = ExposureBatch({
            "decision_id": ids, "experiment": [spec.key] * n, "version": [live.stored.version] * n,
            "phase": [spec.traffic.phase] * n, "unit": units, "arm": [keys[i] for i in indices],
            "channel": [channels[i] for i in indices], "bucket": bs, "propensity": propensities,
            "reason": [reason.value] * n, "ts": [utcnow()] * n,
            "context_json": [json.dumps(c, default=str, separators=(",", ":")) if c else None for c in contexts],
            "converted": [False] * n, "value": [0.0] * n,
        })
        self._buffer(live, exposures, n)
        return ids

    def _reserve_ids(self, n: int) -> int:
        """The first of `n` consecutive decision-id counters, reserved for the caller."""
        with self._lock:
            first, self._id_counter = self._id_counter, self._id_counter + n
        return first

    def _buffer(self, live: Live, exposures: ExposureBatch | Exposure, n: int) -> None:
        """Append `n` logged exposures to the write buffer; flush it when due (unless deferred)."""
        with self._lock:
            self.writer.check_room()
            due = self.writer.append(exposures, background=self.upkeep.running)
            live.observations_since += n
        if due and not getattr(self._deferring, "on", False):
            self._flush_logged()

    @contextmanager
    def flush_deferred(self) -> Iterator[None]:
        """Decide in this thread without writing: a flush the decisions make due is left to the
        caller (`ExposureWriter.full` tells), so that an event loop never waits for the store."""
        self._deferring.on = True
        try:
            yield
        finally:
            self._deferring.on = False

    def in_memory(self, live: Live) -> bool:
        """Whether deciding for `live` needs no store access once flushes are deferred: no
        sticky unit to claim, and the weights (or the split) already at hand. Holds only with a
        background thread, which refreshes weights, models and the snapshot off the decide path."""
        weights_at_hand = live.policy is None or live.weights is not None
        return self.upkeep.running and not live.spec.traffic.sticky and weights_at_hand

    def _flush_logged(self) -> None:
        """Flush once the decisions are logged. They stand whatever the write does: a store that
        does not take them keeps them buffered (or spooled), so no error may reach the caller,
        whose retry would log the unit twice."""
        try:
            self.writer.flush()
        except SpoolFullError:
            log.warning("the spool is full: exposures wait in memory for the store")
        except Exception as exc:
            self.health.failed(exc, "logging exposures")
