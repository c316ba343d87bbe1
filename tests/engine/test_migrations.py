"""Schema migrations: stores of earlier releases upgrade in place, fresh stores start at head,
and `engine/tables.py` never drifts from the revisions (SQLite and PostgreSQL).

A store "of an earlier release" is built exactly as that release built it: its CREATE
statements, frozen in tests/engine/migrations_legacy/ (freeze.py says how), then rows that the
engine of today wrote (the row format did not change between those releases, only the tables).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel
from typer.testing import CliRunner

import engine.migrations as migrations
from engine.api import Engine
from engine.cli import EXIT_STORE, app
from engine.db import StoreError, create_engine, write
from engine.migrations import HEAD, NAMING_CONVENTION, REVISIONS, alembic_config, bring_to_head
from engine.redact import redact_url
from engine.store import Store
from engine.store.quarantine import quarantine
from tests.hostile.conftest import assert_no_traceback
from tests.samples import AB_YAML, BANDIT_YAML, write_yaml

LEGACY = Path(__file__).parent / "migrations_legacy"
RELEASES = ("release_2b94a04", "before_context_json", "first_release")  # newest first
STICKY = BANDIT_YAML.replace("eligibility:", "traffic: {sticky: true}\neligibility:")
runner = CliRunner()


# Per-unit state and sums, which revision 0002 recounts from the raw rows of an older store.
RECOUNTED = frozenset({"units", "unit_values", "unit_stats", "metric_stats"})


@dataclass(frozen=True)
class Source:
    """What a store held before an upgrade: every table's rows, and the aggregates it reports."""

    rows: dict[str, list[dict[str, Any]]]
    aggregates: list[Any]


def _rows(sa_engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    with sa_engine.connect() as conn:
        return {t.name: [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
                for t in SQLModel.metadata.sorted_tables}


def rows_at(url: str) -> dict[str, list[dict[str, Any]]]:
    engine = sa.create_engine(url)
    try:
        return _rows(engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """Rows of every table: decisions with contexts, conversions, sticky assignments, a quarantined row."""
    root = tmp_path_factory.mktemp("source")
    write_yaml(root / "experiments", "landing.yaml", AB_YAML)
    write_yaml(root / "experiments", "channels.yaml", STICKY)
    with Engine.open(f"sqlite:///{root / 'source.db'}", seed=0) as engine:
        engine.apply([root / "experiments"])
        for i in range(30):
            decision = engine.decide("landing", f"u{i}", {"segment": "painters" if i % 2 else "sculptors"})
            engine.decide("channels", f"u{i}", {"opted_in": ["email", "push"]})
            if i % 3 == 0:
                engine.record({"event_id": f"e{i}", "experiment": "landing", "decision_id": decision.decision_id})
            if i % 5 == 0:  # a unit deciding twice: one unit, two decisions
                engine.decide("landing", f"u{i}")
                engine.flush()
            if i % 4 == 1:  # a conversion named by its unit
                engine.record({"event_id": f"f{i}", "experiment": "landing", "unit": f"u{i}"})
        engine.flush()
        with write(engine.store.sa) as conn:
            quarantine(conn, "event", "the database refused it", {"event_id": "poison"})
        rows = _rows(engine.store.sa)
        aggregates = engine.aggregates("landing")[1]
    assert all(rows[t] for t in ("experiments", "experiment_versions", "arm_stats", "decisions", "events",
                                 "assignments", "quarantine", *RECOUNTED)), {t: len(r) for t, r in rows.items()}
    return Source(rows, aggregates)


def _dialect(url: str) -> str:
    return "postgresql" if url.startswith("postgresql") else "sqlite"


def _ddl(release: str, dialect: str) -> list[str]:
    text = (LEGACY / f"{release}.{dialect}.sql").read_text(encoding="utf-8")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    return [s for s in text.split(";") if s.strip()]


def build_legacy_store(url: str, release: str, source: Source, ddl: list[str] | None = None) -> None:
    """A store as `release` created it (its own DDL, no version table), holding `source`'s rows
    in the tables and columns that release had."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in ddl or _ddl(release, _dialect(url)):
                conn.exec_driver_sql(statement)
            old = sa.MetaData()
            old.reflect(conn, only=lambda name, _: name in source.rows)
            for name, table in old.tables.items():
                rows = [{c.name: row[c.name] for c in table.columns} for row in source.rows[name]]
                if rows:
                    conn.execute(table.insert(), rows)
    finally:
        engine.dispose()


def legacy_columns(release: str, dialect: str) -> dict[str, set[str]]:
    """The columns of each table of `release` (from its frozen DDL, compiled on an empty SQLite)."""
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        for statement in _ddl(release, "sqlite"):
            conn.exec_driver_sql(statement)
        found = sa.inspect(conn)
        return {t: {c["name"] for c in found.get_columns(t)} for t in found.get_table_names()}


def drift(url: str, metadata: sa.MetaData = SQLModel.metadata) -> list[Any]:
    """The differences between the store's schema and `metadata` (empty: none): Alembic's, and
    primary keys, which Alembic's comparison leaves out."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            found = sa.inspect(conn)
            keys = [("primary_key", t.name, stored, declared) for t in metadata.sorted_tables if found.has_table(t.name)
                    and (stored := found.get_pk_constraint(t.name)["constrained_columns"])
                    != (declared := [c.name for c in t.primary_key.columns])]
            return compare_metadata(MigrationContext.configure(conn), metadata) + keys
    finally:
        engine.dispose()


def stored_revision(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _set_revision(url: str, revision: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


# -- stores of earlier releases ------------------------------------------------------------------


@pytest.mark.parametrize("release", RELEASES)
def test_a_store_of_an_earlier_release_upgrades_in_place(db_url: str, release: str, source: Source) -> None:
    build_legacy_store(db_url, release, source)
    had = legacy_columns(release, _dialect(db_url))
    assert stored_revision(db_url) is None

    Store(db_url).close()  # opening the store upgrades it

    assert stored_revision(db_url) == HEAD
    assert drift(db_url) == []
    got = rows_at(db_url)
    for table, columns in had.items():
        assert [{c: r[c] for c in columns} for r in got[table]] == \
               [{c: r[c] for c in columns} for r in source.rows[table]], table
    for table in set(got) - set(had) - RECOUNTED:
        assert got[table] == [], f"{table} did not exist in {release}: it starts empty"
    for table in RECOUNTED:  # recounted from the decisions and events: as intake had kept them
        assert got[table] == source.rows[table], table
    if "context_json" not in had["decisions"]:
        assert {r["context_json"] for r in got["decisions"]} == {None}

    with Engine.open(db_url, seed=0) as engine:  # and the engine works on it
        assert engine.aggregates("landing")[1] == source.aggregates
        engine.decide("landing", "after-upgrade", {"segment": "new"})
        engine.flush()
    assert [r["context_json"] for r in rows_at(db_url)["decisions"] if r["unit"] == "after-upgrade"] == \
           ['{"segment":"new"}']


def test_frozen_schemas_differ_where_the_releases_did() -> None:
    """The fixtures are what they claim: each older release lacks what was added after it."""
    newest, before_context, first = (legacy_columns(r, "sqlite") for r in RELEASES)
    assert set(newest) - set(before_context) == {"quarantine"}
    assert newest["decisions"] - before_context["decisions"] == {"context_json"}
    assert set(before_context) - set(first) == {"assignments"}
    assert "ix_decisions_timeline" not in (LEGACY / "first_release.sqlite.sql").read_text()


@pytest.mark.postgres
def test_naive_postgres_timestamps_become_aware_and_keep_their_instant(db_url: str, source: Source) -> None:
    """SQLModel < 0.0.45 made `timestamp without time zone` columns; the upgrade converts them."""
    if _dialect(db_url) != "postgresql":
        pytest.skip("SQLite has one DATETIME type")
    ddl = [s.replace("TIMESTAMP WITH TIME ZONE", "TIMESTAMP WITHOUT TIME ZONE")
           for s in _ddl("release_2b94a04", "postgresql")]
    assert any("WITHOUT TIME ZONE" in s for s in ddl)
    build_legacy_store(db_url, "release_2b94a04", source, ddl)
    assert drift(db_url), "naive columns differ from the head schema before the upgrade"

    Store(db_url).close()

    assert drift(db_url) == []
    got = rows_at(db_url)
    assert [r["ts"] for r in got["decisions"]] == [r["ts"] for r in source.rows["decisions"]]
    assert [r["received_at"] for r in got["events"]] == [r["received_at"] for r in source.rows["events"]]


# -- fresh stores and drift ----------------------------------------------------------------------


def test_the_revisions_build_exactly_the_tables_of_engine_tables(db_url: str) -> None:
    """Replaying every revision on an empty database (not the fast path) gives the schema of
    engine/tables.py. Fails when a table or column changes without a revision."""
    engine = create_engine(db_url)
    with write(engine) as conn:
        command.upgrade(alembic_config(conn), "head")
    engine.dispose()
    assert stored_revision(db_url) == HEAD
    assert drift(db_url) == []


def test_drift_is_seen(db_url: str) -> None:
    """The drift check does fail on a column or a primary key that engine/tables.py has and the
    store lacks."""
    Store(db_url).close()
    changed = sa.MetaData()
    for table in SQLModel.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["decisions"].append_column(sa.Column("probe", sa.Integer(), nullable=True))
    changed.tables["arm_stats"].append_column(sa.Column("probe", sa.String(64), primary_key=True))
    keyed = [c.name for c in changed.tables["arm_stats"].primary_key.columns]
    diffs = drift(db_url, changed)
    assert sorted((d[0], d[2], d[3].name) for d in diffs if d[0] == "add_column") == \
           [("add_column", "arm_stats", "probe"), ("add_column", "decisions", "probe")]
    assert [d for d in diffs if d[0] == "primary_key"] == [("primary_key", "arm_stats", keyed[:-1], keyed)]


def test_a_fresh_store_is_created_at_head_without_replaying_the_revisions(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_replay(*_: Any, **__: Any) -> None:
        raise AssertionError("an empty store is created from engine/tables.py and stamped, not upgraded")

    monkeypatch.setattr(command, "upgrade", no_replay)
    store = Store(db_url)
    store.close()
    assert stored_revision(db_url) == HEAD
    assert drift(db_url) == []


def test_a_store_at_head_opens_without_loading_alembic(db_url: str) -> None:
    """The open path of a store at head reads one version row; Alembic's start-up is not paid."""
    Store(db_url).close()
    probe = ("import sys; from engine.store import Store; Store(sys.argv[1]).close(); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))")
    done = subprocess.run([sys.executable, "-c", probe, db_url], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_store_of_a_newer_crosspromo_is_refused_with_a_hint(db_url: str) -> None:
    Store(db_url).close()
    _set_revision(db_url, "9999")
    with pytest.raises(StoreError, match="schema revision 9999, newer than this crosspromo") as caught:
        Store(db_url)
    assert "upgrade crosspromo" in caught.value.hint
    assert stored_revision(db_url) == "9999", "nothing was changed"


def test_a_revision_can_change_a_primary_key_in_batch_mode(db_url: str, source: Source) -> None:
    """What a later revision may do (arm_stats keyed by one more column): rebuilt on SQLite,
    altered on PostgreSQL, on a store adopted from an earlier release (SQLite: an unnamed key),
    rows kept."""
    build_legacy_store(db_url, "release_2b94a04", source)
    Store(db_url).close()
    engine = create_engine(db_url)
    with write(engine) as conn:
        op = Operations(MigrationContext.configure(conn))
        keyed = [c.name for c in SQLModel.metadata.tables["arm_stats"].primary_key.columns] + ["probe"]
        with op.batch_alter_table("arm_stats", naming_convention=NAMING_CONVENTION) as batch:
            batch.add_column(sa.Column("probe", sa.String(64), nullable=False, server_default="primary"))
            batch.drop_constraint("arm_stats_pkey", type_="primary")
            batch.create_primary_key("arm_stats_pkey", keyed)
    with engine.connect() as conn:
        key = sa.inspect(conn).get_pk_constraint("arm_stats")["constrained_columns"]
        rows = conn.execute(sa.text("SELECT arm, exposures, probe FROM arm_stats ORDER BY experiment, arm")).all()
    engine.dispose()
    assert key == keyed
    assert [(r.arm, r.exposures) for r in rows] == [(r["arm"], r["exposures"]) for r in source.rows["arm_stats"]]
    assert {r.probe for r in rows} == {"primary"}


# -- concurrency ---------------------------------------------------------------------------------


def test_replicas_opening_an_old_store_at_once_migrate_it_once(
        db_url: str, source: Source, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both replicas find the store unversioned, then race for the upgrade: one migrates under
    the lock, the other waits for it and finds the store at head."""
    build_legacy_store(db_url, "before_context_json", source)
    both_looked = threading.Barrier(2, timeout=30)
    first_look = threading.local()
    first_seen: list[str] = []
    read_state = migrations.read_state

    def look_then_wait(conn: sa.Connection) -> migrations.SchemaState:
        state = read_state(conn)
        if not getattr(first_look, "done", False):
            first_look.done = True
            first_seen.append(state.status)
            both_looked.wait()  # neither starts the upgrade before both saw the old store
        return state

    monkeypatch.setattr(migrations, "read_state", look_then_wait)

    def open_store() -> migrations.Upgrade:
        engine = create_engine(db_url)
        try:
            return bring_to_head(engine, db_url)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(2) as pool:
        done = [f.result(timeout=60) for f in [pool.submit(open_store) for _ in range(2)]]
    assert first_seen == ["unversioned", "unversioned"]
    assert sorted(d.action for d in done) == ["none", "upgraded"]
    assert stored_revision(db_url) == HEAD
    assert drift(db_url) == []
    assert len(rows_at(db_url)["decisions"]) == len(source.rows["decisions"])


# -- revisions and their tooling -----------------------------------------------------------------


def test_the_revision_ids_are_the_file_numbers_in_one_line() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [HEAD]
    chain = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert tuple(chain) == REVISIONS
    for revision in script.walk_revisions():
        assert Path(revision.path).name.startswith(f"{revision.revision}_")


@pytest.fixture
def scratch_migrations(tmp_path: Path) -> Iterator[Path]:
    """A copy of the migrations, for writing revisions without touching the package."""
    copy = tmp_path / "migrations"
    shutil.copytree(migrations.HERE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    yield copy


def test_a_new_revision_is_numbered_after_the_head(scratch_migrations: Path) -> None:
    config = alembic_config()
    config.set_main_option("script_location", str(scratch_migrations))
    config.attributes["url"] = "sqlite://"  # a plain revision reads no store, but runs env.py, which numbers it
    command.revision(config, message="per unit metrics")
    written = sorted(p.name for p in (scratch_migrations / "versions").glob("*.py"))
    following = f"{int(HEAD) + 1:04d}"
    assert written[-1] == f"{following}_per_unit_metrics.py"
    text = (scratch_migrations / "versions" / written[-1]).read_text()
    assert f"revision = '{following}'" in text and f"down_revision = '{HEAD}'" in text


def test_autogenerate_on_a_store_at_head_writes_no_revision(
        sqlite_url: str, scratch_migrations: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Store(sqlite_url).close()
    config = alembic_config()
    config.set_main_option("script_location", str(scratch_migrations))
    config.attributes["url"] = sqlite_url
    config.cmd_opts = argparse.Namespace(autogenerate=True)  # as the alembic command passes it
    before = sorted((scratch_migrations / "versions").glob("*.py"))
    command.revision(config, message="nothing", autogenerate=True)
    assert sorted((scratch_migrations / "versions").glob("*.py")) == before
    assert "no change" in capsys.readouterr().out


# -- the db commands -----------------------------------------------------------------------------


def _cli(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert_no_traceback(result.output)
    return result


def test_db_current_and_upgrade_on_a_store_of_an_earlier_release(db_url: str, source: Source) -> None:
    build_legacy_store(db_url, "before_context_json", source)
    current = _cli("db", "current", "--db", db_url, "--format", "json")
    assert current.exit_code == 0, current.output
    assert json.loads(current.stdout) == {"store": redact_url(db_url), "revision": None, "head": HEAD,
                                          "status": "unversioned", "pending": list(REVISIONS)}
    assert stored_revision(db_url) is None, "db current changes nothing"

    upgraded = _cli("db", "upgrade", "--db", db_url, "--format", "json")
    assert upgraded.exit_code == 0, upgraded.output
    data = json.loads(upgraded.stdout)
    assert (data["before"], data["before_status"], data["action"], data["applied"], data["revision"]) == \
           (None, "unversioned", "upgraded", list(REVISIONS), HEAD)
    assert drift(db_url) == []

    again = _cli("db", "upgrade", "--db", db_url)
    assert again.exit_code == 0 and f"already at {HEAD} (head)" in again.stdout
    text = _cli("db", "current", "--db", db_url)
    assert "status    current" in text.stdout and f"revision  {HEAD}" in text.stdout


def test_db_commands_show_the_url_without_its_password(db_url: str) -> None:
    if _dialect(db_url) != "postgresql":
        pytest.skip("a SQLite URL holds no password")
    with_password = sa.make_url(db_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    result = _cli("db", "upgrade", "--db", with_password, "--format", "json")  # the test server trusts any password
    assert result.exit_code == 0, result.output
    assert "s3cret-pw" not in result.output and ":***@" in json.loads(result.stdout)["store"]


@pytest.mark.postgres
def test_db_upgrade_sql_is_the_script_of_an_upgrade(db_url: str) -> None:
    """--sql prints the upgrade of an empty store; running that script gives the head schema."""
    if _dialect(db_url) != "postgresql":
        pytest.skip("--sql is for PostgreSQL (tests/hostile: SQLite refused)")
    result = _cli("db", "upgrade", "--sql", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert stored_revision(db_url) is None, "--sql runs nothing"
    engine = sa.create_engine(db_url)
    with engine.begin() as conn, conn.connection.dbapi_connection.cursor() as cur:
        cur.execute(result.stdout.replace("BEGIN;", "").replace("COMMIT;", ""))
    engine.dispose()
    assert stored_revision(db_url) == HEAD
    assert drift(db_url) == []
    at_head = _cli("db", "upgrade", "--sql", "--db", db_url)
    assert at_head.stdout.strip() == "-- the store is at head: nothing to run"


@pytest.mark.postgres
def test_db_upgrade_sql_refuses_a_store_of_a_release_before_migrations(db_url: str, source: Source) -> None:
    if _dialect(db_url) != "postgresql":
        pytest.skip("--sql is for PostgreSQL")
    build_legacy_store(db_url, "release_2b94a04", source)
    result = _cli("db", "upgrade", "--sql", "--db", db_url)
    assert result.exit_code == EXIT_STORE
    assert "predates schema migrations" in result.output and "without --sql" in result.output
    assert stored_revision(db_url) is None
