"""Unexpected faults: logged once with their traceback under an id the user is shown.

The CLI and the HTTP service answer a fault nothing expected with one line (or one JSON
body) naming an id; the log line with that id holds the traceback, passwords masked. The
store's engine hides SQL parameters, so no row data reaches the log either.
"""

from __future__ import annotations

import logging
import traceback
import uuid

from engine.redact import redact_text


def record_incident(log: logging.Logger, exc: BaseException, where: str) -> str:
    """Log `exc` with its traceback under a fresh id; returns the id."""
    incident = uuid.uuid4().hex[:12]
    log.error("internal error %s in %s:\n%s", incident, where, redact_text("".join(traceback.format_exception(exc))))
    return incident
