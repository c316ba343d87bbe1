"""The README's YAML reference shows the code's defaults."""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, get_args

import yaml
from pydantic import BaseModel

from engine.measures import Metric
from engine.spec import ExperimentSpec, ThompsonPolicy
from tests.samples import REPO

# Values the reference shows as examples: required fields and settings whose default is "none".
EXAMPLES = {
    "key", "name", "owner", "hypothesis", "status", "kind", "policy.name", "metrics.name", "eligibility.channels_from",
    "arms.key", "arms.campaign", "arms.partner", "arms.channel", "arms.tags", "arms.description", "arms.weight",
    "arms.payload", "default_arm", "analysis.control", "targeting.recommender", "targeting.segments_from",
}


def reference_block() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## YAML reference", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match
    return match.group(1)


def plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    return list(value) if isinstance(value, tuple) else value


def differences(model: type[BaseModel], data: dict[str, Any], prefix: str = "") -> list[str]:
    """Fields of `data` whose shown value is not `model`'s default (examples aside)."""
    found = []
    for name, value in data.items():
        field = model.model_fields.get(name) or model.model_fields[f"{name}_"]
        path = prefix + name
        nested = [t for t in (field.annotation, *get_args(field.annotation)) if isinstance(t, type)
                  and issubclass(t, BaseModel)]
        if name == "policy":
            nested = [ThompsonPolicy]
        if nested and isinstance(value, dict):
            found += differences(nested[0], value, path + ".")
        elif name == "arms":
            found += [d for arm in value for d in differences(get_args(field.annotation)[0], arm, "arms.")]
        elif name == "metrics":
            found += [d for metric in value for d in differences(Metric, metric, "metrics.")]
        elif path not in EXAMPLES and plain(field.get_default(call_default_factory=True)) != value:
            found.append(f"{path}: shows {value!r}, default {plain(field.get_default())!r}")
    return found


def test_the_reference_shows_the_defaults() -> None:
    data = yaml.safe_load(reference_block())
    assert differences(ExperimentSpec, data) == []

