"""Predicted arm tags: what `crosspromo classify --write-tags` stored for arms that declare none.

One row per (experiment, arm); writing an arm's tags replaces the ones it had. Each row keeps
the SHA-256 of the description the tags were predicted from, so a description changed since
(a new `apply`) leaves them stale instead of silently describing another campaign.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select, tuple_

from engine.tables import ARM_TAGS


def description_digest(description: str) -> str:
    """The SHA-256 (hex) of a description's UTF-8 bytes."""
    return hashlib.sha256(description.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ArmTags:
    """Tags predicted for one arm, best first, with their scores in [0, 1]."""

    experiment: str
    arm: str
    tags: tuple[tuple[str, float], ...]
    description_sha256: str
    classifier: str
    predicted_at: datetime

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(topic for topic, _ in self.tags)


def write_tags(conn: Connection, tags: Sequence[ArmTags]) -> None:
    """Store `tags`, replacing what those arms had (delete then insert: portable, one transaction)."""
    if not tags:
        return
    keys = [(t.experiment, t.arm) for t in tags]
    conn.execute(ARM_TAGS.delete().where(tuple_(ARM_TAGS.c.experiment, ARM_TAGS.c.arm).in_(keys)))
    conn.execute(ARM_TAGS.insert(), [
        dict(experiment=t.experiment, arm=t.arm, tags_json=json.dumps([[topic, score] for topic, score in t.tags]),
             description_sha256=t.description_sha256, classifier=t.classifier, predicted_at=t.predicted_at)
        for t in tags])


def read_tags(conn: Connection, experiment: str | None = None) -> list[ArmTags]:
    """The stored tags of `experiment` (of every experiment if None), by experiment and arm."""
    query = select(ARM_TAGS).order_by(ARM_TAGS.c.experiment, ARM_TAGS.c.arm)
    if experiment is not None:
        query = query.where(ARM_TAGS.c.experiment == experiment)
    return [ArmTags(row.experiment, row.arm, tuple((str(t), float(s)) for t, s in json.loads(row.tags_json)),
                    row.description_sha256, row.classifier, row.predicted_at)
            for row in conn.execute(query)]
