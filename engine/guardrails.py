"""Guardrail metrics read from the per-unit sums: every variant against the control, and the
control baselines that the planned sample needs (`policies.stats.guardrails`, `planning`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from engine.measures import MetricRole
from engine.spec import ExperimentSpec, Kind
from engine.store import Tally
from policies.stats.guardrails import GuardrailResult, guardrail_test
from policies.stats.planning import GuardrailDesign
from policies.sufficient import BinaryStats


def always_valid(spec: ExperimentSpec) -> bool:
    """Bandits look at their guardrails at every refresh: only an always-valid test is safe then."""
    return spec.kind is Kind.BANDIT or spec.analysis.sequential


def guardrail_results(spec: ExperimentSpec, tally: Tally, costs: Sequence[float]) -> list[GuardrailResult]:
    """One result per guardrail metric and variant (arm other than the control)."""
    control = spec.arm_keys.index(spec.control)
    out = []
    for metric in spec.measures:
        if metric.role is not MetricRole.GUARDRAIL:
            continue
        assert metric.margin is not None and metric.direction is not None  # spec validation
        stats = tally.stats(metric, costs)
        for i, arm in enumerate(spec.arm_keys):
            if i != control:
                out.append(guardrail_test(stats[i], stats[control], metric=metric.name, arm=arm, margin=metric.margin,
                                          direction=metric.direction.value, alpha=spec.analysis.alpha,
                                          sequential=always_valid(spec)))
    return out


def guardrail_designs(spec: ExperimentSpec, tally: Tally, costs: Sequence[float]) -> tuple[GuardrailDesign, ...]:
    """What planning needs of each guardrail, from the control's observed values; a guardrail
    with no positive baseline yet (no conversions in the control) cannot be planned and is left out."""
    control = spec.arm_keys.index(spec.control)
    out = []
    for metric in spec.measures:
        if metric.role is not MetricRole.GUARDRAIL:
            continue
        assert metric.margin is not None and metric.direction is not None
        stats = tally.stats(metric, costs)[control]
        if isinstance(stats, BinaryStats):
            if stats.rate is not None and 0 < stats.rate < 1:
                out.append(GuardrailDesign(metric.name, stats.rate, metric.margin, metric.direction.value))
        elif stats.mean is not None and stats.mean > 0 and (stats.variance or 0) > 0:
            out.append(GuardrailDesign(metric.name, stats.mean, metric.margin, metric.direction.value,
                                       math.sqrt(stats.variance or 0.0)))
    return tuple(out)
