"""Hostile stores: a bad URL, a missing directory, a read-only, corrupted or locked store.

Each row runs a command against the faulty store and asserts exit code 4, one `error:` line
naming the store (password masked) and the fault, no traceback, no row data and no password
anywhere in the output, and that a writer waits at most the configured busy timeout.
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.api import Engine
from engine.cli import EXIT_STORE, app
from engine.redact import redact_text, redact_url
from tests.hostile.conftest import assert_names, assert_no_traceback
from tests.samples import AB_YAML, write_yaml

runner = CliRunner()
SECRET = "hunter2-s3cret"
ROW_DATA = "unit-with-private-data-42"  # a unit stored in the healthy store: never echoed in an error


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """experiments/ and a healthy store `good.db` holding one decision for ROW_DATA."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CROSSPROMO_DATABASE_URL", raising=False)
    monkeypatch.setenv("CROSSPROMO_LOG_FILE", str(tmp_path / "crosspromo.log"))
    monkeypatch.setenv("CROSSPROMO_STORE_BUSY_TIMEOUT", "0.5")
    write_yaml(tmp_path / "experiments", "landing.yaml", AB_YAML)
    with Engine.open(f"sqlite:///{tmp_path / 'good.db'}", seed=0) as engine:
        engine.apply([tmp_path / "experiments"])
        engine.decide("landing", ROW_DATA, {})
    return tmp_path


def _garbage(root: Path) -> str:
    (root / "garbage.db").write_bytes(bytes(range(256)) * 40)
    return f"sqlite:///{root / 'garbage.db'}"


def _text_file(root: Path) -> str:
    (root / "notes.db").write_text("these are my notes, not a database\n")
    return f"sqlite:///{root / 'notes.db'}"


def _truncated(root: Path) -> str:
    (root / "truncated.db").write_bytes((root / "good.db").read_bytes()[:4096 + 100])
    return f"sqlite:///{root / 'truncated.db'}"


def _read_only(root: Path) -> str:
    # Opened read-only by SQLite itself: file modes do not stop root, which runs CI containers.
    return f"sqlite:///file:{root / 'good.db'}?mode=ro&uri=true"


def _directory(root: Path) -> str:
    (root / "adir").mkdir()
    return f"sqlite:///{root / 'adir'}"


@contextmanager
def _nothing(root: Path) -> Iterator[None]:
    yield


@contextmanager
def _sqlite_writer(root: Path) -> Iterator[None]:
    """Another program holds SQLite's write lock (an open write transaction) the whole time."""
    conn = sqlite3.connect(root / "good.db", isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE decisions SET unit = unit")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


@contextmanager
def _crosspromo_writer(root: Path) -> Iterator[None]:
    """Another crosspromo process holds the store's writer lock file the whole time."""
    with open(root / "good.db.write-lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _good(root: Path) -> str:
    return f"sqlite:///{root / 'good.db'}"


DECIDE = ["decide", "landing", "--unit", "u-new"]
# (id, store URL builder, held while the command runs, command, names in the message)
Held = Callable[[Path], AbstractContextManager[None]]
CASES: list[tuple[str, Callable[[Path], str], Held, list[str], list[str]]] = [
    ("unknown-driver", lambda r: "nosuchdriver://x", _nothing, ["winners"], ["invalid database URL"]),
    ("unknown-driver-with-password", lambda r: f"foo://admin:{SECRET}@db.internal/app", _nothing, ["winners"],
     ["invalid database URL", "foo://admin:***@db.internal/app"]),
    ("not-a-url", lambda r: "not a url", _nothing, ["winners"], ["invalid database URL", "not a url"]),
    ("sqlite-url-with-password", lambda r: f"sqlite://u:{SECRET}@/x.db", _nothing, ["apply"],
     ["invalid database URL", "u:***@"]),
    ("unreachable-postgres-with-password", lambda r: f"postgresql+psycopg://admin:{SECRET}@127.0.0.1:1/app",
     _nothing, ["winners"], ["unreachable", "admin:***@127.0.0.1:1"]),
    ("missing-directory", lambda r: "sqlite:////no/such/dir/x.db", _nothing, ["winners"],
     ["/no/such/dir", "does not exist"]),
    ("missing-directory-on-apply", lambda r: f"sqlite:///{r / 'nodir' / 'x.db'}", _nothing, ["apply"],
     ["nodir", "does not exist"]),
    ("directory-as-store", _directory, _nothing, ["winners"], ["adir", "is a directory"]),
    ("read-only-on-decide", _read_only, _nothing, DECIDE, ["read-only", "good.db"]),
    ("read-only-on-record", _read_only, _nothing,
     ["record", '{"event_id": "e1", "type": "exposure", "experiment": "landing", "unit": "x", "arm": "control"}'],
     ["read-only"]),
    ("corrupted-garbage-bytes", _garbage, _nothing, ["winners"], ["garbage.db", "corrupted"]),
    ("corrupted-text-file", _text_file, _nothing, ["decide", "landing", "--unit", "u"], ["notes.db", "corrupted"]),
    ("corrupted-truncated-store", _truncated, _nothing, ["winners"], ["truncated.db", "corrupted"]),
    ("locked-by-sqlite-writer-on-decide", _good, _sqlite_writer, DECIDE, ["locked by another writer"]),
    ("locked-by-sqlite-writer-on-apply", _good, _sqlite_writer, ["apply"], ["locked by another writer"]),
    ("locked-by-crosspromo-writer", _good, _crosspromo_writer, DECIDE, ["locked by another writer"]),
]


@pytest.mark.parametrize(("url", "held", "command", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_store_faults_are_one_clean_error(workdir: Path, url: Callable[[Path], str], held: Held,
                                          command: list[str], names: list[str]) -> None:
    with held(workdir):
        result = runner.invoke(app, [*command, "--db", url(workdir)])
    assert result.exit_code == EXIT_STORE, result.output
    assert result.output.startswith("error: "), result.output
    assert "hint: " in result.output
    assert_no_traceback(result.output)
    assert_names(result.output, *names)
    for leak in (SECRET, ROW_DATA, "[SQL", "parameters", "sqlalche.me"):
        assert leak not in result.output
    log = workdir / "crosspromo.log"
    assert not log.exists() or SECRET not in log.read_text()
    if (workdir / "good.db").exists():  # the healthy store kept its decision and took none
        with sqlite3.connect(workdir / "good.db") as conn:
            assert conn.execute("SELECT unit FROM decisions").fetchall() == [(ROW_DATA,)]


def test_bad_busy_timeout_setting_names_the_variable(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSPROMO_STORE_BUSY_TIMEOUT", "soon")
    result = runner.invoke(app, ["winners", "--db", _good(workdir)])
    assert result.exit_code == EXIT_STORE
    assert_names(result.output, "CROSSPROMO_STORE_BUSY_TIMEOUT", "'soon'")
    assert_no_traceback(result.output)


def test_a_locked_store_is_refused_after_the_busy_timeout_then_usable_again(workdir: Path) -> None:
    with _sqlite_writer(workdir):
        result = runner.invoke(app, [*DECIDE, "--db", _good(workdir)])
    assert result.exit_code == EXIT_STORE and "waited 0.5 s" in result.output
    # once the other writer is gone the same command succeeds: nothing was left half-written
    result = runner.invoke(app, [*DECIDE, "--db", _good(workdir)])
    assert result.exit_code == 0, result.output


REDACTIONS = [
    ("postgres", "postgresql+psycopg://app:pw@db/x", "postgresql+psycopg://app:***@db/x"),
    ("password-with-at-sign", "postgresql://app:p@ss@db:5432/x", "postgresql://app:***@db:5432/x"),
    ("percent-encoded", "postgresql://app:p%40ss@db/x", "postgresql://app:***@db/x"),
    ("no-password", "postgresql://app@db/x", "postgresql://app@db/x"),
    ("sqlite", "sqlite:///crosspromo.db", "sqlite:///crosspromo.db"),
    ("in-a-sentence", "cannot reach mysql://root:toor@h/x: refused", "cannot reach mysql://root:***@h/x: refused"),
    ("at-sign-in-the-query", "postgresql://u:pw@db/x?x=@", "postgresql://u:***@db/x?x=@"),
    ("password-parameter", "postgresql+psycopg://bob@db/x?password=s3cr3t&sslmode=require",
     "postgresql+psycopg://bob@db/x?password=***&sslmode=require"),
    ("libpq-setting", "connection failed: host=db password=zz user=u",
     "connection failed: host=db password=*** user=u"),
]


@pytest.mark.parametrize(("raw", "shown"), [r[1:] for r in REDACTIONS], ids=[r[0] for r in REDACTIONS])
def test_redaction(raw: str, shown: str) -> None:
    assert redact_text(raw) == shown
    assert redact_url(raw) == shown
