"""The decide path: which arm (campaign and channel) a unit gets, and the exposure it logs.

Reads only the snapshot and the cached weights; the exposure goes to the write buffer. The
one store call is the insert-if-absent of a sticky bandit unit's first arm. Batches of a
running A/B test or plain bandit are vectorised: one numpy pass for buckets and draws, and
every unit gets exactly the answer a single decision would give.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np

from engine.assignment import arm_for_bucket, arms_for_buckets, bucket, buckets
from engine.decision import Decision, Reason
from engine.events import utcnow
from engine.health import StoreHealth
from engine.snapshot import Live
from engine.spec import Kind, Status
from engine.store import Exposure, Store
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

MAX_UNIT_LENGTH = 256  # the decisions.unit column
STICKY_CACHE_SIZE = 100_000


def check_unit(unit: str) -> None:
    if not 0 < len(unit) <= MAX_UNIT_LENGTH:
        raise ValueError(f"unit: must be 1 to {MAX_UNIT_LENGTH} characters long")
    check_text("unit", unit)


class Decider:
    def __init__(self, store: Store, upkeep: Upkeep, writer: ExposureWriter, health: StoreHealth,
                 rng: np.random.Generator, lock: threading.RLock) -> None:
        self.store = store
        self.upkeep = upkeep
        self.writer = writer
        self.health = health
        self._rng = rng
        self._lock = lock
        # Decision ids: a random 64-bit prefix per engine and a counter: unique across replicas
        # and restarts without a system call per decision. The counter is zero-padded so ids sort
        # in the order they were issued (decisions of one batch share a timestamp).
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = itertools.count()

    def decide_many(self, live: Live, units: list[str], contexts: list[Mapping[str, Any]]) -> list[Decision]:
        spec = live.spec
        batchable = spec.status is Status.RUNNING and (
            spec.kind is Kind.AB_TEST or not (spec.traffic.sticky or live.targeting is not None))
        if not batchable or not units:
            return [self.decide(live, u, c) for u, c in zip(units, contexts, strict=True)]
        return self._decide_batch(live, units, contexts)

    def _decide_batch(self, live: Live, units: list[str], contexts: list[Mapping[str, Any]]) -> list[Decision]:
        """`decide` for many units of a running A/B test or plain bandit, vectorised."""
        spec = live.spec
        for unit, context in zip(units, contexts, strict=True):
            check_unit(unit)
            if context:
                check_context(context)
        b = buckets(spec.seed, units)
        masks = [live.eligible(c) for c in contexts]
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
        inside = np.flatnonzero(indices >= 0).tolist()
        decided = dict(zip(inside, self._inside_many(
            live, [units[i] for i in inside], indices[inside].tolist(), reason, b[inside].tolist(),
            propensities[inside].tolist(), [contexts[i] for i in inside]), strict=True))
        # Out: the fallback arm, except for a bandit unit in coverage with no eligible arm.
        for i in np.flatnonzero(indices < 0).tolist():
            arm = None if spec.kind is Kind.BANDIT and b[i] < spec.traffic.coverage else spec.fallback_arm
            decided[i] = self._outside(live, arm, Reason.DEFAULT, float(b[i]), masks[i])
        return [decided[i] for i in range(len(units))]

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
        index = live.arms.index(arm) if arm in live.arms else None
        if index is not None and mask is not None and not mask[index]:
            index = None  # never send over a channel the unit did not opt into
        key, channel, campaign, payload = live.arm_facts[index] if index is not None else (None, None, None, {})
        return Decision(live.spec.key, key, channel, campaign, reason, False, b, None, None, live.stored.version,
                        dict(payload))

    def _inside(self, live: Live, unit: str, index: int, reason: Reason, b: float,
                propensity: float, context: Mapping[str, Any] | None = None) -> Decision:
        return self._inside_many(live, [unit], [index], reason, [b], [propensity], [context or {}])[0]

    def _inside_many(self, live: Live, units: list[str], indices: list[int], reason: Reason, bs: list[float],
                     propensities: list[float], contexts: list[Mapping[str, Any]]) -> list[Decision]:
        """Decisions that put units in arms, their exposures appended to the write buffer."""
        spec, version, phase = live.spec, live.stored.version, live.spec.traffic.phase
        if self.health.stale:
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
            due = self.writer.append(exposures, background=self.upkeep.running)
            live.observations_since += len(exposures)
        if due:
            self.writer.flush()
        return decisions
