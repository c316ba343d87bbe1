"""Poison rows: rows the database refuses, isolated from their batch and kept aside.

A batch the database refuses for one of its rows (PostgreSQL refuses NUL in text, a value
out of a column's range, text that is not valid Unicode) is split in halves until the
refused rows stand alone; the good rows are written and each refused one goes to the
`quarantine` table, escaped as ASCII JSON so that no byte of it can be refused again. An
unreachable store is not a poison row: that error is raised for the caller's outage path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from engine.db import first_line, is_unavailable
from engine.events import utcnow
from engine.tables import QUARANTINE

log = logging.getLogger("crosspromo")

T = TypeVar("T")
R = TypeVar("R")
MAX_REASON = 500


def is_refused_row(exc: BaseException) -> bool:
    """Whether `exc` is the database (or its driver) refusing a row's values: a data or
    integrity error, or a value the driver cannot convert (text that is not valid Unicode, a
    number out of range). Anything else — an outage, a connection in a bad state — is not the
    rows' fault and is raised for the caller to retry."""
    if is_unavailable(exc):
        return False
    if isinstance(exc, DataError | IntegrityError | UnicodeError | ValueError | OverflowError | TypeError):
        return True
    # SQLAlchemy wraps a driver's conversion error in a StatementError of its own.
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError) and is_refused_row(exc.orig)


def refusal(exc: BaseException) -> str:
    """The driver's reason: its first line, without SQL, bound values or a password."""
    orig = getattr(exc, "orig", None) or exc
    return f"{type(orig).__name__}: {first_line(orig)}"[:MAX_REASON]


def write_isolating(items: Sequence[T], write: Callable[[Sequence[T]], R], merge: Callable[[R, R, int], R],
                    refused: Callable[[T, str], R]) -> R:
    """`write(items)`; if the database refuses a row, the halves are written on their own,
    down to single rows, and `refused(item, reason)` stands for each row it refuses.
    `merge(left, right, offset)` joins the results of two halves (`offset` = len(left half))."""
    try:
        return write(items)
    except Exception as exc:
        if not is_refused_row(exc):
            raise
        if len(items) == 1:
            return refused(items[0], refusal(exc))
    mid = len(items) // 2
    left = write_isolating(items[:mid], write, merge, refused)
    return merge(left, write_isolating(items[mid:], write, merge, refused), mid)


def quarantine(conn: Connection, kind: str, reason: str, record: dict[str, Any]) -> None:
    text = json.dumps(record, ensure_ascii=True, default=_plain, separators=(",", ":"))
    conn.execute(QUARANTINE.insert().values(kind=kind, reason=reason, record_json=text, ts=utcnow()))
    log.error("quarantined a %s row the database refused: %s", kind, reason)


def read_quarantine(conn: Connection, limit: int | None = None) -> list[dict[str, Any]]:
    q = QUARANTINE.c
    rows = conn.execute(select(q.id, q.kind, q.reason, q.record_json, q.ts).order_by(q.id).limit(limit)).all()
    return [{"id": r.id, "kind": r.kind, "reason": r.reason, "record": json.loads(r.record_json),
             "ts": r.ts.isoformat()} for r in rows]


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)
