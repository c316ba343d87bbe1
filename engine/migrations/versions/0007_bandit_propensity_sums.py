"""Propensity sums for bandit inference: a unit's propensity on its `units` row, and per arm the
sums of w = 1/p and w^2 (`unit_stats`, with `ipw_units`, the units that have one) and of w Y,
w^2 Y, w^2 Y^2 per metric (`metric_stats`); see `policies.stats.bandit_inference`.

The new columns start at 0 (NULL for `units.propensity`), which would claim that no unit has a
propensity: this revision asks for a recount of every phase of every experiment from the
decisions, which carry the propensities (`engine.migrations.recount_all`, as 0002 does). Offline (`db upgrade
--sql`) it only changes the schema: run an online `crosspromo db upgrade` on a store that holds
data.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 14:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('metric_stats', schema=None) as batch_op:
        batch_op.add_column(sa.Column('weight_y', sa.Float(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('weight_sq_y', sa.Float(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('weight_sq_y_sq', sa.Float(), nullable=False, server_default='0'))

    with op.batch_alter_table('unit_stats', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ipw_units', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('weight', sa.Float(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('weight_sq', sa.Float(), nullable=False, server_default='0'))

    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.add_column(sa.Column('propensity', sa.Float(), nullable=True))

    if not context.is_offline_mode():
        from engine.migrations import ask_for_recount

        ask_for_recount(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.drop_column('propensity')

    with op.batch_alter_table('unit_stats', schema=None) as batch_op:
        batch_op.drop_column('weight_sq')
        batch_op.drop_column('weight')
        batch_op.drop_column('ipw_units')

    with op.batch_alter_table('metric_stats', schema=None) as batch_op:
        batch_op.drop_column('weight_sq_y_sq')
        batch_op.drop_column('weight_sq_y')
        batch_op.drop_column('weight_y')
