"""Over time, for the report's plots and the dashboard: cumulative exposures, conversions and
value per arm, and a bandit's weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import orjson
from sqlalchemy import Integer, String, case, func, or_, select, type_coerce
from sqlalchemy.engine import Engine as SAEngine

from engine.db import read
from engine.store import DECISIONS
from engine.store.weights import WeightsEntry
from engine.tables import WEIGHTS_HISTORY


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



def recent_timeline(sa: SAEngine, experiment: str, phase: int, totals: Mapping[str, tuple[int, int, float]],
                    limit: int = 2000, points: int = 60) -> Timeline:
    """Running totals over the newest `limit` exposures, anchored on the arms' current `totals`
    (exposures, conversions, value: the O(arms) aggregates).

    The cost is bounded whatever the size of the store: the newest rows are read through the
    `(experiment, phase, ts)` index, and each earlier checkpoint is the total minus what came
    after it, so the curve is exact over the window it covers (the whole phase when it holds
    fewer than `limit` exposures). `conversion_timeline` covers the whole phase by a scan.
    """
    if limit < 1 or points < 1:
        raise ValueError(f"limit and points must be >= 1, got {limit} and {points}")
    d = DECISIONS.c
    # The time as stored (no per-row datetime parsing): only the checkpoints' times are parsed.
    # Index order alone (no tie-break on the id, which would sort the whole phase): rows of the
    # same time may fall either side of a checkpoint, which then still holds its exact totals.
    query = (select(type_coerce(d.ts, String), d.arm, d.converted, d.value)
             .where(d.experiment == experiment, d.phase == phase)
             .order_by(d.ts.desc()).limit(limit))
    with read(sa) as conn:
        rows = conn.execute(query).all()[::-1]  # oldest first
    arms = list(totals)
    index = {arm: i for i, arm in enumerate(arms)}
    per_row = np.zeros((3, len(arms), len(rows) + 1))  # the extra column: nothing after the newest row
    if rows:
        _, arm_keys, converted, value = zip(*rows, strict=True)
        arm = np.array([index.get(a, -1) for a in arm_keys])
        j = np.flatnonzero(arm >= 0)  # rows of arms no longer declared are left out
        per_row[0, arm[j], j] = 1
        per_row[1, arm[j], j] = np.array(converted, dtype=float)[j]
        per_row[2, arm[j], j] = np.nan_to_num(np.array(value, dtype=float))[j]
    # Checkpoint k ends after row `ends[k] - 1`; the first one sits just before the window.
    ends = np.unique(np.linspace(0, len(rows), min(points, len(rows)) + 1).round().astype(int))
    after = per_row[:, :, ::-1].cumsum(axis=2)[:, :, ::-1][:, :, ends]  # what came after each checkpoint
    now = np.array([totals[a] for a in arms], dtype=float).T[:, :, None]
    running = np.maximum(now - after, 0)
    stamps = [rows[max(k - 1, 0)][0] for k in ends] if rows else []
    ts = np.array([_naive_utc(_parse_ts(t)) for t in stamps], dtype="datetime64[us]")
    return Timeline(experiment, phase, ts, {
        arm: ArmTimeline(running[0, i].astype(np.int64), running[1, i].astype(np.int64), running[2, i])
        for arm, i in index.items()
    })


def newest(timeline: Timeline) -> datetime | None:
    """The time of the timeline's newest exposure (UTC), None when it has none."""
    return timeline.ts[-1].astype(datetime).replace(tzinfo=UTC) if len(timeline.ts) else None


def _parse_ts(value: str | datetime) -> datetime:
    """A stored time: SQLite keeps ISO text, PostgreSQL gives a datetime (as text: with its offset)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _naive_utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def weights_over_time(sa: SAEngine, experiment: str, phase: int, points: int = 120) -> list[WeightsEntry]:
    """The phase's weight refreshes, oldest first, thinned to about `points` spread over the
    whole history: the newest, every k-th before it, and every refresh whose reason is not a
    plain `refresh` (an arm a guardrail took out of traffic is never thinned away).

    Numbering and thinning run in the database over the `(experiment, phase, ts)` index; only
    the kept rows' weights are read and parsed.
    """
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    w = WEIGHTS_HISTORY.c
    numbered = (select(w.id, w.reason,
                       func.row_number().over(order_by=(w.ts.desc(), w.id.desc())).label("k"),
                       func.count().over().label("n"))
                .where(w.experiment == experiment, w.phase == phase).subquery())
    s = numbered.c
    step = (s.n + (points - 1)) // points  # ceil(n / points); SQLAlchemy's `/` is true division
    kept = select(s.id).where(or_((s.k - 1) % step == 0, s.reason != "refresh"))
    query = (select(type_coerce(w.ts, String), w.weights_json, w.reason).where(w.id.in_(kept))
             .order_by(w.ts, w.id))
    with read(sa) as conn:
        rows = conn.execute(query).all()
    return [WeightsEntry(_parse_ts(ts), orjson.loads(weights), reason) for ts, weights, reason in rows]
