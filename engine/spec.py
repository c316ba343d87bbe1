"""The experiment declaration: a frozen, validated model of one `experiments/*.yaml` file.

Field-level rules live on the models (pydantic reports all of them at once); rules that
relate fields to each other live in `cross_field_problems`, which names the exact field so
the loader can point at its line and column. Why one piece (about 400 lines): the models and
the rules relating their fields are one schema, the one the README's YAML reference documents.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from engine.measures import AnalysisUnit, Metric, MetricRole, MetricType, metric_problems
from engine.payload import JsonPayload, Loc
from engine.text import text_problem
from policies.bandits.registry import Policy, make_policy

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,127}$")]
# A context attribute's name: a letter or underscore, then letters, digits, `_`, `.` or `-`.
AttributeName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]

class Status(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    CONCLUDED = "concluded"


class Kind(StrEnum):
    BANDIT = "bandit"
    AB_TEST = "ab_test"


class Channel(StrEnum):
    EMAIL = "email"
    PUSH = "push"
    SMS = "sms"
    IN_APP = "in_app"
    SOCIAL = "social"


class Correction(StrEnum):
    HOLM = "holm"
    BH = "bh"
    BONFERRONI = "bonferroni"
    NONE = "none"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Prior(Model):
    alpha: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    beta: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0


class UpdateCadence(Model):
    """How often a bandit's weights are recomputed from the stored aggregates."""

    every_outcomes: Annotated[int, Field(ge=1)] = 1000
    every_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 30.0


class FixedPolicy(Model):
    name: Literal["fixed"] = "fixed"


class ThompsonPolicy(Model):
    name: Literal["thompson"]
    prior: Prior = Prior()
    min_weight: Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)] = 0.0
    top_two: Annotated[float, Field(gt=0.0, lt=1.0, allow_inf_nan=False)] | None = None
    discount: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] | None = None
    window: Annotated[int, Field(ge=1)] | None = None
    update: UpdateCadence = UpdateCadence()


class EpsilonGreedyPolicy(Model):
    name: Literal["epsilon_greedy"]
    epsilon: Probability = 0.1
    decay: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0
    update: UpdateCadence = UpdateCadence()


PolicySpec = Annotated[
    FixedPolicy | ThompsonPolicy | EpsilonGreedyPolicy, Field(discriminator="name")
]


class Traffic(Model):
    coverage: Probability = 1.0
    seed: str | None = None
    phase: Annotated[int, Field(ge=1)] = 1
    # Bandits only (A/B units are sticky by their hash): a unit keeps its first arm.
    sticky: bool = False


class Eligibility(Model):
    channels_from: str | None = None
    # Context attribute listing arm keys the unit must not get (e.g. campaigns it already bought).
    exclude_arms_from: str | None = None

    def mask(self, arms: Sequence[str], channels: np.ndarray, context: Mapping[str, Any]) -> np.ndarray | None:
        """The arms a unit with this context may get (None: any): the channels it opted into,
        minus the arms excluded for it."""
        mask = None
        if self.channels_from is not None and self.channels_from in context:
            mask = np.isin(channels, listed(context[self.channels_from]))
        if self.exclude_arms_from is not None and self.exclude_arms_from in context:
            keep = ~np.isin(np.asarray(arms), listed(context[self.exclude_arms_from]))
            mask = keep if mask is None else mask & keep
        return mask


def listed(value: Any) -> list[str]:
    """A context attribute holding a list: a list, or a comma-separated string (CLI --context)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple | set | frozenset):
        raise ValueError(f"context: expected a list of names or a comma-separated string, got {value!r}")
    return [str(v) for v in value]


class Recommender(StrEnum):
    NONE = "none"
    ITEM_CF = "item_cf"
    CONTENT = "content"
    SVD = "svd"
    SOCIAL = "social"
    HYBRID = "hybrid"


class Targeting(Model):
    """Recommender-weighted targeting of a bandit (policies/targeting.py has the blend).

    `strength` 0 is the bandit alone, 1 the recommender's ranking alone; `cf_weight` and
    `content_weight` mix the hybrid (default 0.5 each) and `social_weight` adds the social
    scores to it (default 0: off); `layers` is the social propagation's depth (default 2);
    `segments` is k of the k-means on the `segments_from` context attributes; the model is
    refitted every `refit_every_seconds`, the social graph read anew each time.
    """

    recommender: Recommender
    strength: Probability = 0.5
    cf_weight: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    content_weight: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    social_weight: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    factors: Annotated[int, Field(ge=1)] = 8
    layers: Annotated[int, Field(ge=1, le=8)] | None = None
    temperature: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 0.05
    segments_from: tuple[str, ...] = ()
    segments: Annotated[int, Field(ge=1, le=1000)] = 8
    refit_every_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0

    @property
    def active(self) -> bool:
        return self.recommender is not Recommender.NONE and self.strength > 0

    @property
    def uses_graph(self) -> bool:
        """Whether refits read the social graph: `social`, or a hybrid with a social weight."""
        return self.recommender is Recommender.SOCIAL or (
            self.recommender is Recommender.HYBRID and bool(self.social_weight))


class Analysis(Model):
    control: str | None = None
    alpha: Annotated[float, Field(gt=0.0, lt=0.5, allow_inf_nan=False)] = 0.05
    power: Annotated[float, Field(gt=0.0, lt=1.0, allow_inf_nan=False)] = 0.8
    mde: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 0.10
    mde_relative: bool = True
    correction: Correction = Correction.HOLM
    sequential: bool = False
    prob_best_threshold: Annotated[float, Field(gt=0.5, lt=1.0, allow_inf_nan=False)] = 0.95
    min_sample_per_arm: Annotated[int, Field(ge=1)] = 100
    # None: `user` for A/B tests and sticky bandits, `decision` for other bandits (each a send).
    unit: AnalysisUnit | None = None
    # The planning baseline of the primary metric: a rate (binary) or a mean and a standard
    # deviation per unit (revenue). Declared, it fixes the planned n; left out, the plan is frozen
    # from the control at the first report where every arm has `min_sample_per_arm` units.
    baseline: Annotated[float, Field(gt=0.0, lt=1.0, allow_inf_nan=False)] | None = None
    baseline_mean: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    baseline_sd: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    # CUPED: a numeric context attribute known before exposure (e.g. last quarter's spend); a
    # unit's value is the one in the context of its first exposure (`policies.stats.cuped`).
    covariate: AttributeName | None = None


# A campaign's description is a paragraph or two of copy, in any language; the classifier
# (`crosspromo classify`) reads it to tag arms that declare no tags.
MAX_DESCRIPTION_CHARS = 4000


def _description(value: str) -> str:
    if problem := text_problem(value):
        raise ValueError(problem)
    if not value.strip():
        raise ValueError("must not be blank; leave the field out instead")
    return value


Description = Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS), AfterValidator(_description)]


class Arm(Model):
    key: Slug
    campaign: str
    partner: str
    channel: Channel
    tags: tuple[str, ...] = ()
    description: Description | None = None
    weight: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    # Cost of one decision (a send); None: the channel's default in configs/engine.yaml.
    cost: Annotated[float, Field(ge=0.0, le=1e6, allow_inf_nan=False)] | None = None
    payload: JsonPayload = Field(default_factory=dict)


class ExperimentSpec(Model):
    schema_: Literal[1] = Field(1, alias="schema")
    key: Slug
    name: str
    owner: Annotated[str, Field(min_length=3, pattern=r"^[^@\s]+@[^@\s]+$")]
    hypothesis: str | None = None
    status: Status = Status.DRAFT
    kind: Kind
    policy: PolicySpec = FixedPolicy()
    # `metric:` is shorthand for `metrics:` with one primary metric.
    metric: Metric | None = None
    metrics: Annotated[tuple[Metric, ...], Field(min_length=1, max_length=20)] | None = None
    traffic: Traffic = Traffic()
    eligibility: Eligibility = Eligibility()
    arms: Annotated[tuple[Arm, ...], Field(min_length=2)]
    default_arm: str | None = None
    winner: str | None = None
    analysis: Analysis = Analysis()
    targeting: Targeting | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v

    @property
    def seed(self) -> str:
        return self.traffic.seed if self.traffic.seed is not None else self.key

    @property
    def arm_keys(self) -> tuple[str, ...]:
        return tuple(a.key for a in self.arms)

    @cached_property
    def measures(self) -> tuple[Metric, ...]:
        """Every metric, the primary first."""
        declared = self.metrics or ((self.metric,) if self.metric is not None else ())
        return tuple(sorted(declared, key=lambda m: m.role is not MetricRole.PRIMARY))

    @property
    def primary(self) -> Metric:
        return self.measures[0]

    @cached_property
    def _measures_by_name(self) -> dict[str, Metric]:
        return {m.name: m for m in self.measures}

    def measure(self, name: str | None) -> Metric | None:
        """The metric called `name` (None: the primary), or None if there is none."""
        return self.primary if name is None else self._measures_by_name.get(name)

    def arm_costs(self, channel_costs: Mapping[str, float]) -> tuple[float, ...]:
        """Each arm's cost per decision: its own `cost`, else its channel's default (else 0)."""
        return tuple(a.cost if a.cost is not None else channel_costs.get(a.channel.value, 0.0) for a in self.arms)

    @property
    def analysis_unit(self) -> AnalysisUnit:
        if self.analysis.unit is not None:
            return self.analysis.unit
        per_user = self.kind is Kind.AB_TEST or self.traffic.sticky
        return AnalysisUnit.USER if per_user else AnalysisUnit.DECISION

    @property
    def control(self) -> str:
        return self.analysis.control or self.arms[0].key

    @property
    def fallback_arm(self) -> str:
        """The arm served to units outside the experiment: the default arm, else the control."""
        return self.default_arm or self.control

    @property
    def weights(self) -> tuple[float, ...]:
        """Declared split (A/B tests); equal weights when none are declared."""
        declared = [a.weight for a in self.arms]
        if all(w is not None for w in declared):
            return tuple(float(w) for w in declared)  # type: ignore[arg-type]
        return tuple(1.0 / len(self.arms) for _ in self.arms)

    @property
    def declared_baseline(self) -> tuple[float, float | None] | None:
        """The primary metric's declared planning baseline and (revenue) standard deviation."""
        a = self.analysis
        if self.primary.type is MetricType.BINARY:
            return None if a.baseline is None else (a.baseline, None)
        return None if a.baseline_mean is None or a.baseline_sd is None else (a.baseline_mean, a.baseline_sd)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def cross_field_problems(spec: ExperimentSpec) -> Iterator[tuple[Loc, str]]:
    """Rules that relate fields to one another, each with the location of the offending field."""
    yield from metric_problems(spec.metric, spec.metrics)
    seen: dict[str, int] = {}
    for i, arm in enumerate(spec.arms):
        if arm.key in seen:
            yield ("arms", i, "key"), f"duplicate arm key {arm.key!r} (also arms[{seen[arm.key]}])"
        seen.setdefault(arm.key, i)
    keys = set(spec.arm_keys)
    for field, value in (
        (("default_arm",), spec.default_arm),
        (("winner",), spec.winner),
        (("analysis", "control"), spec.analysis.control),
    ):
        if value is not None and value not in keys:
            yield field, f"{value!r} is not an arm; arms: {', '.join(spec.arm_keys)}"

    if spec.analysis.covariate is not None:
        if spec.kind is Kind.BANDIT:
            yield ("analysis", "covariate"), "CUPED adjusts A/B comparisons; a bandit is read on its posteriors"
        elif spec.analysis_unit is AnalysisUnit.DECISION:
            yield ("analysis", "covariate"), ("needs analysis.unit: user (a unit's covariate is read at its "
                                              "first exposure)")

    if spec.kind is Kind.AB_TEST and spec.policy.name != "fixed":
        yield ("policy", "name"), "an ab_test uses the fixed policy; use kind: bandit for a bandit"
    if spec.kind is Kind.BANDIT and spec.policy.name == "fixed":
        yield ("policy", "name"), "a bandit needs an adaptive policy: thompson or epsilon_greedy"

    declared = [a.weight for a in spec.arms]
    if spec.kind is Kind.BANDIT:
        for i, w in enumerate(declared):
            if w is not None:
                yield ("arms", i, "weight"), "weights apply to ab_test arms; a bandit sets its own"
    elif any(w is not None for w in declared):
        for i, w in enumerate(declared):
            if w is None:
                yield ("arms", i, "weight"), "missing: declare a weight for every arm or for none"
        given = [w for w in declared if w is not None]
        if len(given) == len(declared) and not math.isclose(sum(given), 1.0, abs_tol=1e-6):
            yield ("arms",), f"weights must add up to 1, they add up to {sum(given):.6g}"

    if isinstance(spec.policy, ThompsonPolicy):
        if spec.policy.min_weight * len(spec.arms) > 1:
            yield ("policy", "min_weight"), (
                f"min_weight x {len(spec.arms)} arms exceeds 1; lower it below {1 / len(spec.arms):.4g}"
            )
        if spec.policy.discount is not None and spec.policy.window is not None:
            yield ("policy", "window"), "choose discount or window, not both"

    yield from baseline_problems(spec)

    targeting = spec.targeting
    if targeting is not None:
        if spec.kind is not Kind.BANDIT:
            yield ("targeting",), "targeting applies to bandits; an ab_test keeps its fixed split"
        hybrid = targeting.recommender is Recommender.HYBRID
        for name in ("cf_weight", "content_weight", "social_weight"):
            if getattr(targeting, name) is not None and not hybrid:
                yield ("targeting", name), "applies to the hybrid recommender only"
        if hybrid and targeting.cf_weight == 0 and targeting.content_weight == 0 and not targeting.social_weight:
            yield ("targeting", "cf_weight"), "cf_weight and content_weight cannot both be 0 without a social_weight"
        if targeting.layers is not None and not targeting.uses_graph:
            yield ("targeting", "layers"), "applies to the social recommender and a hybrid with a social_weight only"
        if len(set(targeting.segments_from)) != len(targeting.segments_from):
            yield ("targeting", "segments_from"), "lists an attribute twice"


def baseline_problems(spec: ExperimentSpec) -> Iterator[tuple[Loc, str]]:
    """A declared planning baseline must fit the primary metric's type and the experiment's kind."""
    a = spec.analysis
    declared = [name for name in ("baseline", "baseline_mean", "baseline_sd") if getattr(a, name) is not None]
    if not declared:
        return
    if spec.kind is not Kind.AB_TEST:
        yield ("analysis", declared[0]), "applies to ab_test experiments only: a bandit has no planned sample"
        return
    if spec.primary.type is MetricType.BINARY:
        for name in ("baseline_mean", "baseline_sd"):
            if getattr(a, name) is not None:
                yield ("analysis", name), ("applies to a revenue primary metric; for a binary one declare "
                                           "analysis.baseline (a rate in (0, 1))")
        return
    if a.baseline is not None:
        yield ("analysis", "baseline"), ("applies to a binary primary metric; for a revenue one declare "
                                         "analysis.baseline_mean and analysis.baseline_sd")
    for name, other in (("baseline_mean", "baseline_sd"), ("baseline_sd", "baseline_mean")):
        if getattr(a, name) is not None and getattr(a, other) is None:
            yield ("analysis", name), f"needs analysis.{other} too: declare both or neither"


def declared_policy(spec: ExperimentSpec, *, whole_log: bool = False) -> Policy | None:
    """The allocation policy a bandit declares, None for a fixed split. `whole_log` leaves out
    the forgetting options (discount, window), for callers that weigh a whole log at once."""
    if not isinstance(spec.policy, ThompsonPolicy | EpsilonGreedyPolicy):
        return None
    exclude = {"name", "update"} | ({"discount", "window"} if whole_log else set())
    params = spec.policy.model_dump(exclude=exclude)
    return make_policy(spec.policy.name, metric=spec.primary.type.value, **params)
