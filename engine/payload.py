"""What an arm's payload may hold: JSON values only, within 64-bit integers and a bounded depth.

A payload travels in every decision as JSON and is stored in the database, so it is checked when
the declaration is loaded (`ExperimentSpec`), and the loader uses `json_problems` to point at the
exact place of a value JSON cannot carry.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from engine.text import text_problem

Loc = tuple[str | int, ...]

# Integers must fit the 64 bits JSON parsers and databases agree on; nesting stays shallow.
INT64 = (-(2**63), 2**63 - 1)
MAX_PAYLOAD_DEPTH = 16


def _not_json(value: Any) -> str:
    """Why `value` is not a JSON value ('' if it is one); containers are judged by the caller."""
    if value is None or isinstance(value, bool | str):
        return text_problem(value) if isinstance(value, str) else ""
    if isinstance(value, int):
        return "" if INT64[0] <= value <= INT64[1] else "integer out of the 64-bit range; quote it to keep it as text"
    if isinstance(value, float):
        return "" if math.isfinite(value) else "NaN and infinity are not JSON numbers"
    if isinstance(value, dict | list | tuple):
        return ""
    kind = {"date": "a date", "datetime": "a timestamp", "bytes": "binary data", "set": "a set"}.get(
        type(value).__name__, f"a {type(value).__name__}")
    return f"{kind} is not a JSON value; quote it to keep it as text"


def json_problems(value: Any, max_depth: int | None = None) -> Iterator[tuple[Loc, str]]:
    """Every place in `value` that JSON cannot hold as is (location, reason): other types than
    null, booleans, text, finite numbers within 64 bits, lists and mappings with text keys.
    Iterative, so a deep value is judged without recursion; below `max_depth` nothing is walked."""
    stack: list[tuple[Loc, Any]] = [((), value)]
    while stack:
        loc, item = stack.pop()
        if reason := _not_json(item):
            yield loc, reason
        elif isinstance(item, dict | list | tuple):
            if max_depth is not None and len(loc) >= max_depth:
                yield loc, f"nested deeper than {max_depth} levels"
                continue
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            children = []
            for key, child in pairs:
                if isinstance(item, dict) and not isinstance(key, str):
                    yield (*loc, key if isinstance(key, int) else str(key)), f"keys must be text, got {key!r}; quote it"
                elif isinstance(item, dict) and (problem := text_problem(key)):
                    yield (*loc, key), problem
                else:
                    children.append(((*loc, key), child))
            stack += reversed(children)


def _json_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """Refuse a payload JSON cannot carry; the error's `at` names the place inside the payload."""
    for loc, reason in json_problems(payload, MAX_PAYLOAD_DEPTH):
        raise PydanticCustomError("json_value", "{reason}", {"reason": reason, "at": loc})
    return payload


JsonPayload = Annotated[dict[str, Any], AfterValidator(_json_payload)]
