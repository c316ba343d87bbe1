"""Whether the store answered: every part of the engine reports its store calls here.

An unreachable store is an outage to ride out (decisions from the snapshot with `STALE`,
writes to the spool); any other store error is a bug or a bad row and is raised.
"""

from __future__ import annotations

import logging

from engine.db import first_line, is_unavailable

log = logging.getLogger("crosspromo")


class StoreHealth:
    def __init__(self) -> None:
        self.stale = False

    def failed(self, exc: Exception, doing: str) -> None:
        """Note an outage (logged once), or re-raise `exc` if it is not one."""
        if not is_unavailable(exc):
            raise exc
        if not self.stale:
            log.warning("store unreachable while %s: %s; serving from the snapshot", doing, first_line(exc))
        self.stale = True

    def ok(self) -> None:
        if self.stale:
            log.warning("store reachable again")
        self.stale = False
