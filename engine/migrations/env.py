"""Alembic's environment for crosspromo's store (how revisions run: engine/migrations/__init__.py).

Run by `bring_to_head` and `crosspromo db` on a connection they hold (in their transaction,
under the migration lock), or by the `alembic` command on `-x db=URL` (else
`CROSSPROMO_DATABASE_URL`) when a developer writes a revision. Operations are rendered in
batch mode, which SQLite needs to change a table; string and datetime columns are rendered as
plain SQLAlchemy types, so revisions do not depend on SQLModel's.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import MigrationScript
from alembic.script import ScriptDirectory
from sqlalchemy import URL, create_engine, pool
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

import engine.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from engine.migrations import recount_if_asked

config = context.config


def _url() -> str | URL:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("db") \
        or os.environ.get("CROSSPROMO_DATABASE_URL")
    if not url:
        raise SystemExit("alembic: name the store with -x db=URL (or set CROSSPROMO_DATABASE_URL)")
    return url


def _render_item(kind: str, obj: Any, autogen: AutogenContext) -> str | bool:
    if kind == "type" and isinstance(obj, AutoString):
        return f"sa.String(length={obj.impl.length})" if obj.impl.length else "sa.String()"
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _number_revision(ctx: Any, revision: Any, directives: list[MigrationScript]) -> None:
    """Number a new revision after the head (0002, 0003...); write none when autogenerate finds
    no change (the Alembic cookbook's "Don't generate empty migrations")."""
    script = directives[0]
    if getattr(config.cmd_opts, "autogenerate", False) and script.upgrade_ops is not None \
            and script.upgrade_ops.is_empty():
        directives[:] = []
        print("no change between engine/tables.py and the revisions: no revision written")
        return
    head = ScriptDirectory.from_config(config).get_current_head()
    script.rev_id = f"{int(head or 0) + 1:04d}"


OPTIONS: dict[str, Any] = {
    "target_metadata": SQLModel.metadata,
    "render_as_batch": True,
    "compare_type": True,
    "render_item": _render_item,
    "process_revision_directives": _number_revision,
}


def run_offline() -> None:
    context.configure(url=_url(), literal_binds=True, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    given = config.attributes.get("connection")
    with nullcontext(given) if given is not None else create_engine(_url(), poolclass=pool.NullPool).connect() \
            as connection:
        context.configure(connection=connection, **OPTIONS)
        with context.begin_transaction():  # nothing to begin inside the caller's open transaction
            context.run_migrations()
            recount_if_asked(connection, context.get_context().get_current_revision())


if context.is_offline_mode():
    run_offline()
else:
    run_online()
