"""Hostile stores for the schema migrations: a store of a newer crosspromo, a store that is not
there, an old store that cannot be written, SQL asked of a SQLite store, a server that is not
there.

Each row runs a command as a user would and asserts exit code 4 (2 for an option that does not
apply to the store), one `error:` line naming the store or option and the fault, a hint, no
traceback and no password; a store that could not be upgraded is left as it was.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import EXIT_INVALID, EXIT_STORE, app
from engine.store import Store
from tests.hostile.conftest import assert_names, assert_no_traceback

runner = CliRunner()
SECRET = "hunter2-s3cret"
LEGACY_DDL = Path(__file__).parents[1] / "engine" / "migrations_legacy" / "release_2b94a04.sqlite.sql"


def _legacy(root: Path) -> Path:
    """A store of the last release before migrations (its own DDL, no version table)."""
    path = root / "legacy.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(LEGACY_DDL.read_text(encoding="utf-8"))
    return path


def _newer(root: Path) -> str:
    url = f"sqlite:///{root / 'newer.db'}"
    Store(url).close()
    with sqlite3.connect(root / "newer.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    return url


def _read_only_legacy(root: Path) -> str:
    # Opened read-only by SQLite itself: file modes do not stop root, which runs CI containers.
    return f"sqlite:///file:{_legacy(root)}?mode=ro&uri=true"


# (id, store URL builder, command, names in the message, names in the hint); exit 4 unless named
CASES: list[tuple[str, Callable[[Path], str], list[str], list[str], list[str]]] = [
    ("newer-store-on-winners", _newer, ["winners"], ["newer.db", "schema revision 9999", "newer than this"],
     ["upgrade crosspromo"]),
    ("newer-store-on-db-upgrade", _newer, ["db", "upgrade"], ["schema revision 9999"], ["upgrade crosspromo"]),
    ("no-store-on-db-current", lambda r: f"sqlite:///{r / 'typo.db'}", ["db", "current"],
     ["there is no store", "typo.db"], ["db upgrade"]),
    ("no-store-on-db-upgrade-sql", lambda r: f"sqlite:///{r / 'typo.db'}", ["db", "upgrade", "--sql"],
     ["there is no store"], ["db upgrade"]),
    ("db-upgrade-sql-on-sqlite", lambda r: f"sqlite:///{_legacy(r)}", ["db", "upgrade", "--sql"],
     ["--sql", "PostgreSQL"], ["without --sql"]),
    ("read-only-store-before-migrations", _read_only_legacy, ["winners"], ["read-only", "legacy.db"], ["writable"]),
    ("read-only-store-before-migrations-on-db-upgrade", _read_only_legacy, ["db", "upgrade"], ["read-only"],
     ["writable"]),
    ("unreachable-postgres-with-password", lambda r: f"postgresql+psycopg://admin:{SECRET}@127.0.0.1:1/app",
     ["db", "current"], ["unreachable", "admin:***@127.0.0.1:1"], ["server is up"]),
    ("not-a-url", lambda r: "not a url", ["db", "current"], ["invalid database URL"], ["sqlite:///"]),
]


@pytest.mark.parametrize(("url", "command", "names", "hint"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_schema_faults_are_one_clean_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           url: Callable[[Path], str], command: list[str], names: list[str],
                                           hint: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CROSSPROMO_DATABASE_URL", raising=False)
    monkeypatch.setenv("CROSSPROMO_LOG_FILE", str(tmp_path / "crosspromo.log"))
    result = runner.invoke(app, [*command, "--db", url(tmp_path)])
    assert result.exit_code == (EXIT_INVALID if "--sql" in names else EXIT_STORE), result.output
    assert result.output.startswith("error: "), result.output
    error, _, hint_text = result.output.partition("hint: ")
    assert_names(error, *names)
    assert_names(hint_text, *hint)
    assert_no_traceback(result.output)
    assert SECRET not in result.output


def test_an_old_store_that_cannot_be_upgraded_is_left_as_it_was(tmp_path: Path) -> None:
    url = _read_only_legacy(tmp_path)
    runner.invoke(app, ["winners", "--db", url])
    with sqlite3.connect(tmp_path / "legacy.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "alembic_version" not in tables and "quarantine" in tables
