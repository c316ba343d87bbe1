"""Event intake: conversions and imported exposures, applied in chunks of one transaction.

Bad events are reported by line and skipped while good ones are kept; duplicates (by
`event_id`) are counted, never applied twice. While the store is unreachable, events the
snapshot can vouch for wait in the spool. Rejections are handed to `on_reject` as they are
found, in line order, so that a file of a million bad rows is not held in memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.db import is_unavailable
from engine.events import Event, EventError, InputFormat, RawRow, parse_event, read_rows
from engine.health import StoreHealth
from engine.snapshot import Snapshot
from engine.store import Store, StoredExperiment, check_event
from engine.writes import INGEST_CHUNK, ExposureWriter

Progress = Callable[[int], None]
Reject = Callable[[int, str], None]
Rejection = tuple[int, str]
KEPT_REJECTIONS = 100  # what `ingest_file` keeps of its rejections; `rejected_count` counts them all


@dataclass
class IngestSummary:
    """`spooled` events were valid but the store was unreachable: they wait in the local spool.
    `rejected` holds the first `keep` rejections as (line, reason) (all when `keep` is None);
    `rejected_count` counts every one."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    spooled: int = 0
    rejected_count: int = 0
    keep: int | None = field(default=None, repr=False, compare=False)

    def reject(self, line: int, reason: str) -> None:
        self.rejected_count += 1
        if self.keep is None or len(self.rejected) < self.keep:
            self.rejected.append((line, reason))

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "spooled": self.spooled,
                "rejected": [{"line": line, "error": err} for line, err in self.rejected],
                "rejected_count": self.rejected_count}


class Intake:
    def __init__(self, store: Store, snapshot: Snapshot, writer: ExposureWriter, health: StoreHealth,
                 lock: threading.RLock) -> None:
        self.store = store
        self.snapshot = snapshot
        self.writer = writer
        self.health = health
        self._lock = lock

    def record(self, event: Mapping[str, Any] | Event) -> bool:
        """Apply one event; True if new (or spooled), False if its `event_id` was already recorded.
        Raises `EventError` with the reason for an invalid event."""
        summary = self.ingest([event])
        if summary.rejected:
            raise EventError(summary.rejected[0][1])
        return summary.accepted + summary.spooled == 1

    def ingest(self, events: Iterable[Mapping[str, Any] | Event | RawRow], progress: Progress | None = None,
               on_reject: Reject | None = None, keep_rejected: int | None = None) -> IngestSummary:
        """Apply events in chunks of one transaction each. Bad events are reported by line
        (`RawRow.line`, else their 1-based position) to `on_reject` and the summary (which keeps
        the first `keep_rejected`, all if None), and skipped; good ones are kept."""
        summary = IngestSummary(keep=keep_rejected)
        chunk: list[tuple[int, Event]] = []
        pending: list[Rejection] = []
        for position, item in enumerate(events, start=1):
            line, raw = (item.line, item.data) if isinstance(item, RawRow) else (position, item)
            if isinstance(item, RawRow) and item.error:
                pending.append((line, item.error))
            else:
                try:
                    chunk.append((line, parse_event(raw)))
                except EventError as exc:
                    pending.append((line, str(exc)))
            if len(chunk) >= INGEST_CHUNK or len(pending) >= INGEST_CHUNK:
                self._settle(chunk, pending, summary, progress, on_reject)
                chunk, pending = [], []
        self._settle(chunk, pending, summary, progress, on_reject)
        return summary

    def ingest_file(self, path: Path, progress: Progress | None = None, on_reject: Reject | None = None,
                    fmt: InputFormat | None = None, keep_rejected: int | None = KEPT_REJECTIONS) -> IngestSummary:
        """Ingest a JSONL or CSV file (`-` is standard input), read once; see `read_rows`."""
        return self.ingest(read_rows(path, fmt), progress, on_reject, keep_rejected)

    def _settle(self, chunk: list[tuple[int, Event]], pending: list[Rejection], summary: IngestSummary,
                progress: Progress | None, on_reject: Reject | None) -> None:
        """Apply a chunk, then report its rejections and those read with it, in line order."""
        for line, reason in sorted(pending + self._apply_chunk(chunk, summary, progress)):
            summary.reject(line, reason)
            if on_reject is not None:
                on_reject(line, reason)

    def _apply_chunk(self, chunk: list[tuple[int, Event]], summary: IngestSummary,
                     progress: Progress | None) -> list[Rejection]:
        """Apply the chunk; returns its rejections."""
        if not chunk:
            return []
        rejected: list[Rejection] = []
        known = self.snapshot.load()
        if any(ev.experiment not in known for _, ev in chunk):
            known = self.snapshot.load(force=True)
        stored = {k: v.stored for k, v in known.items()}
        spool = self.writer.spool
        try:
            self.writer.flush()  # conversions may name decisions still in the buffer
            outcome = self.store.apply_events(chunk, stored)
        except Exception as exc:
            if spool is None or not is_unavailable(exc):
                raise
            self.health.failed(exc, "recording events")
            rejected += self._spool_events(chunk, stored, summary)
        else:
            self.health.ok()
            summary.accepted += outcome.accepted
            summary.duplicates += outcome.duplicates
            if spool is not None and outcome.missing:
                # The exposure may still be in another replica's buffer or spool: wait for it.
                waiting = [(i, ev) for i, ev in chunk if i in outcome.missing]
                rejected += self._spool_events(waiting, stored, summary)
            rejected += [(i, reason) for i, reason in outcome.rejected if i not in outcome.missing or spool is None]
        with self._lock:
            for _, ev in chunk:
                if ev.experiment in known:
                    known[ev.experiment].observations_since += 1
        if progress is not None:
            progress(len(chunk))
        return rejected

    def _spool_events(self, chunk: list[tuple[int, Event]], known: dict[str, StoredExperiment],
                      summary: IngestSummary) -> list[Rejection]:
        """Keep the events the snapshot can vouch for; the rest are rejected now, not on replay
        (returned)."""
        keep, rejected = [], []
        for index, ev in chunk:
            try:
                check_event(ev, known)
            except EventError as exc:
                rejected.append((index, str(exc)))
            else:
                keep.append({"kind": "event", "event": ev.model_dump(mode="json"), "spooled_at": time.time()})
        assert self.writer.spool is not None
        self.writer.spool.append(keep)
        summary.spooled += len(keep)
        return rejected
