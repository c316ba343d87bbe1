"""The users' social graph: edges upserted on (source, target, kind), read whole for refits.

Kinds and direction: `follow` is directed (`source` follows `target`: the follower sees what
the followee does, not the other way round); `share` and `referral` are undirected (both mark
an exchange between two people who know each other, and homophily, the reason a friend's
conversions predict one's own, runs both ways). An undirected edge is stored with its ends
in sorted order, so (a, b, share) and (b, a, share) are one edge.

An edge ingested again with the same weight is a duplicate and changes nothing; with another
weight, the new weight replaces the old one (`updated`). Within a chunk the last row of an
edge is the one applied, the earlier ones count as duplicates. Each chunk is read and written in the
caller's one transaction, with rows in key order so concurrent writers lock in one order; the
write is an atomic upsert (`INSERT ... ON CONFLICT (source, target, kind) DO UPDATE`), so two
writers of the same edge on PostgreSQL cannot both insert it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, NamedTuple, get_args

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection, Insert, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from engine.db import StoreError
from engine.tables import GRAPH_EDGES

EdgeKind = Literal["follow", "share", "referral"]
EDGE_KINDS: tuple[EdgeKind, ...] = get_args(EdgeKind)
DIRECTED_KINDS: frozenset[str] = frozenset({"follow"})
_KEY = (GRAPH_EDGES.c.source, GRAPH_EDGES.c.target, GRAPH_EDGES.c.kind)


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


def _upsert(dialect: str) -> Insert:
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if insert is None:
        raise StoreError(f"unsupported database {dialect!r}", "use SQLite or PostgreSQL")
    stmt = insert(GRAPH_EDGES)
    return stmt.on_conflict_do_update(index_elements=[c.name for c in _KEY],
                                      set_={"weight": stmt.excluded.weight, "updated_at": stmt.excluded.updated_at})


def upsert_edges(conn: Connection, items: Sequence[tuple[int, EdgeRecord]], now: datetime) -> EdgeOutcome:
    """Store the edges of `items` ((index, canonical edge), in file order): the last weight
    of an edge wins."""
    outcome = EdgeOutcome()
    if not items:
        return outcome
    latest = {edge.key: edge.weight for _, edge in items}  # a later row of an edge supersedes earlier ones
    keys = sorted(latest)
    stored = {(s, t, k): w for s, t, k, w in conn.execute(
        select(*_KEY, GRAPH_EDGES.c.weight).where(tuple_(*_KEY).in_(keys)))}
    outcome.duplicates = len(items) - len(latest)
    changed = []
    for key in keys:
        before, weight = stored.get(key), latest[key]
        if before == weight:
            outcome.duplicates += 1
            continue
        if before is None:
            outcome.accepted += 1
        else:
            outcome.updated += 1
        changed.append({"source": key[0], "target": key[1], "kind": key[2], "weight": weight, "updated_at": now})
    if changed:
        conn.execute(_upsert(conn.dialect.name), changed)
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
    """Every stored edge, streamed in batches."""
    result = conn.execution_options(yield_per=READ_BATCH).execute(select(*_KEY, GRAPH_EDGES.c.weight))
    return build_graph(row for part in result.partitions() for row in part)


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
