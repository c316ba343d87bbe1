"""Bandit weights over time: every refresh's weights with its reason, and the arms a guardrail
took out of traffic for the rest of a phase (the same on every replica: they live in the store)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, insert, select

from engine.db import insert_if_absent
from engine.events import utcnow
from engine.tables import ARM_EXCLUSIONS, WEIGHTS_HISTORY


@dataclass(frozen=True)
class Exclusion:
    arm: str
    reason: str
    ts: datetime


@dataclass(frozen=True)
class WeightsEntry:
    ts: datetime
    weights: dict[str, float]
    reason: str


def exclude_arm(conn: Connection, key: str, phase: int, arm: str, reason: str) -> bool:
    """Take `arm` out of the phase's traffic; False if it already was (the first reason stands)."""
    return insert_if_absent(conn, ARM_EXCLUSIONS, {"experiment": key, "phase": phase, "arm": arm, "reason": reason,
                                                   "ts": utcnow()})


def read_exclusions(conn: Connection, key: str, phase: int) -> list[Exclusion]:
    x = ARM_EXCLUSIONS.c
    rows = conn.execute(select(x.arm, x.reason, x.ts).where(x.experiment == key, x.phase == phase).order_by(x.ts))
    return [Exclusion(arm, reason, ts) for arm, reason, ts in rows]


def record_weights(conn: Connection, key: str, phase: int, weights: Mapping[str, float], reason: str) -> None:
    conn.execute(insert(WEIGHTS_HISTORY), {"experiment": key, "phase": phase, "ts": utcnow(),
                                           "weights_json": json.dumps(dict(weights)), "reason": reason})


def read_weights_history(conn: Connection, key: str, phase: int, limit: int | None = None) -> list[WeightsEntry]:
    """The phase's refreshes, oldest first (the last `limit` of them)."""
    w = WEIGHTS_HISTORY.c
    query = (select(w.id, w.ts, w.weights_json, w.reason).where(w.experiment == key, w.phase == phase)
             .order_by(w.ts.desc(), w.id.desc()))
    rows = conn.execute(query if limit is None else query.limit(limit)).all()
    return [WeightsEntry(ts, json.loads(weights), reason) for _, ts, weights, reason in reversed(rows)]
