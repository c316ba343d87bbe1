"""The users' social graph: edges upserted on (source, target, kind), read whole for refits.

Kinds and direction: `follow` is directed (`source` follows `target`: the follower sees what
the followee does, not the other way round); `share` and `referral` are undirected (both mark
an exchange between two people who know each other, and homophily, the reason a friend's
conversions predict one's own, runs both ways). An undirected edge is stored with its ends
in sorted order, so (a, b, share) and (b, a, share) are one edge.

An edge ingested again with the same weight is a duplicate and changes nothing; with another
weight, the new weight replaces the old one (`updated`). Within a chunk the last row of an
edge is the one applied, the earlier ones count as duplicates. A chunk is one atomic upsert
(`INSERT ... ON CONFLICT (source, target, kind) DO UPDATE ... WHERE the weight differs`) in the
caller's transaction: no read before the write, and two writers of one edge on PostgreSQL
cannot both insert it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any, Literal, NamedTuple, get_args

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection, func, select

from engine.db import StoreError
from engine.tables import GRAPH_EDGES

EdgeKind = Literal["follow", "share", "referral"]
EDGE_KINDS: tuple[EdgeKind, ...] = get_args(EdgeKind)
DIRECTED_KINDS: frozenset[str] = frozenset({"follow"})


class EdgeRecord(NamedTuple):
    """An edge as stored: undirected kinds with `source` < `target` (see `canonical`)."""

    source: str
    target: str
    kind: str
    weight: float

    @property
    def key(self) -> tuple[str, str, str]:
        return self.source, self.target, self.kind


def canonical(source: str, target: str, kind: str, weight: float) -> EdgeRecord:
    """The stored form of an edge: the ends of an undirected one in sorted order."""
    if kind not in DIRECTED_KINDS and target < source:
        source, target = target, source
    return EdgeRecord(source, target, kind, weight)


@dataclass
class EdgeOutcome:
    """Per chunk: new edges, edges whose weight changed, rows that changed nothing, and rows
    the database refused as (index, reason)."""

    accepted: int = 0
    updated: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def merged(self, other: EdgeOutcome) -> EdgeOutcome:
        return EdgeOutcome(self.accepted + other.accepted, self.updated + other.updated,
                           self.duplicates + other.duplicates, self.rejected + other.rejected)


# One statement per part of a chunk, on SQLite and PostgreSQL alike (both have ON CONFLICT ...
# DO UPDATE ... WHERE and RETURNING): a row comes back when it was inserted or its weight changed,
# and `created_at = updated_at` tells which. 6 values a row: under SQLite's 32,766 parameters.
_UPSERT = (f"INSERT INTO {GRAPH_EDGES.name} (source, target, kind, weight, created_at, updated_at) VALUES {{rows}} "
           f"ON CONFLICT (source, target, kind) DO UPDATE SET weight = excluded.weight, "
           f"updated_at = excluded.updated_at WHERE {GRAPH_EDGES.name}.weight <> excluded.weight "
           f"RETURNING created_at = updated_at")
ROWS_PER_STATEMENT = 5_000


def _mark(conn: Connection) -> str:
    """The driver's positional placeholder: statements go to the driver as they are, values as
    plain tuples (SQLAlchemy's per-value processing would cost more than the write)."""
    if conn.dialect.name not in ("sqlite", "postgresql"):
        raise StoreError(f"unsupported database {conn.dialect.name!r}", "use SQLite or PostgreSQL")
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _timestamp(conn: Connection, now: datetime) -> Any:
    """`now` as the column stores it (SQLite keeps text), as SQLAlchemy would bind it."""
    column = GRAPH_EDGES.c.updated_at.type
    process = column.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return process(now) if process is not None else now


def upsert_edges(conn: Connection, items: Sequence[tuple[int, EdgeRecord]], now: datetime) -> EdgeOutcome:
    """Store the edges of `items` ((index, canonical edge), in file order): the last weight
    of an edge wins. Rows go in key order, so concurrent writers lock rows in one order."""
    latest = {edge.key: edge.weight for _, edge in items}  # a later row of an edge supersedes earlier ones
    outcome = EdgeOutcome(duplicates=len(items) - len(latest))
    stamp = _timestamp(conn, now)
    rows = [(*key, weight, stamp, stamp) for key, weight in sorted(latest.items())]
    row_marks = "(" + ", ".join([_mark(conn)] * 6) + ")"
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        part = rows[start:start + ROWS_PER_STATEMENT]
        changed = conn.exec_driver_sql(_UPSERT.format(rows=", ".join([row_marks] * len(part))),
                                       tuple(chain.from_iterable(part))).all()
        inserted = sum(1 for (fresh,) in changed if fresh)
        outcome.accepted += inserted
        outcome.updated += len(changed) - inserted
        outcome.duplicates += len(part) - len(changed)
    return outcome


@dataclass(frozen=True, eq=False)
class StoredGraph:
    """The whole graph as arrays: `units[i]` names unit index i; one entry per edge."""

    units: list[str]
    sources: NDArray[np.intp]
    targets: NDArray[np.intp]
    weights: NDArray[np.float64]
    directed: NDArray[np.bool_]

    @property
    def size(self) -> int:
        return len(self.sources)


READ_BATCH = 50_000


def read_graph(conn: Connection) -> StoredGraph:
    """Every stored edge, streamed in batches of plain tuples."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"SELECT source, target, kind, weight FROM {GRAPH_EDGES.name}")
        return build_graph(row for batch in iter(lambda: cursor.fetchmany(READ_BATCH), []) for row in batch)
    finally:
        cursor.close()


def build_graph(edges: Iterable[tuple[str, str, str, float]]) -> StoredGraph:
    """Arrays of (source, target, kind, weight) edges; units are indexed in the order first met."""
    index: dict[str, int] = {}
    sources: list[int] = []
    targets: list[int] = []
    weights: list[float] = []
    directed: list[bool] = []
    for source, target, kind, weight in edges:
        sources.append(index.setdefault(source, len(index)))
        targets.append(index.setdefault(target, len(index)))
        weights.append(weight)
        directed.append(kind in DIRECTED_KINDS)
    return StoredGraph(list(index), np.array(sources, dtype=np.intp), np.array(targets, dtype=np.intp),
                       np.array(weights, dtype=float), np.array(directed, dtype=bool))


def count_edges(conn: Connection) -> dict[str, int]:
    """Edges per kind (every kind listed, 0 when absent)."""
    counts = dict(conn.execute(select(GRAPH_EDGES.c.kind, func.count()).group_by(GRAPH_EDGES.c.kind)).all())
    return {kind: int(counts.get(kind, 0)) for kind in EDGE_KINDS}
