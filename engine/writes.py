"""The exposure write buffer and its fallback, the spool.

Decisions append their exposures to an in-memory buffer written in batches (one
transaction each). While the store is unreachable a batch goes to the local spool, which is
drained back into the store, idempotently, once it answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from engine.config import EngineConfig
from engine.db import StoreError, is_unavailable
from engine.events import parse_event
from engine.health import StoreHealth
from engine.spool import Spool, SpoolFullError
from engine.store import Exposure, Store, StoredExperiment
from engine.store.decisions import ExposureBatch

log = logging.getLogger("crosspromo")

INGEST_CHUNK = 500
SPOOL_WAIT_FOR_EXPOSURE = 600.0  # seconds a spooled conversion waits for its exposure to arrive


class ExposureWriter:
    def __init__(self, store: Store, config: EngineConfig, health: StoreHealth, spool: Spool | None,
                 clock: Callable[[], float], lock: threading.RLock) -> None:
        self.store = store
        self.config = config
        self.health = health
        self.spool = spool
        # Oldest first: a block per batch decision, a row per single one (no columns for one row).
        self._blocks: list[ExposureBatch | Exposure] = []
        self._buffered = 0
        self._clock = clock
        self._lock = lock
        self._flush_lock = threading.Lock()
        self._last_flush = clock()

    @property
    def buffer(self) -> list[Exposure]:
        """The buffered exposures, oldest first (a copy)."""
        return list(_joined(self._blocks)) if self._blocks else []

    @buffer.setter
    def buffer(self, exposures: Sequence[Exposure]) -> None:
        self._blocks, self._buffered = [ExposureBatch.of(exposures)], len(exposures)

    @property
    def full(self) -> bool:
        """Past `exposure_max_buffered`: a decision waits for the write (backpressure)."""
        return self._buffered >= self.config.exposure_max_buffered

    def check_room(self) -> None:
        """Refuse a new exposure (before it is logged) while twice `exposure_max_buffered` wait
        for a store that does not take them: memory stays bounded, and a caller that retries the
        refused decision cannot log it twice."""
        if self._buffered >= 2 * self.config.exposure_max_buffered:
            raise StoreError(f"{self._buffered:,} exposures wait for the store: no room for more",
                             "the store is not taking writes; retry when it answers")

    def append(self, exposures: ExposureBatch | Exposure, background: bool) -> bool:
        """Buffer `exposures` (under the engine's lock); True if the buffer is due for a flush:
        full, or — without a background thread to flush it, and unless the store just failed (a
        reload of the snapshot tells when it is back) — past its batch size or age."""
        self._blocks.append(exposures)
        self._buffered += len(exposures) if isinstance(exposures, ExposureBatch) else 1
        return self._buffered >= self.config.exposure_max_buffered or not (background or self.health.stale) and (
            self._buffered >= self.config.exposure_batch_size
            or self._clock() - self._last_flush >= self.config.exposure_flush_seconds)

    def flush(self) -> int:
        """Write buffered exposures; returns how many were written (0 if they went to the spool).

        One flush at a time: a caller that needs the buffer in the store (a conversion about to
        name a decision) waits for a flush already under way instead of finding the buffer empty.
        """
        with self._flush_lock:
            with self._lock:
                blocks, self._blocks, self._buffered = self._blocks, [], 0
                self._last_flush = self._clock()
            if not blocks:
                return 0
            batch = _joined(blocks)
            try:
                written = self.store.log_exposures(batch)
            except Exception as exc:
                if self.spool is None or not is_unavailable(exc):
                    self._requeue(batch)
                    raise
                self.health.failed(exc, "logging exposures")
                try:
                    self.spool.append([{"kind": "exposure", **_exposure_record(e)} for e in batch])
                except SpoolFullError:
                    self._requeue(batch)
                    raise
                return 0
            self.health.ok()
            return written

    def _requeue(self, batch: ExposureBatch) -> None:
        with self._lock:
            self._blocks.insert(0, batch)  # kept for the next flush
            self._buffered += len(batch)

    def drain_spool(self, experiments: Callable[[], dict[str, StoredExperiment]]) -> int:
        """Write what the spool holds into the store (idempotently); returns how many records.
        `experiments` gives the freshest experiments: an adopted spool may name any."""
        if self.spool is None:
            return 0
        return self.spool.drain(lambda records: self._replay(records, experiments))

    def _replay(self, records: list[dict[str, Any]],
                experiments: Callable[[], dict[str, StoredExperiment]]) -> list[dict[str, Any]]:
        """Write spooled records; returns the conversions to keep for later.

        Another replica may still hold the exposure a conversion names in its own spool, so
        such conversions wait (up to SPOOL_WAIT_FOR_EXPOSURE) instead of being dropped.
        """
        exposures = [_exposure_from_record(r) for r in records if r["kind"] == "exposure"]
        self.store.log_exposures(exposures)
        events = [(i, parse_event(r["event"])) for i, r in enumerate(records) if r["kind"] == "event"]
        known = experiments()
        keep = []
        now = time.time()
        for start in range(0, len(events), INGEST_CHUNK):
            outcome = self.store.apply_events(events[start:start + INGEST_CHUNK], known)
            for index, reason in outcome.rejected:
                record = records[index]
                if index in outcome.missing and now - record["spooled_at"] < SPOOL_WAIT_FOR_EXPOSURE:
                    keep.append(record)
                else:
                    log.warning("spooled event %s rejected on replay: %s", record["event"].get("event_id"), reason)
        return keep


def _joined(blocks: list[ExposureBatch | Exposure]) -> ExposureBatch:
    """One batch of buffered blocks and rows, in their order; runs of rows become one block."""
    parts: list[ExposureBatch] = []
    rows: list[Exposure] = []
    for block in blocks:
        if isinstance(block, ExposureBatch):
            if rows:
                parts.append(ExposureBatch.of(rows))
                rows = []
            parts.append(block)
        else:
            rows.append(block)
    if rows:
        parts.append(ExposureBatch.of(rows))
    return ExposureBatch.concat(parts)


def _exposure_record(e: Exposure) -> dict[str, Any]:
    return {f: (v.isoformat() if isinstance(v, datetime) else v) for f, v in e._asdict().items()}


def _exposure_from_record(r: dict[str, Any]) -> Exposure:
    values = {k: v for k, v in r.items() if k != "kind"}
    values["ts"] = datetime.fromisoformat(values["ts"])
    return Exposure(**values)
