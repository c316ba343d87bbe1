"""CUPED: each unit's covariate (`units.covariate`), the per-arm covariate sums (`unit_stats`)
and the per-metric cross sums (`metric_stats.covariate_cross`).

No experiment of an earlier release declared a covariate, so the existing rows are right as
they are: no covariate (NULL) and zero sums.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 14:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_UNIT_SUMS = (("covariate_units", sa.Integer(), "0"), ("covariate_total", sa.Float(), "0"),
              ("covariate_total_sq", sa.Float(), "0"), ("covariate_decisions", sa.Float(), "0"))


def upgrade() -> None:
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.add_column(sa.Column('covariate', sa.Float(), nullable=True))
    with op.batch_alter_table('unit_stats', schema=None) as batch_op:
        for name, type_, default in _UNIT_SUMS:
            batch_op.add_column(sa.Column(name, type_, nullable=False, server_default=default))
    with op.batch_alter_table('metric_stats', schema=None) as batch_op:
        batch_op.add_column(sa.Column('covariate_cross', sa.Float(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('metric_stats', schema=None) as batch_op:
        batch_op.drop_column('covariate_cross')
    with op.batch_alter_table('unit_stats', schema=None) as batch_op:
        for name, _, _ in reversed(_UNIT_SUMS):
            batch_op.drop_column(name)
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.drop_column('covariate')
