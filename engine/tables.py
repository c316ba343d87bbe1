"""SQLModel tables. Portable SQL only: the same models run on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Float, Index, Integer, Text
from sqlmodel import Field, SQLModel


class ExperimentRow(SQLModel, table=True):
    __tablename__ = "experiments"

    key: str = Field(primary_key=True, max_length=128)
    version: int
    phase: int
    status: str = Field(max_length=16)
    kind: str = Field(max_length=16)
    spec_json: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime


class ExperimentVersionRow(SQLModel, table=True):
    """Every applied version of a declaration, for audit and for reading old decisions."""

    __tablename__ = "experiment_versions"

    key: str = Field(primary_key=True, max_length=128)
    version: int = Field(primary_key=True)
    spec_json: str = Field(sa_column=Column(Text, nullable=False))
    applied_at: datetime


class ArmStatsRow(SQLModel, table=True):
    """Per-arm sufficient statistics of one phase, kept in step with decisions and events.

    `conversions` counts exposures with at least one conversion; `total` and `total_sq` sum the
    per-exposure value (1 per converted exposure for binary metrics, the revenue otherwise).
    """

    __tablename__ = "arm_stats"

    experiment: str = Field(primary_key=True, max_length=128)
    phase: int = Field(primary_key=True)
    arm: str = Field(primary_key=True, max_length=128)
    exposures: int = 0
    conversions: int = 0
    total: float = 0.0
    total_sq: float = 0.0


class DecisionRow(SQLModel, table=True):
    """A logged exposure: one decision that put a unit in an experiment arm."""

    __tablename__ = "decisions"
    __table_args__ = (
        Index("ix_decisions_unit", "experiment", "unit", "ts"),
        Index("ix_decisions_timeline", "experiment", "phase", "ts"),
    )

    decision_id: str = Field(primary_key=True, max_length=64)
    experiment: str = Field(max_length=128)
    version: int
    phase: int
    unit: str = Field(max_length=256)
    arm: str = Field(max_length=128)
    channel: str = Field(max_length=16)
    bucket: float | None = None
    propensity: float | None = None
    reason: str = Field(max_length=16)
    ts: datetime
    converted: bool = False
    value: float = 0.0
    # The decide call's context as JSON (segments for targeting, ctx_* columns of export-log).
    context_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class EventRow(SQLModel, table=True):
    """An outcome or imported exposure as received; `event_id` makes intake idempotent.

    A conversion keeps the unit, phase and metric it was counted for (`unit` is filled in from
    its decision when the event named only that), so a unit's values can be recounted."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_unit", "experiment", "unit"),)

    event_id: str = Field(primary_key=True, max_length=256)
    type: str = Field(max_length=16)
    experiment: str = Field(max_length=128, index=True)
    unit: str | None = Field(default=None, max_length=256)
    decision_id: str | None = Field(default=None, max_length=64)
    arm: str | None = Field(default=None, max_length=128)
    value: float | None = None
    ts: datetime
    received_at: datetime
    metric: str | None = Field(default=None, max_length=128)
    phase: int | None = None


class AssignmentRow(SQLModel, table=True):
    """A sticky unit's arm: the first decision wins, later ones (on any replica) reuse it."""

    __tablename__ = "assignments"

    experiment: str = Field(primary_key=True, max_length=128)
    phase: int = Field(primary_key=True)
    unit: str = Field(primary_key=True, max_length=256)
    arm: str = Field(max_length=128)
    propensity: float
    ts: datetime


class QuarantineRow(SQLModel, table=True):
    """A row the database refused (a poison row): kept, escaped as JSON text, for the operator
    to read back (`crosspromo quarantine`) instead of being retried forever or lost."""

    __tablename__ = "quarantine"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    record_json: str = Field(sa_column=Column(Text, nullable=False))
    ts: datetime


class UnitRow(SQLModel, table=True):
    """An analysis unit of a per-user experiment: its first exposure in the phase fixed its arm
    and the start of its conversion windows; `decisions` counts its decisions in that arm;
    `propensity` is that first decision's (None for an imported exposure that had none)."""

    __tablename__ = "units"

    experiment: str = Field(primary_key=True, max_length=128)
    phase: int = Field(primary_key=True)
    unit: str = Field(primary_key=True, max_length=256)
    arm: str = Field(max_length=128)
    first_ts: datetime
    decisions: int = 1
    several_arms: bool = False
    # The CUPED covariate in the context of the first exposure (None: not declared, or absent).
    covariate: float | None = None
    propensity: float | None = None


class UnitValueRow(SQLModel, table=True):
    """A unit's counted value of one metric (within its window); the unit is a user, or a
    decision id for per-decision analysis."""

    __tablename__ = "unit_values"

    experiment: str = Field(primary_key=True, max_length=128)
    phase: int = Field(primary_key=True)
    metric: str = Field(primary_key=True, max_length=128)
    unit: str = Field(primary_key=True, max_length=256)
    converted: bool = False
    value: float = 0.0


class UnitStatsRow(SQLModel, table=True):
    """Per arm: analysis units, their decisions (sum and sum of squares, for costs per unit),
    units also served another arm, and over the units with a logged propensity p (`ipw_units`)
    the sums of w = 1/p and w^2 (`policies.stats.bandit_inference`). Kept in step with `units`
    by increments."""

    __tablename__ = "unit_stats"

    experiment: str = Field(primary_key=True, max_length=128)
    phase: int = Field(primary_key=True)
    arm: str = Field(primary_key=True, max_length=128)
    units: int = 0
    decisions: int = 0
    decisions_sq: int = 0
    several_arms: int = 0
    # CUPED: units with a covariate value, and over all units (x = 0 without one) the sums of
    # x, x^2 and x times decisions (for metrics net of cost). Defaults on the server fill the
    # rows of an upgraded store (revision 0006).
    covariate_units: int = Field(sa_column=Column(Integer, nullable=False, server_default="0"))
    covariate_total: float = Field(sa_column=Column(Float, nullable=False, server_default="0"))
    covariate_total_sq: float = Field(sa_column=Column(Float, nullable=False, server_default="0"))
    covariate_decisions: float = Field(sa_column=Column(Float, nullable=False, server_default="0"))
    ipw_units: int = 0
    weight: float = 0.0
    weight_sq: float = 0.0


class MetricStatsRow(SQLModel, table=True):
    """Per metric and arm: converted units and the sums of unit values (and of value times
    decisions, for net value), and over the units with a propensity the sums of w Y, w^2 Y and
    w^2 Y^2 (w = 1/p). Kept in step with `unit_values` by increments."""

    __tablename__ = "metric_stats"

    experiment: str = Field(primary_key=True, max_length=128)
    phase: int = Field(primary_key=True)
    metric: str = Field(primary_key=True, max_length=128)
    arm: str = Field(primary_key=True, max_length=128)
    conversions: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    total_decisions: float = 0.0
    # CUPED: sum over units of covariate x value (server default: see unit_stats).
    covariate_cross: float = Field(sa_column=Column(Float, nullable=False, server_default="0"))
    weight_y: float = 0.0
    weight_sq_y: float = 0.0
    weight_sq_y_sq: float = 0.0


class ArmExclusionRow(SQLModel, table=True):
    """An arm taken out of a bandit's traffic for the rest of the phase (a guardrail showed harm)."""

    __tablename__ = "arm_exclusions"

    experiment: str = Field(primary_key=True, max_length=128)
    phase: int = Field(primary_key=True)
    arm: str = Field(primary_key=True, max_length=128)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    ts: datetime


class WeightsRow(SQLModel, table=True):
    """A bandit's weights as one refresh set them, with why (O(refreshes), for the history)."""

    __tablename__ = "weights_history"
    __table_args__ = (Index("ix_weights_history", "experiment", "phase", "ts"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment: str = Field(max_length=128)
    phase: int
    ts: datetime
    weights_json: str = Field(sa_column=Column(Text, nullable=False))
    reason: str = Field(sa_column=Column(Text, nullable=False))


class ArmTagRow(SQLModel, table=True):
    """Tags a classifier predicted for an arm that declares none (`crosspromo classify
    --write-tags`), from the description whose SHA-256 is `description_sha256`: the content
    recommender uses them while the arm's description stays that text."""

    __tablename__ = "arm_tags"

    experiment: str = Field(primary_key=True, max_length=128)
    arm: str = Field(primary_key=True, max_length=128)
    tags_json: str = Field(sa_column=Column(Text, nullable=False))  # [[topic, score], ...], best first
    description_sha256: str = Field(max_length=64)
    classifier: str = Field(max_length=128)
    predicted_at: datetime


class GraphEdgeRow(SQLModel, table=True):
    """An edge of the users' social graph: `kind` is follow (directed: `source` follows
    `target`), share or referral (undirected, stored with `source` < `target`). One row per
    (source, target, kind); `weight` is finite and > 0, the last one ingested; `created_at` is
    when the edge was first stored, `updated_at` when its weight last changed."""

    __tablename__ = "graph_edges"

    source: str = Field(primary_key=True, max_length=256)
    target: str = Field(primary_key=True, max_length=256)
    kind: str = Field(primary_key=True, max_length=16)
    weight: float = 1.0
    created_at: datetime
    updated_at: datetime


class PlanRow(SQLModel, table=True):
    """A planning baseline frozen from the control at the first report of a phase where every arm
    had `min_sample_per_arm` units (`engine.store.plans`); later reports plan from it. One row
    per (experiment, phase, metric): the first writer's stands."""

    __tablename__ = "plans"

    experiment: str = Field(primary_key=True, max_length=128)
    phase: int = Field(primary_key=True)
    metric: str = Field(primary_key=True, max_length=128)
    baseline: float
    baseline_sd: float | None = None
    n_per_arm: int | None = None
    version: int
    counts_json: str = Field(sa_column=Column(Text, nullable=False))  # {arm: units} the freeze saw
    frozen_at: datetime


class VerdictRow(SQLModel, table=True):
    """The final verdict of an experiment's phase with the counts it was made on; later reports
    show it (and the current data's verdict when that disagrees). The first writer's stands."""

    __tablename__ = "verdicts"

    experiment: str = Field(primary_key=True, max_length=128)
    phase: int = Field(primary_key=True)
    version: int
    metric: str = Field(max_length=128)
    status: str = Field(max_length=32)
    winner: str | None = Field(default=None, max_length=128)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    counts_json: str = Field(sa_column=Column(Text, nullable=False))  # [{arm, units, conversions, total}]
    kept_at: datetime


EXPERIMENTS = ExperimentRow.__table__  # type: ignore[attr-defined]
VERSIONS = ExperimentVersionRow.__table__  # type: ignore[attr-defined]
ARM_STATS = ArmStatsRow.__table__  # type: ignore[attr-defined]
DECISIONS = DecisionRow.__table__  # type: ignore[attr-defined]
EVENTS = EventRow.__table__  # type: ignore[attr-defined]
ASSIGNMENTS = AssignmentRow.__table__  # type: ignore[attr-defined]
QUARANTINE = QuarantineRow.__table__  # type: ignore[attr-defined]
UNITS = UnitRow.__table__  # type: ignore[attr-defined]
UNIT_VALUES = UnitValueRow.__table__  # type: ignore[attr-defined]
UNIT_STATS = UnitStatsRow.__table__  # type: ignore[attr-defined]
METRIC_STATS = MetricStatsRow.__table__  # type: ignore[attr-defined]
ARM_EXCLUSIONS = ArmExclusionRow.__table__  # type: ignore[attr-defined]
WEIGHTS_HISTORY = WeightsRow.__table__  # type: ignore[attr-defined]
ARM_TAGS = ArmTagRow.__table__  # type: ignore[attr-defined]
GRAPH_EDGES = GraphEdgeRow.__table__  # type: ignore[attr-defined]
PLANS = PlanRow.__table__  # type: ignore[attr-defined]
VERDICTS = VerdictRow.__table__  # type: ignore[attr-defined]
