"""What `decide` answers: the arm and channel to use, and why."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, overload

import numpy as np


class Reason(StrEnum):
    SPLIT = "SPLIT"  # fixed A/B split by hash bucket
    BANDIT = "BANDIT"  # drawn from the bandit's current weights
    TARGETED = "TARGETED"  # bandit weights tilted by the recommender for this unit
    DEFAULT = "DEFAULT"  # not in the experiment: outside coverage, not eligible, or a draft
    STOPPED = "STOPPED"  # paused, stopped or concluded: the winner or the default arm
    STALE = "STALE"  # store unreachable: served from the cached snapshot
    ERROR = "ERROR"


@dataclass(slots=True)
class Decision:
    """One answer of `decide`. Not frozen: batch endpoints build thousands a request, and a
    frozen dataclass costs more to build than the rest of the decision."""

    experiment: str
    arm: str | None
    channel: str | None
    campaign: str | None
    reason: Reason
    in_experiment: bool
    bucket: float | None
    propensity: float | None
    decision_id: str | None
    experiment_version: int
    payload: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # Spelled out: dataclasses.asdict deep-copies and costs more than a whole decision.
        return {
            "experiment": self.experiment, "arm": self.arm, "channel": self.channel, "campaign": self.campaign,
            "reason": self.reason.value, "in_experiment": self.in_experiment, "bucket": self.bucket,
            "propensity": self.propensity, "decision_id": self.decision_id,
            "experiment_version": self.experiment_version, "payload": dict(self.payload),
        }


ArmFacts = tuple[str, str, str, dict[str, Any]]  # arm key, channel, campaign, payload


class DecisionBatch(Sequence[Decision]):
    """The answers of one `decide_many`, column by column: a `Decision` is built only when the
    caller indexes or iterates, so a batch costs no object per unit until it is read.

    `arm` holds indices into `arm_facts` (-1: no arm); `reasons` is the reason of the units out of
    the experiment and of those in it; `decision_id` and `propensity` count for units in it."""

    __slots__ = ("experiment", "version", "arm_facts", "reasons", "arm", "in_experiment", "bucket", "propensity",
                 "decision_id")

    def __init__(self, experiment: str, version: int, arm_facts: Sequence[ArmFacts], reasons: tuple[Reason, Reason],
                 arm: np.ndarray, in_experiment: np.ndarray, bucket: np.ndarray, propensity: np.ndarray,
                 decision_id: np.ndarray) -> None:
        self.experiment, self.version, self.arm_facts, self.reasons = experiment, version, arm_facts, reasons
        self.arm, self.in_experiment, self.bucket = arm, in_experiment, bucket
        self.propensity, self.decision_id = propensity, decision_id

    def __len__(self) -> int:
        return len(self.arm)

    @overload
    def __getitem__(self, index: int) -> Decision: ...

    @overload
    def __getitem__(self, index: slice) -> list[Decision]: ...

    def __getitem__(self, index: int | slice) -> Decision | list[Decision]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._decision(int(self.arm[index]), bool(self.in_experiment[index]), float(self.bucket[index]),
                              float(self.propensity[index]), self.decision_id[index])

    def __iter__(self) -> Iterator[Decision]:
        columns = (self.arm.tolist(), self.in_experiment.tolist(), self.bucket.tolist(), self.propensity.tolist(),
                   self.decision_id.tolist())
        for row in zip(*columns, strict=True):
            yield self._decision(*row)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable columns, as a list

    def _decision(self, arm: int, inside: bool, bucket: float, propensity: float, decision_id: str | None) -> Decision:
        key, channel, campaign, payload = self.arm_facts[arm] if arm >= 0 else (None, None, None, {})
        return Decision(self.experiment, key, channel, campaign, self.reasons[inside], inside, bucket,
                        propensity if inside else None, decision_id if inside else None, self.version, dict(payload))
