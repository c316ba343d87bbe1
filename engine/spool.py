"""A bounded, durable local spool for writes the store could not take (it was unreachable).

Records are JSON lines appended to one file and fsync'ed before `append` returns, so a
process killed right after loses nothing it had acknowledged. `drain` hands every record to
a writer and truncates the file only after the writer succeeded; writers are idempotent
(exposures by `decision_id`, events by `event_id`), so a crash mid-drain replays safely.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("crosspromo")


class SpoolFullError(RuntimeError):
    """The spool reached its size bound; the caller should retry later."""


class Spool:
    def __init__(self, path: Path, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._owner: IO[bytes] | None = None
        path.parent.mkdir(parents=True, exist_ok=True)

    def _ends_torn(self) -> bool:
        size = self.size()
        if size == 0:
            return False
        with self.path.open("rb") as fh:
            fh.seek(size - 1)
            return fh.read(1) != b"\n"

    def take_ownership(self) -> bool:
        """Lock the file for this process's lifetime (released when it exits, even by SIGKILL).

        False if another live process holds it: a spool that can be taken is an orphan.
        """
        fh = self.path.open("ab")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        self._owner = fh
        return True

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        data = _encode(records)
        with self._lock:
            if self.size() + len(data) > self.max_bytes:
                raise SpoolFullError(f"local spool {self.path} is full ({self.max_bytes:,} bytes)")
            with self.path.open("ab") as fh:
                if self._ends_torn():
                    # A crash cut the last append short (it was never acknowledged): close its line
                    # so this record stays whole and readable.
                    fh.write(b"\n")
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())

    def drain(self, write: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> int:
        """Pass every spooled record to `write` (in order), which returns those to keep for a
        later drain; returns how many records left the spool."""
        with self._lock:
            if self.size() == 0:
                return 0
            with self.path.open("rb") as fh:
                lines = [line for line in fh if line.strip()]
            records = []
            for line in lines:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    # A torn line: its append never returned, so nobody was told it was kept.
                    log.warning("spool %s: skipped a torn record", self.path)
            keep = write(records)
            data = _encode(keep)
            with self.path.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            return len(records) - len(keep)


def _encode(records: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records).encode()
