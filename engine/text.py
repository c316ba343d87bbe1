"""Text every store can hold: the edge check that keeps poison rows out.

PostgreSQL refuses NUL in text and no driver can encode a lone surrogate as UTF-8 (what a
shell passes for undecodable bytes), so such strings are refused where they enter — units,
contexts, event fields — with the field named, before anything is logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_CONTEXT_DEPTH = 8


class BadTextError(ValueError):
    """A string no store can hold; the message names the field."""


def text_problem(value: str) -> str:
    """Why no store can hold `value` ('' if one can): the one rule behind every edge check."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid UTF-8 text (an undecodable byte or a lone surrogate at position {exc.start})"
    return ""


def check_text(field: str, value: str) -> str:
    if problem := text_problem(value):
        raise BadTextError(f"{field}: {problem}")
    return value


def check_context(context: Mapping[str, Any], field: str = "context") -> None:
    """Every key and string value of a decision context, nested lists and mappings included."""
    def walk(value: Any, where: str, depth: int) -> None:
        if depth > MAX_CONTEXT_DEPTH:
            raise BadTextError(f"{where}: nested deeper than {MAX_CONTEXT_DEPTH} levels")
        if isinstance(value, str):
            check_text(where, value)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, f"{where}.{check_text(where + ' key', str(k))}", depth + 1)
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]", depth + 1)

    walk(context, field, 0)
