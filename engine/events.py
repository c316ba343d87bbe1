"""Outcome and exposure events: validation of one event, and reading JSONL or CSV files.

Every rule that can be checked without the store is checked here; the store adds the ones
that need it (unknown experiment or arm, a decision that does not exist).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

EventType = Literal["conversion", "exposure"]
MAX_VALUE = 1e12


class EventError(ValueError):
    """An event that cannot be applied; the message says why."""


class MissingExposureError(EventError):
    """A conversion whose exposure is not in the store (yet: it may still sit in a spool)."""


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(min_length=1, max_length=256)
    type: EventType = "conversion"
    experiment: str = Field(min_length=1, max_length=128)
    unit: str | None = Field(default=None, min_length=1, max_length=256)
    decision_id: str | None = Field(default=None, min_length=1, max_length=64)
    arm: str | None = Field(default=None, min_length=1, max_length=128)
    value: float | None = None
    ts: datetime | None = None

    @field_validator("value", mode="before")
    @classmethod
    def _finite_non_negative(cls, v: Any) -> Any:
        if v is None or v == "":
            return None
        if isinstance(v, bool):
            raise ValueError("must be a number, not a boolean")
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                raise ValueError(f"must be a number, got {v!r}") from None
        if not isinstance(v, int | float):
            raise ValueError(f"must be a number, got {type(v).__name__}")
        if not math.isfinite(v):
            raise ValueError("must be finite (NaN and Infinity are refused)")
        if v < 0:
            raise ValueError("must be >= 0")
        if v > MAX_VALUE:
            raise ValueError(f"must be <= {MAX_VALUE:g} (its square must stay finite in the sums)")
        return float(v)

    @field_validator("ts")
    @classmethod
    def _in_utc(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return None
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    @field_validator("unit", "decision_id", "arm", "ts", mode="before")
    @classmethod
    def _blank_is_absent(cls, v: Any) -> Any:
        return None if v == "" else v


def parse_event(raw: Any) -> Event:
    """Validate one raw event (a JSON object or CSV row) or raise `EventError` with the reason."""
    if isinstance(raw, Event):
        return raw
    if not isinstance(raw, dict):
        raise EventError(f"an event must be a JSON object, got {type(raw).__name__}")
    try:
        event = Event.model_validate(raw)
    except ValidationError as exc:
        reasons = []
        for e in exc.errors():
            field = ".".join(str(p) for p in e["loc"]) or "event"
            msg = "required" if e["type"] == "missing" else str(e["msg"]).removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown field"
            reasons.append(f"{field}: {msg}")
        raise EventError("; ".join(reasons)) from None
    if event.type == "conversion" and event.decision_id is None and event.unit is None:
        raise EventError("a conversion needs decision_id or unit")
    if event.type == "exposure" and event.unit is None:
        raise EventError("unit: required for an exposure")
    if event.type == "exposure" and event.arm is None:
        raise EventError("arm: required for an exposure")
    return event


@dataclass(frozen=True)
class RawRow:
    """A row read from a file: its line number, and the raw object or the reason it is unreadable."""

    line: int
    data: dict[str, Any] | None
    error: str | None = None


def reject_json_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def read_rows(path: Path) -> Iterator[RawRow]:
    """Rows of a JSONL or CSV file (by suffix; `.csv` is CSV, anything else JSONL)."""
    if path.suffix.lower() == ".csv":
        yield from _read_csv(path)
    else:
        yield from _read_jsonl(path)


def _read_jsonl(path: Path) -> Iterator[RawRow]:
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line, parse_constant=reject_json_constant)
            except ValueError as exc:
                yield RawRow(line_no, None, f"malformed JSON: {exc}")
                continue
            if not isinstance(data, dict):
                yield RawRow(line_no, None, "each line must be a JSON object")
                continue
            yield RawRow(line_no, data)


def _read_csv(path: Path) -> Iterator[RawRow]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            line_no = reader.line_num
            if None in row:
                yield RawRow(line_no, None, "more fields than the header names")
                continue
            yield RawRow(line_no, {k: v for k, v in row.items() if v is not None})


def utcnow() -> datetime:
    return datetime.now(UTC)
