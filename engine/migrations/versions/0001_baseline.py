"""The schema of the last release without migrations (commit 2b94a04), and the adoption of the
stores of earlier releases.

An empty database gets every table. A store of an earlier release (tables, no version table)
holds part of this schema: each release created the tables it did not find, but never changed
a table it found. So this revision creates what is missing and keeps every row:

- tables an older release did not have (assignments, quarantine);
- `decisions.context_json` (added with targeting; `_add_missing_columns` added it until now);
- `ix_decisions_timeline` (added with `report --plot`);
- on PostgreSQL, `timestamp` columns without time zone (made under SQLModel < 0.0.45) become
  `timestamp with time zone`. The cast reads them in the session's time zone, the one in which
  the driver wrote them.

Offline (`crosspromo db upgrade --sql`) it creates every table: it cannot read a store.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.engine.reflection import Inspector

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _tables() -> list[tuple[str, list[Any]]]:
    """Each table's columns and primary key, as new objects (a column belongs to one table)."""
    def ts(name: str) -> sa.Column:
        return sa.Column(name, sa.DateTime(timezone=True), nullable=False)

    return [
        ("arm_stats", [
            sa.Column("experiment", sa.String(length=128), nullable=False),
            sa.Column("phase", sa.Integer(), nullable=False),
            sa.Column("arm", sa.String(length=128), nullable=False),
            sa.Column("exposures", sa.Integer(), nullable=False),
            sa.Column("conversions", sa.Integer(), nullable=False),
            sa.Column("total", sa.Float(), nullable=False),
            sa.Column("total_sq", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("experiment", "phase", "arm"),
        ]),
        ("assignments", [
            sa.Column("experiment", sa.String(length=128), nullable=False),
            sa.Column("phase", sa.Integer(), nullable=False),
            sa.Column("unit", sa.String(length=256), nullable=False),
            sa.Column("arm", sa.String(length=128), nullable=False),
            sa.Column("propensity", sa.Float(), nullable=False),
            ts("ts"),
            sa.PrimaryKeyConstraint("experiment", "phase", "unit"),
        ]),
        ("decisions", [
            sa.Column("decision_id", sa.String(length=64), nullable=False),
            sa.Column("experiment", sa.String(length=128), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("phase", sa.Integer(), nullable=False),
            sa.Column("unit", sa.String(length=256), nullable=False),
            sa.Column("arm", sa.String(length=128), nullable=False),
            sa.Column("channel", sa.String(length=16), nullable=False),
            sa.Column("bucket", sa.Float(), nullable=True),
            sa.Column("propensity", sa.Float(), nullable=True),
            sa.Column("reason", sa.String(length=16), nullable=False),
            ts("ts"),
            sa.Column("converted", sa.Boolean(), nullable=False),
            sa.Column("value", sa.Float(), nullable=False),
            sa.Column("context_json", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("decision_id"),
        ]),
        ("events", [
            sa.Column("event_id", sa.String(length=256), nullable=False),
            sa.Column("type", sa.String(length=16), nullable=False),
            sa.Column("experiment", sa.String(length=128), nullable=False),
            sa.Column("unit", sa.String(length=256), nullable=True),
            sa.Column("decision_id", sa.String(length=64), nullable=True),
            sa.Column("arm", sa.String(length=128), nullable=True),
            sa.Column("value", sa.Float(), nullable=True),
            ts("ts"),
            ts("received_at"),
            sa.PrimaryKeyConstraint("event_id"),
        ]),
        ("experiment_versions", [
            sa.Column("key", sa.String(length=128), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("spec_json", sa.Text(), nullable=False),
            ts("applied_at"),
            sa.PrimaryKeyConstraint("key", "version"),
        ]),
        ("experiments", [
            sa.Column("key", sa.String(length=128), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("phase", sa.Integer(), nullable=False),
            sa.Column("status", sa.String(length=16), nullable=False),
            sa.Column("kind", sa.String(length=16), nullable=False),
            sa.Column("spec_json", sa.Text(), nullable=False),
            ts("updated_at"),
            sa.PrimaryKeyConstraint("key"),
        ]),
        ("quarantine", [
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("kind", sa.String(length=16), nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.Column("record_json", sa.Text(), nullable=False),
            ts("ts"),
            sa.PrimaryKeyConstraint("id"),
        ]),
    ]


INDEXES = (  # (table, name, columns)
    ("decisions", "ix_decisions_timeline", ["experiment", "phase", "ts"]),
    ("decisions", "ix_decisions_unit", ["experiment", "unit", "ts"]),
    ("events", "ix_events_experiment", ["experiment"]),
)


def upgrade() -> None:
    found = None if context.is_offline_mode() else sa.inspect(op.get_bind())
    present = set(found.get_table_names()) if found is not None else set()
    for name, items in _tables():
        if name in present:
            _complete(found, name, [c for c in items if isinstance(c, sa.Column)])
        else:
            op.create_table(name, *items)
    for table, name, columns in INDEXES:
        if table not in present or name not in {i["name"] for i in found.get_indexes(table)}:
            op.create_index(name, table, columns)


def _complete(found: Inspector, table: str, columns: list[sa.Column]) -> None:
    """Add the columns an earlier release's `table` lacks; make its naive timestamps aware."""
    stored = {c["name"]: c["type"] for c in found.get_columns(table)}
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table(table) as batch:
        for column in columns:
            if column.name not in stored:
                batch.add_column(column)
            elif postgres and isinstance(column.type, sa.DateTime) and not stored[column.name].timezone:
                batch.alter_column(column.name, type_=column.type, existing_nullable=column.nullable)


def downgrade() -> None:
    for name, _ in reversed(_tables()):
        op.drop_table(name)
