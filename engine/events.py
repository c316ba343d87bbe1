"""Outcome and exposure events: validation of one event, and reading JSONL or CSV streams.

Every rule that can be checked without the store is checked here; the store adds the ones
that need it (unknown experiment or arm, a decision that does not exist). Whatever the bytes,
a reader yields a row or that row's error and moves on: one bad line never costs the others.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import sys
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.text import text_problem

EventType = Literal["conversion", "exposure"]
InputFormat = Literal["jsonl", "csv"]
MAX_VALUE = 1e12
# Events are a few hundred bytes; a longer line is refused without being held in memory whole.
MAX_LINE_BYTES = 1 << 20
TS_MIN = datetime(1970, 1, 1, tzinfo=UTC)
TS_MAX = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
TEXT_FIELDS = ("event_id", "experiment", "unit", "decision_id", "arm", "metric")
BOM = b"\xef\xbb\xbf"
STDIN = Path("-")
_FORMAT_OF_SUFFIX: dict[str, InputFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


class EventError(ValueError):
    """An event that cannot be applied; the message says why."""


class MissingExposureError(EventError):
    """A conversion whose exposure is not in the store (yet: it may still sit in a spool)."""


class EventFileError(EventError):
    """A file no row of which can be read (a CSV header that does not name the columns)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


def _short(v: Any, limit: int = 40) -> str:
    """`repr` of a value, cut: error messages quote what they refuse, never megabytes of it."""
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + "…"


def checked_number(v: Any) -> int | float:
    """A number given as JSON or CSV text: finite, not a boolean, at most MAX_VALUE (an int too
    large for a float is compared before any float(), so it cannot overflow)."""
    if isinstance(v, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise ValueError(f"must be a number, got {_short(v)}") from None
    if not isinstance(v, int | float):
        raise ValueError(f"must be a number, got {type(v).__name__}")
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError("must be finite (NaN and Infinity are refused)")
    if abs(v) > MAX_VALUE:
        raise ValueError(f"must be <= {MAX_VALUE:g} in magnitude (its square must stay finite in the sums)")
    return v


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
    # The metric the conversion counts for; None: the experiment's primary metric.
    metric: str | None = Field(default=None, min_length=1, max_length=128)

    @field_validator(*TEXT_FIELDS)
    @classmethod
    def _storable_text(cls, v: str | None) -> str | None:
        """Text every store can hold: PostgreSQL refuses NUL. Refused here, such a row never
        reaches (and jams) a write. (pydantic refuses lone surrogates: see `field_reason`.)"""
        if v is not None and (problem := text_problem(v)):
            raise ValueError(problem)
        return v

    @field_validator("value", mode="before")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        """A finite number; its sign is judged against the metric (`store.outcomes.check_event`)."""
        if v is None or v == "":
            return None
        return float(checked_number(v))

    @field_validator("ts")
    @classmethod
    def _in_utc(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return None
        try:
            utc = v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
        except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is past year 9999 in UTC
            utc = None
        if utc is None or not TS_MIN <= utc <= TS_MAX:
            raise ValueError("must be between 1970-01-01 and 9999-12-31 in UTC")
        return utc

    @field_validator("unit", "decision_id", "arm", "ts", "metric", mode="before")
    @classmethod
    def _blank_is_absent(cls, v: Any) -> Any:
        return None if v == "" else v


COLUMNS = frozenset(Event.model_fields)


@dataclass(frozen=True)
class RowSchema:
    """The columns a CSV header may name (in the order error messages list them) and those it must."""

    columns: tuple[str, ...]
    required: tuple[str, ...]


EVENT_ROWS = RowSchema(tuple(Event.model_fields), ("event_id", "experiment"))


def parse_event(raw: Any) -> Event:
    """Validate one raw event (a JSON object or CSV row) or raise `EventError` with the reason."""
    if isinstance(raw, Event):
        return raw
    if not isinstance(raw, dict):
        raise EventError(f"an event must be a JSON object, got {json_type(raw)}")
    try:
        event = Event.model_validate(raw)
    except ValidationError as exc:
        raise EventError("; ".join(field_reason(e, COLUMNS, "event") for e in exc.errors())) from None
    if event.type == "conversion" and event.decision_id is None and event.unit is None:
        raise EventError("a conversion needs decision_id or unit")
    if event.type == "exposure" and event.unit is None:
        raise EventError("unit: required for an exposure")
    if event.type == "exposure" and event.arm is None:
        raise EventError("arm: required for an exposure")
    return event


def field_reason(e: Any, columns: frozenset[str], whole: str) -> str:
    """One pydantic error of a row as `field: reason` (`whole` names the row itself)."""
    # An unknown field's name is the sender's text: quoted and cut, like any value.
    field = ".".join(p if p in columns else _short(p) for p in e["loc"]) or whole
    if e["type"] == "missing":
        return f"{field}: required"
    if e["type"] == "extra_forbidden":
        return f"{field}: unknown field"
    if e["type"] == "string_unicode":  # no store can encode a lone surrogate as UTF-8
        return f"{field}: must be valid Unicode (it holds a lone surrogate)"
    return f"{field}: {str(e['msg']).removeprefix('Value error, ')}"


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (`array`, not `list`)."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def reject_json_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(line: bytes | str) -> Any:
    """One JSON value, or `EventError` naming what is wrong with it.

    orjson parses (fast, and bounded in depth); what it refuses is parsed again by the standard
    library to say why, and to let the event's own validation name the field when the JSON is
    fine but its text is not storable (a lone surrogate escape)."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        pass
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
    except UnicodeDecodeError as exc:
        raise EventError(f"not valid UTF-8 (byte {exc.start + 1} of the line)") from None
    try:
        return json.loads(text, parse_constant=reject_json_constant)
    except RecursionError:
        raise EventError("malformed JSON: nested too deeply") from None
    except ValueError as exc:
        raise EventError(f"malformed JSON: {exc}") from None


@dataclass(frozen=True)
class RawRow:
    """A row read from a file: its line number, and the raw object or the reason it is unreadable."""

    line: int
    data: dict[str, Any] | None
    error: str | None = None


def format_of(path: Path) -> InputFormat | None:
    """The format a file's suffix names (`.csv`; `.jsonl`, `.ndjson`, `.json`), else None."""
    return _FORMAT_OF_SUFFIX.get(path.suffix.lower())


def open_events(path: Path) -> AbstractContextManager[BinaryIO]:
    """The file as bytes; `-` is standard input (left open)."""
    if path == STDIN:
        return nullcontext(sys.stdin.buffer)
    return path.open("rb")


def read_rows(path: Path, fmt: InputFormat | None = None, schema: RowSchema = EVENT_ROWS) -> Iterator[RawRow]:
    """Rows of a JSONL or CSV file, or of standard input for `-`, read once (pipes and FIFOs
    work). The format is `fmt`, else the suffix's, else sniffed: `{` first means JSONL. A CSV
    header must name columns of `schema`."""
    with open_events(path) as fh:
        yield from read_stream(fh, fmt or format_of(path), schema)


def read_stream(fh: BinaryIO, fmt: InputFormat | None = None, schema: RowSchema = EVENT_ROWS) -> Iterator[RawRow]:
    lines: Iterator[tuple[int, bytes | None]] = _lines(fh)
    if fmt is None:
        lines, fmt = _sniff(lines)
    yield from (_read_csv(lines, schema) if fmt == "csv" else _read_jsonl(lines))


def _lines(fh: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """Numbered lines, a leading BOM dropped; None for a line over `MAX_LINE_BYTES`, which is
    skipped to its end without being held."""
    for number in itertools.count(1):
        line: bytes | None = fh.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := fh.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            line = None
        elif number == 1:
            line = line.removeprefix(BOM)
        yield number, line


def _sniff(lines: Iterator[tuple[int, bytes | None]]) -> tuple[Iterator[tuple[int, bytes | None]], InputFormat]:
    """The format of a stream by its first non-blank byte, and the lines with those read put back."""
    seen = []
    for item in lines:
        seen.append(item)
        if item[1] is None or item[1].strip():
            break
    first = seen[-1][1] if seen else None
    fmt: InputFormat = "jsonl" if first is not None and first.lstrip().startswith(b"{") else "csv"
    return itertools.chain(seen, lines), fmt


def _read_jsonl(lines: Iterable[tuple[int, bytes | None]]) -> Iterator[RawRow]:
    for number, line in lines:
        if line is None:
            yield RawRow(number, None, f"longer than {MAX_LINE_BYTES:,} bytes")
            continue
        if not line.strip():
            continue
        try:
            data = parse_json(line)
        except EventError as exc:
            yield RawRow(number, None, str(exc))
            continue
        if not isinstance(data, dict):
            yield RawRow(number, None, f"each line must be a JSON object, got {json_type(data)}")
            continue
        yield RawRow(number, data)


def _read_csv(lines: Iterable[tuple[int, bytes | None]], schema: RowSchema) -> Iterator[RawRow]:
    """CSV rows by header. Bytes that are not UTF-8 are kept as surrogates while the row is
    split, so that such a row is refused alone; a spreadsheet's BOM, CRLF and empty rows are fine."""
    too_long: set[int] = set()

    def text() -> Iterator[str]:
        for number, line in lines:
            if line is None:
                too_long.add(number)
                yield "\n"
            else:
                yield line.decode("utf-8", "surrogateescape")

    rows = _csv_rows(csv.reader(text()))
    for start, row in rows:
        if isinstance(row, list) and _filled(row):
            columns = _columns(start, row, schema)
            break
        if isinstance(row, str):
            yield RawRow(start, None, row)
    else:
        return
    for start, row in rows:
        if start in too_long:
            yield RawRow(start, None, f"longer than {MAX_LINE_BYTES:,} bytes")
        elif isinstance(row, str):
            yield RawRow(start, None, row)
        elif _filled(row):
            yield _csv_row(start, row, columns)


def _csv_rows(reader: Any) -> Iterator[tuple[int, list[str] | str]]:
    """(first line, cells) per CSV record, or (first line, reason) for a record csv refuses."""
    end = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row = f"malformed CSV: {exc}"
        start, end = end + 1, reader.line_num
        yield start, row


def _filled(row: list[str]) -> bool:
    """Not an empty row (a spreadsheet writes those as a line of commas)."""
    return any(cell.strip() for cell in row)


def _columns(line: int, header: list[str], schema: RowSchema) -> list[str]:
    """The header's column names ('' for an unnamed column), or `EventFileError`."""
    names = [name.strip() for name in header]
    for name in names:
        if not _storable(name) or (name and name not in schema.columns):
            raise EventFileError(line, f"unknown column {_short(name)} (columns: {', '.join(schema.columns)})")
    for name in names:
        if name and names.count(name) > 1:
            raise EventFileError(line, f"column {name!r} appears more than once in the header")
    for name in schema.required:
        if name not in names:
            raise EventFileError(line, f"no column {name!r} in the header")
    return names


def _csv_row(line: int, row: list[str], columns: list[str]) -> RawRow:
    if len(row) != len(columns):
        return RawRow(line, None, f"{len(row)} fields, but the header names {len(columns)}")
    if not all(_storable(cell) for cell in row):
        return RawRow(line, None, "not valid UTF-8")
    for number, (name, cell) in enumerate(zip(columns, row, strict=True), start=1):
        if not name and cell.strip():
            return RawRow(line, None, f"a value in column {number}, which the header does not name")
    return RawRow(line, {name: cell for name, cell in zip(columns, row, strict=True) if name})


def _storable(text: str) -> bool:
    """No surrogates: in CSV text they stand for bytes that were not UTF-8 (a NUL is left to
    the field's own check, which names the field)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def utcnow() -> datetime:
    return datetime.now(UTC)
