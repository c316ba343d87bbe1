"""Social graph intake: edges from a JSONL or CSV file or an HTTP batch, validated, then
upserted in chunks of one transaction each (`engine.store.graph` says which kinds are directed).

An edge is `{source, target, kind, weight}`: `source` and `target` are two different unit ids
(the ids services pass to `decide`: 1 to 256 characters of storable text), `kind` is follow,
share or referral, and `weight` a finite number > 0 (default 1; an empty CSV cell is the
default). Bad rows are reported by line (by position for a batch) and skipped, good rows are
kept; rejections are handed to `on_reject` as they are found, in line order, so a file of a
million bad rows is not held in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.events import InputFormat, RawRow, RowSchema, checked_number, field_reason, json_type, read_rows
from engine.intake import KEPT_REJECTIONS, IngestSummary, Progress, Reject, Rejection
from engine.store import EdgeRecord, Store
from engine.store.graph import EdgeKind, StoredGraph, build_graph, canonical
from engine.text import text_problem

EDGE_CHUNK = 5_000


class EdgeError(ValueError):
    """An edge that cannot be stored; the message says why."""


class Edge(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1, max_length=256)
    target: str = Field(min_length=1, max_length=256)
    kind: EdgeKind
    weight: float = 1.0

    @field_validator("source", "target")
    @classmethod
    def _storable_text(cls, v: str) -> str:
        if problem := text_problem(v):
            raise ValueError(problem)
        return v

    @field_validator("weight", mode="before")
    @classmethod
    def _finite_positive(cls, v: Any) -> Any:
        if v is None or v == "":
            return 1.0
        v = checked_number(v)
        if not v > 0:
            raise ValueError("must be > 0")
        return float(v)

    @model_validator(mode="after")
    def _two_units(self) -> Edge:
        if self.source == self.target:
            raise ValueError("target: an edge joins two different units; source and target are the same")
        return self


EDGE_COLUMNS = frozenset(Edge.model_fields)
EDGE_ROWS = RowSchema(tuple(Edge.model_fields), ("source", "target", "kind"))


def parse_edge(raw: Any) -> EdgeRecord:
    """Validate one raw edge (a JSON object or CSV row) into its stored form, or `EdgeError`."""
    if not isinstance(raw, dict):
        raise EdgeError(f"an edge must be a JSON object, got {json_type(raw)}")
    try:
        edge = Edge.model_validate(raw)
    except ValidationError as exc:
        raise EdgeError("; ".join(_reason(e) for e in exc.errors())) from None
    return canonical(edge.source, edge.target, edge.kind, edge.weight)


def _reason(e: Any) -> str:
    reason = field_reason(e, EDGE_COLUMNS, "edge")
    # The cross-field rule's message names its field itself.
    return reason.removeprefix("edge: ") if e["type"] == "value_error" and not e["loc"] else reason


@dataclass
class GraphSummary(IngestSummary):
    """An ingest's counts: new edges (`accepted`), edges whose weight changed (`updated`),
    rows that changed nothing (`duplicates`) and the rejections (as `IngestSummary` keeps
    them). Edges are never spooled: without a store they are refused, not kept for later."""

    updated: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        del data["spooled"]
        return {"accepted": self.accepted, "updated": self.updated} | data


def ingest_edges(store: Store, rows: Iterable[Mapping[str, Any] | RawRow], progress: Progress | None = None,
                 on_reject: Reject | None = None, keep_rejected: int | None = None) -> GraphSummary:
    """Upsert edges in chunks of one transaction each. Bad rows are reported by line
    (`RawRow.line`, else their 1-based position) to `on_reject` and the summary (which keeps
    the first `keep_rejected`, all if None), and skipped; good rows are kept."""
    summary = GraphSummary(keep=keep_rejected)
    chunk: list[tuple[int, EdgeRecord]] = []
    pending: list[Rejection] = []
    for position, item in enumerate(rows, start=1):
        line, raw = (item.line, item.data) if isinstance(item, RawRow) else (position, item)
        if isinstance(item, RawRow) and item.error:
            pending.append((line, item.error))
        else:
            try:
                chunk.append((line, parse_edge(raw)))
            except EdgeError as exc:
                pending.append((line, str(exc)))
        if len(chunk) + len(pending) >= EDGE_CHUNK:
            _settle(store, chunk, pending, summary, progress, on_reject)
            chunk, pending = [], []
    _settle(store, chunk, pending, summary, progress, on_reject)
    return summary


def ingest_edge_file(store: Store, path: Path, progress: Progress | None = None, on_reject: Reject | None = None,
                     fmt: InputFormat | None = None, keep_rejected: int | None = KEPT_REJECTIONS) -> GraphSummary:
    """Ingest a JSONL or CSV file of edges (`-` is standard input), read once."""
    return ingest_edges(store, read_rows(path, fmt, EDGE_ROWS), progress, on_reject, keep_rejected)


def read_edge_file(path: Path, fmt: InputFormat | None = None) -> tuple[StoredGraph, list[Rejection]]:
    """The edges of a file as a graph in memory (the last row of an edge wins, as in the store)
    and the (line, reason) of its bad rows."""
    edges: dict[tuple[str, str, str], EdgeRecord] = {}
    problems: list[Rejection] = []
    for row in read_rows(path, fmt, EDGE_ROWS):
        try:
            if row.error:
                raise EdgeError(row.error)
            edge = parse_edge(row.data)
        except EdgeError as exc:
            problems.append((row.line, str(exc)))
            continue
        edges[edge.key] = edge
    return build_graph(edges.values()), problems


def _settle(store: Store, chunk: list[tuple[int, EdgeRecord]], pending: list[Rejection], summary: GraphSummary,
            progress: Callable[[int], None] | None, on_reject: Reject | None) -> None:
    """Store a chunk, then report its rejections and those read with it, in line order."""
    outcome = store.upsert_edges(chunk)
    summary.accepted += outcome.accepted
    summary.updated += outcome.updated
    summary.duplicates += outcome.duplicates
    for line, reason in sorted(pending + outcome.rejected):
        summary.reject(line, reason)
        if on_reject is not None:
            on_reject(line, reason)
    if progress is not None:
        progress(len(chunk) + len(pending))
