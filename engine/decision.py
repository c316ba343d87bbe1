"""What `decide` answers: the arm and channel to use, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


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
