"""Which tags describe each arm: declared in the YAML, predicted by the classifier, or none.

Declared tags always win. An arm that declares none uses the tags `crosspromo classify
--write-tags` stored for it, while its description is still the one they were predicted from
(else they are `stale`: the recommender leaves them out until the arm is classified again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from engine.spec import Arm, ExperimentSpec
from engine.store.tags import ArmTags, description_digest

Source = Literal["declared", "predicted", "stale", "none"]


@dataclass(frozen=True)
class ArmTagView:
    """An arm's tags as the recommender sees them, and where they come from (scores: predicted)."""

    experiment: str
    arm: str
    source: Source
    tags: tuple[tuple[str, float | None], ...]
    has_description: bool

    def to_dict(self) -> dict[str, object]:
        return {"experiment": self.experiment, "arm": self.arm, "source": self.source,
                "has_description": self.has_description,
                "tags": [{"topic": t, "score": None if s is None else round(s, 4)} for t, s in self.tags]}


def arm_tag_view(spec: ExperimentSpec, arm: Arm, stored: ArmTags | None) -> ArmTagView:
    described = arm.description is not None
    if arm.tags:
        return ArmTagView(spec.key, arm.key, "declared", tuple((t, None) for t in arm.tags), described)
    if stored is None:
        return ArmTagView(spec.key, arm.key, "none", (), described)
    current = arm.description is not None and description_digest(arm.description) == stored.description_sha256
    return ArmTagView(spec.key, arm.key, "predicted" if current else "stale", stored.tags, described)


def tag_views(spec: ExperimentSpec, stored: Sequence[ArmTags]) -> list[ArmTagView]:
    """Every arm of `spec`, in declared order, with its tags and their source."""
    by_arm = {t.arm: t for t in stored if t.experiment == spec.key}
    return [arm_tag_view(spec, arm, by_arm.get(arm.key)) for arm in spec.arms]


def predicted_tags(spec: ExperimentSpec, stored: Sequence[ArmTags]) -> Mapping[str, tuple[str, ...]]:
    """Predicted topics (arm -> topics) of the arms whose stored tags are in force."""
    return {v.arm: tuple(t for t, _ in v.tags) for v in tag_views(spec, stored) if v.source == "predicted"}
