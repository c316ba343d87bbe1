"""The decide path's in-memory view of the experiments: specs, bucket ranges, cached weights.

Reloaded from the store every SPEC_REFRESH_SECONDS (or at once, at most once a second, for a
key it does not know); while the store is down the old view stays in use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.assignment import bucket_ranges
from engine.db import StoreError
from engine.health import StoreHealth
from engine.spec import (
    EpsilonGreedyPolicy,
    ExperimentSpec,
    Targeting,
    ThompsonPolicy,
    UpdateCadence,
    declared_policy,
)
from engine.store import Store, StoredExperiment, Tally
from policies.bandits.registry import Policy
from policies.sufficient import ArmStats

if TYPE_CHECKING:  # scipy.sparse and friends load only where targeting is used
    from engine.targeting import TargetingModel

SPEC_REFRESH_SECONDS = 5.0
SPEC_FORCED_REFRESH_SECONDS = 1.0  # an unknown key reloads the snapshot at most this often


class UnknownExperimentError(KeyError):
    def __init__(self, key: str, known: Iterable[str]) -> None:
        super().__init__(key)
        self.key = key
        self.hint = f"known experiments: {', '.join(sorted(known)) or '(none: run crosspromo apply)'}"

    def __str__(self) -> str:
        return f"unknown experiment {self.key!r}"


@dataclass
class Live:
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
    # Arms a guardrail left in traffic (None: all): refreshed with the weights.
    allowed: np.ndarray | None = None

    def eligible(self, context: Mapping[str, Any]) -> np.ndarray | None:
        mask = self.spec.eligibility.mask(self.arms, self.channels, context)
        if self.allowed is None:
            return mask
        return self.allowed if mask is None else mask & self.allowed

    def weights_due(self, now: float) -> bool:
        cadence = self.cadence or UpdateCadence()
        return (self.weights is None or self.observations_since >= cadence.every_outcomes
                or now - self.weights_at >= cadence.every_seconds)

    def model_due(self, now: float) -> bool:
        return self.targeting is not None and now - self.model_at >= self.targeting.refit_every_seconds

    @property
    def spec(self) -> ExperimentSpec:
        return self.stored.spec


def build_live(stored: StoredExperiment) -> Live:
    spec = stored.spec
    policy = declared_policy(spec)
    cadence = spec.policy.update if isinstance(spec.policy, ThompsonPolicy | EpsilonGreedyPolicy) else None
    return Live(
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


def stats_for(spec: ExperimentSpec, tally: Tally, costs: Sequence[float]) -> list[ArmStats]:
    """The sufficient statistics of the primary metric (net of `costs` if it says `net`)."""
    return tally.stats(spec.primary, costs)


class Snapshot:
    def __init__(self, store: Store, health: StoreHealth, clock: Callable[[], float], lock: threading.RLock) -> None:
        self.store = store
        self.health = health
        self.live: dict[str, Live] = {}
        self._clock = clock
        self._lock = lock
        self._at = float("-inf")

    def invalidate(self) -> None:
        """Reload on the next read (after `apply`)."""
        with self._lock:
            self._at = float("-inf")

    def load(self, force: bool = False) -> dict[str, Live]:
        """The cached experiments, reloaded when due (or forced, at most once a second); the old
        ones while the store is down. Reloads back off on failure, so an outage costs one
        attempt per interval, not one per decision."""
        with self._lock:
            age = self._clock() - self._at
            if age < (SPEC_FORCED_REFRESH_SECONDS if force else SPEC_REFRESH_SECONDS):
                return self.live
            self._at = self._clock()
        try:
            stored = self.store.experiments()
        except Exception as exc:
            self.health.failed(exc, "loading experiments")
            if not self.live:
                raise StoreError("the store is unreachable and no experiments are cached",
                                 "check the database server; decisions resume when it answers") from None
            return self.live
        self.health.ok()
        with self._lock:
            self.live = {k: old if (old := self.live.get(k)) is not None and old.stored == s else build_live(s)
                         for k, s in stored.items()}
            return self.live

    def get(self, key: str, reload_due: bool = True) -> Live:
        """The experiment's view. With `reload_due=False` (a background thread keeps the view
        fresh) the store is read only for a key not known yet."""
        live = (self.load() if reload_due else self.live).get(key)
        if live is None:
            live = self.load(force=True).get(key)
        if live is None:
            raise UnknownExperimentError(key, self.live)
        return live
