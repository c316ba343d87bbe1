"""SQLModel tables. Portable SQL only: the same models run on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text
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
    """An outcome or imported exposure as received; `event_id` makes intake idempotent."""

    __tablename__ = "events"

    event_id: str = Field(primary_key=True, max_length=256)
    type: str = Field(max_length=16)
    experiment: str = Field(max_length=128, index=True)
    unit: str | None = Field(default=None, max_length=256)
    decision_id: str | None = Field(default=None, max_length=64)
    arm: str | None = Field(default=None, max_length=128)
    value: float | None = None
    ts: datetime
    received_at: datetime


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


EXPERIMENTS = ExperimentRow.__table__  # type: ignore[attr-defined]
VERSIONS = ExperimentVersionRow.__table__  # type: ignore[attr-defined]
ARM_STATS = ArmStatsRow.__table__  # type: ignore[attr-defined]
DECISIONS = DecisionRow.__table__  # type: ignore[attr-defined]
EVENTS = EventRow.__table__  # type: ignore[attr-defined]
ASSIGNMENTS = AssignmentRow.__table__  # type: ignore[attr-defined]
QUARANTINE = QuarantineRow.__table__  # type: ignore[attr-defined]
GRAPH_EDGES = GraphEdgeRow.__table__  # type: ignore[attr-defined]
