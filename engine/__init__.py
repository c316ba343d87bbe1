"""crosspromo's adapters: YAML declarations, the store, the decide path, CLI and reports.

The names below load on first use (PEP 562): `import engine.cli` or `engine.loader` must not
pay for the store (SQLAlchemy), the analysis (scipy) or the server.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.api import Engine, IngestSummary, Plan, UnknownExperimentError, UnsafeChangeError
    from engine.decision import Decision, Reason
    from engine.events import Event, EventError
    from engine.loader import SpecError, SpecProblem, load_spec, load_specs, parse_spec
    from engine.spec import ExperimentSpec

_HOME = {
    "Engine": "engine.api", "IngestSummary": "engine.api", "Plan": "engine.api",
    "UnknownExperimentError": "engine.api", "UnsafeChangeError": "engine.api",
    "Decision": "engine.decision", "Reason": "engine.decision",
    "Event": "engine.events", "EventError": "engine.events",
    "SpecError": "engine.loader", "SpecProblem": "engine.loader", "load_spec": "engine.loader",
    "load_specs": "engine.loader", "parse_spec": "engine.loader",
    "ExperimentSpec": "engine.spec",
}
__all__ = [
    "Decision", "Engine", "Event", "EventError", "ExperimentSpec", "IngestSummary", "Plan", "Reason",
    "SpecError", "SpecProblem", "UnknownExperimentError", "UnsafeChangeError", "load_spec",
    "load_specs", "parse_spec",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
