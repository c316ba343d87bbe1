"""crosspromo's adapters: YAML declarations, the store, the decide path, CLI and reports."""

from engine.api import Engine, IngestSummary, Plan, UnknownExperimentError, UnsafeChangeError
from engine.decision import Decision, Reason
from engine.events import Event, EventError
from engine.loader import SpecError, SpecProblem, load_spec, load_specs, parse_spec
from engine.spec import ExperimentSpec

__all__ = [
    "Decision", "Engine", "Event", "EventError", "ExperimentSpec", "IngestSummary", "Plan", "Reason",
    "SpecError", "SpecProblem", "UnknownExperimentError", "UnsafeChangeError", "load_spec",
    "load_specs", "parse_spec",
]
