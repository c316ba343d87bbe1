"""Cumulative exposures, conversions and value per arm over time, for the report's plots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import Integer, case, func, select
from sqlalchemy.engine import Engine as SAEngine

from engine.db import read
from engine.store import DECISIONS


@dataclass(frozen=True)
class ArmTimeline:
    """Running totals of one arm at each checkpoint of its `Timeline`."""

    exposures: np.ndarray  # int64
    conversions: np.ndarray  # int64
    value: np.ndarray  # float64


@dataclass(frozen=True)
class Timeline:
    """Running totals per arm at shared checkpoints `ts` (datetime64[us], naive UTC, non-decreasing).

    The last checkpoint is the newest exposure, so the last totals equal the arm aggregates.
    """

    experiment: str
    phase: int
    ts: np.ndarray
    arms: dict[str, ArmTimeline]


def conversion_timeline(sa: SAEngine, experiment: str, phase: int, arms: Sequence[str],
                        points: int = 200) -> Timeline:
    """The exposures of one phase in at most `points` equal-count slices of time.

    One query: `NTILE` (SQLite >= 3.25, PostgreSQL) numbers the exposures in timestamp order
    and a `GROUP BY` sums each (arm, slice); only arms x points rows leave the database.
    Equal-count slices put the checkpoints where the data is, so a burst of traffic is not
    squeezed into one point and quiet periods do not waste any.
    """
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    d = DECISIONS.c
    sliced = (
        select(d.arm, d.ts, d.converted, d.value,
               func.ntile(points).over(order_by=(d.ts, d.decision_id)).label("slice"))
        .where(d.experiment == experiment, d.phase == phase, d.arm.in_(list(arms)))
        .subquery()
    )
    s = sliced.c
    query = (
        select(s.slice, s.arm, func.count(), func.sum(case((s.converted, 1), else_=0), type_=Integer),
               func.sum(s.value), func.max(s.ts))
        .group_by(s.slice, s.arm)
    )
    with read(sa) as conn:
        rows = conn.execute(query).all()

    n_slices = max((r[0] for r in rows), default=0)
    index = {arm: i for i, arm in enumerate(arms)}
    counts = np.zeros((3, len(arms), n_slices))
    ends: dict[int, datetime] = {}  # NTILE leaves no slice empty, so every slice gets its end
    for slice_no, arm, exposures, conversions, value, last in rows:
        counts[:, index[arm], slice_no - 1] = (exposures, conversions, value)
        ends[slice_no] = max(ends.get(slice_no, last), last)
    running = counts.cumsum(axis=2)
    # numpy has no time zones: the column gives aware datetimes, kept as naive UTC.
    ts = np.array([ends[k].astimezone(UTC).replace(tzinfo=None) for k in sorted(ends)], dtype="datetime64[us]")
    return Timeline(experiment, phase, ts, {
        arm: ArmTimeline(running[0, i].astype(np.int64), running[1, i].astype(np.int64), running[2, i])
        for arm, i in index.items()
    })

