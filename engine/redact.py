"""Secrets never reach a message or a log line: database URLs lose their password here.

Every place that prints or logs a database URL, or text that may quote one (a driver's
error, a traceback), passes it through `redact_url` or `redact_text`. Stdlib only, so the
CLI can use it before (or without) loading the database layer.
"""

from __future__ import annotations

import re

MASK = "***"
# scheme://user:password@ — the password runs to the last '@' of the authority (before any
# '/', '?' or '#'), so an unencoded '@' in it is masked too and one in the query is left alone;
# and password=... as a URL query parameter or a libpq setting.
_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<password>[^\s/?#]*)@")
_PASSWORD_SETTING = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<password>[^&\s'\"]*)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with its password (if any) replaced by ***; anything else is kept as given."""
    return redact_text(url)


def redact_text(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    text = _CREDENTIALS.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _PASSWORD_SETTING.sub(lambda m: f"{m['head']}{MASK}", text)
