"""Upkeep of what the decide path reads: bandit weights, targeting models, the background loop.

Without a background thread, weights and models are refreshed inline when due; with
`start()` (the HTTP service) a daemon thread flushes exposures, drains the spool and
refreshes both on their cadence, so the decide path runs no SQL at all.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from engine.db import is_unavailable
from engine.guardrails import guardrail_results
from engine.health import StoreHealth
from engine.measures import MetricRole, MetricType
from engine.snapshot import Live, Snapshot, stats_for
from engine.spec import ExperimentSpec, UpdateCadence
from engine.store import Store, Tally
from engine.writes import ExposureWriter
from policies.bandits.arm_stats import stats_from_sums
from policies.sufficient import ArmStats

log = logging.getLogger("crosspromo")

# Discounted sums ignore outcomes whose weight fell below this share of a fresh one.
DISCOUNT_CUTOFF = 0.01


def weighted_stats(spec: ExperimentSpec, sums: np.ndarray) -> list[ArmStats]:
    """Stats from (arms, 4) weighted sums of (exposures, conversions, total, total_sq)."""
    n, conversions, total, total_sq = sums.T
    revenue = spec.primary.type is MetricType.REVENUE
    return stats_from_sums(spec.primary.type.value, n, total if revenue else conversions, total_sq)


class Upkeep:
    def __init__(self, store: Store, snapshot: Snapshot, writer: ExposureWriter, health: StoreHealth,
                 rng: np.random.Generator, clock: Callable[[], float], lock: threading.RLock,
                 channel_costs: Mapping[str, float]) -> None:
        self.store = store
        self.channel_costs = channel_costs
        self.snapshot = snapshot
        self.writer = writer
        self.health = health
        self._rng = rng
        self._clock = clock
        self._lock = lock
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def running(self) -> bool:
        """Whether a background thread keeps weights, models and the snapshot fresh."""
        return self._thread is not None

    # -- bandit weights ----------------------------------------------------------------

    def bandit_weights(self, live: Live) -> np.ndarray:
        """The cached weights; refreshed inline when due unless a background thread does it."""
        if live.weights is None or (not self.running and live.weights_due(self._clock())):
            self.refresh_weights(live)
        assert live.weights is not None
        return live.weights

    def refresh_weights(self, live: Live) -> None:
        try:
            reason = self._check_guardrails(live) if live.policy is not None else ""
            weights = self.compute_weights(live)
            if live.policy is not None:
                spec = live.spec
                self.store.record_weights(spec.key, spec.traffic.phase,
                                          dict(zip(live.arms, map(float, weights), strict=True)), reason)
        except Exception as exc:
            self.health.failed(exc, "refreshing bandit weights")
            if live.weights is None and live.policy is not None:  # nothing cached: the prior's weights
                empty = stats_for(live.spec, Tally.empty(live.arms), live.spec.arm_costs(self.channel_costs))
                live.weights = live.policy.weights(empty, self._rng)
            return
        self.health.ok()
        live.weights, live.weights_at, live.observations_since = weights, self._clock(), 0

    def compute_weights(self, live: Live) -> np.ndarray:
        """The policy's weights from the stored aggregates (flushing this engine's exposures first).

        `discount` and `window` policies read the most recent exposures instead of all-time
        sums: a window weighs its last `window` exposures equally; a discount weighs an exposure
        `gamma ** (newer exposures // every_outcomes)`, dropping weights under DISCOUNT_CUTOFF.
        """
        self.writer.flush()
        spec = live.spec
        if live.policy is None:
            return np.asarray(spec.weights, dtype=float)
        discount = getattr(spec.policy, "discount", None)
        window = getattr(spec.policy, "window", None)
        if (discount is None or discount == 1) and window is None:
            tally = self.store.tally(spec.key, spec.traffic.phase, spec.arm_keys)
            return self._policy_weights(live, stats_for(spec, tally, spec.arm_costs(self.channel_costs)))
        if window is not None:
            sums = self.store.recent_sums(spec.key, spec.traffic.phase, spec.arm_keys, limit=window, bucket=window)
            return self._policy_weights(live, weighted_stats(spec, sums[:, 0, :]))
        step = (live.cadence or UpdateCadence()).every_outcomes
        buckets = int(np.log(DISCOUNT_CUTOFF) / np.log(discount)) + 1
        sums = self.store.recent_sums(spec.key, spec.traffic.phase, spec.arm_keys, limit=buckets * step, bucket=step)
        decay = discount ** np.arange(sums.shape[1])
        return self._policy_weights(live, weighted_stats(spec, np.einsum("abk,b->ak", sums, decay)))

    def _check_guardrails(self, live: Live) -> str:
        """Take out of traffic, for the rest of the phase and on every replica, each arm whose
        guardrail shows harm (an always-valid test against the control: a refresh's repeated
        look is safe). Returns the refresh's reason for the weights history."""
        spec = live.spec
        if not any(m.role is MetricRole.GUARDRAIL for m in spec.measures):
            return "refresh"
        key, phase = spec.key, spec.traffic.phase
        taken = []
        tally = self.store.tally(key, phase, spec.arm_keys)
        for g in guardrail_results(spec, tally, spec.arm_costs(self.channel_costs)):
            if g.failed and self.store.exclude_arm(key, phase, g.arm, f"guardrail {g.metric!r}: {g.reason}"):
                taken.append(f"{g.arm!r} taken out of traffic: guardrail {g.metric!r}: {g.reason}")
        return "; ".join(taken) or "refresh"

    def _policy_weights(self, live: Live, stats: list[ArmStats]) -> np.ndarray:
        """The policy's weights over the arms still in traffic (0 for the arms taken out)."""
        assert live.policy is not None
        spec = live.spec
        excluded = {x.arm for x in self.store.exclusions(spec.key, spec.traffic.phase)}
        allowed = np.array([a not in excluded for a in live.arms])
        live.allowed = None if allowed.all() else allowed
        if allowed.all():
            return live.policy.weights(stats, self._rng)
        weights = np.zeros(len(live.arms))
        weights[allowed] = live.policy.weights([s for s, keep in zip(stats, allowed, strict=True) if keep], self._rng)
        return weights

    # -- targeting models --------------------------------------------------------------

    def targeting_scores(self, live: Live, unit: str, context: Mapping[str, Any]) -> np.ndarray | None:
        """The unit's recommender scores, or None (no targeting, no model yet, or a cold start).
        Without a background thread the model is refitted inline when due, as weights are."""
        if live.targeting is None:
            return None
        if not self.running and live.model_due(self._clock()):
            self.refit_targeting(live)
        return None if live.model is None else live.model.scores(unit, context)

    def refit_targeting(self, live: Live) -> None:
        """Refit the experiment's recommender from its logged decisions, the tags predicted for
        its arms that declare none and, when it uses them, every edge of the social graph."""
        from engine.tags import predicted_tags
        from engine.targeting import HistoryRow, fit_targeting  # scipy.sparse: only where targeting is on

        spec, targeting = live.spec, live.targeting
        assert targeting is not None
        index = {a: i for i, a in enumerate(live.arms)}
        try:
            self.writer.flush()
            rows = self.store.decision_history(spec.key, spec.traffic.phase)
            untagged = any(not a.tags for a in spec.arms)
            predicted = predicted_tags(spec, self.store.arm_tags(spec.key)) if untagged else {}
            graph = self.store.graph() if targeting.uses_graph else None
        except Exception as exc:
            self.health.failed(exc, "refitting the recommender")
            live.model_at = self._clock()  # keep the old model; retry on the next cadence
            return
        self.health.ok()
        history = [HistoryRow(unit, index[arm], bool(converted), json.loads(ctx) if ctx else {})
                   for unit, arm, converted, ctx in rows if arm in index]
        model = fit_targeting(spec, targeting, history, self._rng, predicted=predicted, graph=graph)
        with self._lock:
            live.model, live.model_at = model, self._clock()

    # -- the background loop -----------------------------------------------------------

    def maintain(self) -> None:
        """One round of background upkeep: flush, drain the spool, refresh snapshot and weights.

        Each step runs on its own: an outage skips the round's writes, and an error in one step
        is logged without stopping the others (the next round retries it)."""
        steps: tuple[Callable[[], object], ...] = (self.writer.flush, self._check_recovery, self.drain_spool)
        for step in steps:
            try:
                step()
            except Exception as exc:
                if is_unavailable(exc):
                    self.health.failed(exc, "maintenance")
                    return
                log.exception("maintenance step %s failed", getattr(step, "__name__", step))
        now = self._clock()
        for live in list(self.snapshot.load().values()):
            if live.policy is not None and live.weights_due(now):
                self.refresh_weights(live)
            if live.model_due(now):
                self.refit_targeting(live)

    def drain_spool(self) -> int:
        return self.writer.drain_spool(lambda: {k: v.stored for k, v in self.snapshot.load(force=True).items()})

    def _check_recovery(self) -> None:
        if self.health.stale:
            self.store.ping()
            self.health.ok()

    def start(self, interval: float) -> None:
        """Move flushing and refreshing off the decide path, into a daemon thread."""
        if self._thread is not None:
            return
        self.snapshot.load(force=True)

        def loop() -> None:
            while not self._stopping.wait(interval):
                try:
                    self.maintain()
                except Exception:  # never let upkeep die; the next round retries
                    log.exception("background maintenance failed")

        self._thread = threading.Thread(target=loop, name="crosspromo-maintenance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join()
            self._thread = None
