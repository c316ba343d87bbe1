"""Schema migrations (Alembic): opening a store brings it to the head revision of this code.

The schema is `engine/tables.py` (SQLModel metadata); the revisions in `versions/` say how a
store of each earlier release gets there. `bring_to_head` runs on every open:

- a store at head costs one read of `alembic_version`, and Alembic is not even imported;
- an empty database gets the tables of `engine/tables.py` and is stamped head (the Alembic
  cookbook's fast path: no replay of every revision);
- a store of a release before the migrations (tables, no `alembic_version`) is upgraded from
  base: revision 0001 adds what such a store lacks and keeps its rows;
- a store at an older revision is upgraded; one at a revision this code does not know (made by
  a newer crosspromo) is refused with a `StoreError` that says so.

Migrating takes the store's migration lock first, and looks again: `pg_advisory_xact_lock` on
PostgreSQL, the writers' lock and `BEGIN IMMEDIATE` on SQLite. Replicas that open one store at
once migrate it once; the others wait and find it at head. On PostgreSQL the DDL runs in the
lock's transaction, so a failed upgrade leaves the store as it was.

Adding a revision (a table, column or key in `engine/tables.py`), from the repository's root
(pyproject.toml's `[tool.alembic]` finds this directory):

1. change `engine/tables.py`;
2. `alembic -x db=sqlite:////tmp/head.db upgrade head`: a scratch store built by replaying the
   revisions (not `crosspromo db upgrade`, which would create it from the edited tables);
3. `alembic -x db=sqlite:////tmp/head.db revision --autogenerate -m "per-unit metrics"` writes
   `versions/0002_per_unit_metrics.py`, numbered after the head by env.py, its operations in
   `batch_alter_table` blocks (SQLite rebuilds a table to change it; PostgreSQL alters in place);
4. read it: a new NOT NULL column needs a `server_default` (existing rows get it); autogenerate
   does not see primary keys, so write a key change by hand (below); check `downgrade()`;
5. `pytest tests/engine/test_migrations.py` (set CROSSPROMO_TEST_POSTGRES_URL to run it on
   PostgreSQL too): it fails while the revisions do not build exactly `engine/tables.py`, and it
   upgrades stores of earlier releases (their frozen DDL, tests/engine/migrations_legacy/).

A revision that changes what the per-unit sums hold (a column of `units`, `unit_stats` or
`metric_stats`) calls `ask_for_recount(op.get_bind())` rather than recounting itself: the
recount (`recount_all`) runs once, after the last revision, when the upgrade reaches head, so it
writes the head's columns with the head's code (a recount inside an older revision would write
columns that revision does not have yet).

When a release ships, freeze its schema for those tests:
`python -m tests.engine.migrations_legacy.freeze COMMIT NAME`, and add NAME to their RELEASES.

A primary key is named by `NAMING_CONVENTION` (PostgreSQL's default names, which the batch also
gives SQLite's unnamed keys when it reflects a table):

    from engine.migrations import NAMING_CONVENTION

    with op.batch_alter_table("arm_stats", naming_convention=NAMING_CONVENTION) as batch:
        batch.drop_constraint("arm_stats_pkey", type_="primary")
        batch.create_primary_key("arm_stats_pkey", ["experiment", "phase", "arm", "metric"])
"""

from __future__ import annotations

import io
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine as SAEngine
from sqlmodel import SQLModel

import engine.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from engine.db import StoreError, first_line, read, store_error, write
from engine.redact import redact_url

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

HERE = Path(__file__).parent
VERSION_TABLE = "alembic_version"
# Revision ids are the numbers that start the file names (env.py numbers new ones), in order.
REVISIONS: tuple[str, ...] = tuple(sorted(p.name.partition("_")[0] for p in (HERE / "versions").glob("[0-9]*_*.py")))
HEAD = REVISIONS[-1]
NAMING_CONVENTION = {"pk": "%(table_name)s_pkey"}
# One PostgreSQL advisory lock per database for every crosspromo migrating it.
_LOCK_KEY = zlib.crc32(b"crosspromo schema migration")
# Alembic's `context` and `op` are module-wide proxies: one Alembic command at a time per process.
_ALEMBIC = threading.Lock()

Status = Literal["current", "behind", "empty", "unversioned", "newer"]
STATUS_TEXT: dict[str, str] = {
    "current": "at head",
    "behind": "behind head: an upgrade (or opening it) applies the pending revisions",
    "empty": "empty: an upgrade (or opening it) creates the tables at head",
    "unversioned": "made by a release before migrations: an upgrade (or opening it) adopts it, rows kept",
    "newer": "made by a newer crosspromo: upgrade crosspromo to use it",
}
Action = Literal["none", "created", "upgraded"]


@dataclass(frozen=True)
class SchemaState:
    """Where a store stands: its revision (None if it has no `alembic_version`) and whether it
    holds any of crosspromo's tables."""

    revision: str | None
    has_tables: bool

    @property
    def status(self) -> Status:
        if self.revision == HEAD:
            return "current"
        if self.revision is not None:
            return "behind" if self.revision in REVISIONS else "newer"
        return "unversioned" if self.has_tables else "empty"

    @property
    def pending(self) -> list[str]:
        """The revisions an upgrade applies (none for an empty store: it is created at head)."""
        if self.status in ("current", "newer", "empty"):
            return []
        return list(REVISIONS[REVISIONS.index(self.revision) + 1:] if self.revision else REVISIONS)


@dataclass(frozen=True)
class Upgrade:
    before: SchemaState
    action: Action
    applied: list[str]
    head: str = HEAD


def read_state(conn: Connection) -> SchemaState:
    """The store's schema state, read on `conn`: a catalogue look-up and, if there is one, the
    version row."""
    found = inspect(conn)
    if found.has_table(VERSION_TABLE):
        revision = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        return SchemaState(revision, True)
    return SchemaState(None, bool(set(found.get_table_names()) & set(SQLModel.metadata.tables)))


def bring_to_head(sa: SAEngine, url: str) -> Upgrade:
    """Make the store at head (see the module's docstring); a store already there costs one read."""
    try:
        with read(sa) as conn:
            state = read_state(conn)
        if state.status == "current":
            return Upgrade(state, "none", [])
        if state.status == "newer":
            raise newer_store_error(state, url)
        return upgrade(sa, url)
    except StoreError:
        raise
    except Exception as exc:
        raise store_error(exc, url) or StoreError(
            f"cannot open the store {redact_url(url)}: {first_line(exc)}",
            "check the URL (--db or CROSSPROMO_DATABASE_URL) and that the server is up") from None


def upgrade(sa: SAEngine, url: str) -> Upgrade:
    """Bring the store to head under the migration lock, whatever state it is found in then."""
    with _migration_lock(sa) as conn:
        state = read_state(conn)
        if state.status == "current":
            return Upgrade(state, "none", [])
        if state.status == "newer":
            raise newer_store_error(state, url)
        from alembic import command
        from alembic.runtime.migration import MigrationContext

        with _ALEMBIC:
            if state.status == "empty":
                SQLModel.metadata.create_all(conn)
                MigrationContext.configure(conn).stamp(_scripts(), "head")  # env.py need not run for this
                return Upgrade(state, "created", [])
            command.upgrade(alembic_config(conn), "head")
            return Upgrade(state, "upgraded", state.pending)


def upgrade_sql(sa: SAEngine, url: str) -> str:
    """The SQL an upgrade of the PostgreSQL store would run, for a DBA to read or run (Alembic's
    offline mode), from the store's revision to head. A store of a release before the
    migrations is adopted by reading its tables, which offline SQL cannot do (nor can SQLite's
    rebuild of a table): upgrade those online."""
    with read(sa) as conn:
        state = read_state(conn)
    if state.status == "newer":
        raise newer_store_error(state, url)
    if state.status == "unversioned":
        raise StoreError(f"the store {redact_url(url)} predates schema migrations: its upgrade reads its tables, "
                         "which --sql cannot", "run 'crosspromo db upgrade' without --sql")
    if state.status == "current":
        return ""
    from alembic import command

    buffer = io.StringIO()
    config = alembic_config(output_buffer=buffer)
    config.attributes["url"] = sa.url
    with _ALEMBIC:
        command.upgrade(config, f"{state.revision}:head" if state.revision else "head", sql=True)
    return buffer.getvalue()


_RECOUNT = "crosspromo_recount"


def ask_for_recount(conn: Connection) -> None:
    """Have every phase of every experiment recounted once the running upgrade reaches head."""
    conn.info[_RECOUNT] = True


def recount_if_asked(conn: Connection, revision: str | None) -> None:
    """Run the recount a revision asked for, if the store is now at head (env.py calls this
    after the revisions ran, in their transaction)."""
    if revision == HEAD and conn.info.pop(_RECOUNT, False):
        recount_all(conn)


def recount_all(conn: Connection) -> None:
    """Recount the per-unit state and sums of every phase of every experiment from the raw rows
    (`engine.store.ledger.rebuild`)."""
    from engine.store.experiments import parse_spec
    from engine.store.ledger import rebuild

    for (spec_json,) in conn.execute(text("SELECT spec_json FROM experiments ORDER BY key")).all():
        spec = parse_spec(spec_json)
        phases = conn.execute(text("SELECT DISTINCT phase FROM decisions WHERE experiment = :k ORDER BY phase"),
                              {"k": spec.key}).scalars().all()
        for phase in phases:
            rebuild(conn, spec, phase)


def newer_store_error(state: SchemaState, url: str) -> StoreError:
    return StoreError(f"the store {redact_url(url)} has schema revision {state.revision}, newer than this "
                      f"crosspromo knows (its newest is {HEAD})",
                      "upgrade crosspromo (pip install -U crosspromo) to use this store")


def alembic_config(connection: Connection | None = None, output_buffer: io.StringIO | None = None) -> Config:
    """Alembic's configuration for the revisions shipped in this package; env.py runs them on
    `connection` (in its transaction) when one is given."""
    from alembic.config import Config

    config = Config(output_buffer=output_buffer)
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("revision_environment", "true")  # env.py numbers every new revision
    config.attributes["connection"] = connection
    return config


@cache
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


@contextmanager
def _migration_lock(sa: SAEngine) -> Iterator[Connection]:
    """A write transaction that holds the store's migration lock until it ends."""
    with write(sa) as conn:  # SQLite: the writers' lock and BEGIN IMMEDIATE
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        yield conn
