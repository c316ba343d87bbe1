"""An experiment's metrics: what is measured, over which window, with which role in the verdict.

A conversion counts when it falls within `window` (`7d`, `12h`) of the unit's first exposure.
The primary metric decides a winner; secondary metrics are reported beside it; a guardrail is
tested for non-inferiority at `margin` (relative harm) in its `direction`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,127}$")]
Loc = tuple[str | int, ...]


class MetricType(StrEnum):
    BINARY = "binary"
    REVENUE = "revenue"


class MetricRole(StrEnum):
    PRIMARY = "primary"
    SECONDARY = "secondary"
    GUARDRAIL = "guardrail"


class Direction(StrEnum):
    """Which way a guardrail must not move: `decrease` guards a metric that should fall or stay
    (unsubscribes, complaints), so harm is an increase; `increase` guards one that should not fall."""

    INCREASE = "increase"
    DECREASE = "decrease"


class AnalysisUnit(StrEnum):
    USER = "user"
    DECISION = "decision"


WINDOW_SECONDS = {"h": 3600, "d": 86400}
def _window(value: str) -> str:
    if not re.fullmatch(r"[1-9][0-9]{0,4}[hd]", value):
        raise ValueError(f"must be a whole number of hours or days, such as 12h or 7d, got {value!r}")
    return value


Window = Annotated[str, AfterValidator(_window)]


class Metric(BaseModel):
    """One measured outcome. A conversion counts when it falls within `window` (`7d`, `12h`) of
    the unit's first exposure; a guardrail is tested for non-inferiority at `margin` (relative
    harm) in `direction`; `net: true` subtracts the arms' cost per decision from a revenue metric."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    name: Slug
    type: MetricType = MetricType.BINARY
    role: MetricRole = MetricRole.PRIMARY
    window: Window | None = None
    direction: Direction | None = None
    margin: Annotated[float, Field(gt=0.0, le=10.0, allow_inf_nan=False)] | None = None
    net: bool = False
    allow_negative: bool = False

    @property
    def window_seconds(self) -> float | None:
        return None if self.window is None else int(self.window[:-1]) * WINDOW_SECONDS[self.window[-1]]

    @property
    def revenue(self) -> bool:
        return self.type is MetricType.REVENUE


def metric_problems(metric: Metric | None, metrics: Sequence[Metric] | None) -> Iterator[tuple[Loc, str]]:
    """Rules across an experiment's metrics (`metric:` shorthand or `metrics:` list), each with
    the location of the offending field."""
    if (metric is None) == (metrics is None):
        where: Loc = ("metrics",) if metrics is not None else ()
        yield where, ("declare `metric:` (one primary metric) or `metrics:` (a list), not both"
                      if metrics is not None else "missing: declare `metric:` or `metrics:`")
        return
    listed = metrics is not None
    declared = metrics or (metric,)
    primaries = [i for i, m in enumerate(declared) if m and m.role is MetricRole.PRIMARY]
    if len(primaries) != 1:
        yield ("metrics",) if listed else ("metric", "role"), (
            f"exactly one metric must have role: primary, found {len(primaries)}")
    seen: dict[str, int] = {}
    for i, m in enumerate(declared):
        assert m is not None
        at: Loc = ("metrics", i) if listed else ("metric",)
        if m.name in seen:
            yield (*at, "name"), f"duplicate metric name {m.name!r} (also metrics[{seen[m.name]}])"
        seen.setdefault(m.name, i)
        guardrail = m.role is MetricRole.GUARDRAIL
        if guardrail and (m.margin is None or m.direction is None):
            yield (*at, "margin" if m.margin is None else "direction"), (
                "a guardrail needs a margin (relative harm it tolerates, e.g. 0.2) and a direction "
                "(decrease: it should not rise; increase: it should not fall)")
        if guardrail and m.direction is Direction.INCREASE and m.margin is not None and m.margin >= 1:
            yield (*at, "margin"), "a metric that must not fall can fall by less than 100%: use a margin below 1"
        if not guardrail:
            for name in ("margin", "direction"):
                if getattr(m, name) is not None:
                    yield (*at, name), "applies to guardrail metrics only"
        for name in ("net", "allow_negative"):
            if getattr(m, name) and not m.revenue:
                yield (*at, name), "applies to revenue metrics only"
