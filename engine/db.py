"""Database connections: SQLite tuned for concurrent writers, PostgreSQL by URL alone.

SQLite runs in WAL mode with a busy timeout, and write transactions start with
`BEGIN IMMEDIATE` so two writers queue at BEGIN instead of failing at COMMIT. Reads use a
plain deferred `BEGIN`. A writer waits at most `busy_timeout()` seconds (env
`CROSSPROMO_STORE_BUSY_TIMEOUT`, default 30) for another one, then fails with
`StoreLockedError` instead of hanging.

Errors: `store_error` turns a driver's error into a `StoreError` whose message says what is
wrong (read-only, locked, corrupted, unreachable) without the statement's parameters (row
data) or the URL's password; engines are created with `hide_parameters` for the same reason.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, Connection, Insert, Table, any_, bindparam, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.sql.type_api import TypeEngine

from engine.redact import redact_text, redact_url

BUSY_TIMEOUT_ENV = "CROSSPROMO_STORE_BUSY_TIMEOUT"
DEFAULT_BUSY_TIMEOUT_S = 30.0
_LOCK_POLL_S = 0.05
_COLUMN_TYPES: dict[str, dict[str, int]] = {}  # PostgreSQL: table -> column -> type oid
_WRITE_LOCKS: weakref.WeakKeyDictionary[SAEngine, SqliteWriteLock] = weakref.WeakKeyDictionary()
# SQLite: the database file and its identity (st_dev, st_ino) when the engine opened it.
_SQLITE_FILES: weakref.WeakKeyDictionary[SAEngine, tuple[str, tuple[int, int]]] = weakref.WeakKeyDictionary()


class StoreError(RuntimeError):
    """The store cannot be reached or used; the message says why and what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class StoreFileGoneError(StoreError):
    """The SQLite file opened at start was deleted or replaced: writes would land in a file no
    one reads (or in a new, empty store), so none are made."""


class StoreLockedError(StoreError):
    """Another writer held the store for longer than the busy timeout."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"the store is locked by another writer (waited {waited:g} s)",
                         f"retry when the other writer is done, or raise {BUSY_TIMEOUT_ENV} (seconds)")


def busy_timeout() -> float:
    """Seconds a writer waits for another one before `StoreLockedError` (env, default 30)."""
    raw = os.environ.get(BUSY_TIMEOUT_ENV)
    if raw is None:
        return DEFAULT_BUSY_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e6:
        raise StoreError(f"{BUSY_TIMEOUT_ENV}={raw!r}: expected seconds, a number >= 0",
                         f"unset {BUSY_TIMEOUT_ENV} for the default of {DEFAULT_BUSY_TIMEOUT_S:g} s")
    return value


# What a driver's error means for the user, by a phrase of SQLite's or PostgreSQL's message.
_KNOWN_FAULTS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("readonly database", "read-only", "read only"), "the store {url} is read-only",
     "check the file's (and its directory's) permissions, or point --db at a writable store"),
    (("file is not a database", "database disk image is malformed", "file is encrypted"),
     "the store {url} is corrupted or not a SQLite database",
     "restore it from a backup, or point --db at another file"),
    (("unable to open database file",), "cannot open the store {url}",
     "check that the path exists and is a file you may read and write"),
    (("disk i/o error", "database or disk is full", "no space left"), "the store {url} cannot be written: {reason}",
     "free disk space or check the device"),
)


def first_line(exc: BaseException) -> str:
    """The first line of `exc`'s message, password-free: a driver's later lines quote the
    statement and its parameters."""
    text = str(exc).strip()
    return redact_text(text.splitlines()[0] if text else type(exc).__name__)


def store_error(exc: BaseException, url: str) -> StoreError | None:
    """The `StoreError` a driver's error `exc` means for the store at `url`, or None if `exc`
    is not a database error. The message holds the driver's first line only: never the
    statement, its parameters (row data) or a password."""
    if isinstance(exc, StoreError):
        return exc
    if not isinstance(exc, DBAPIError):
        return None
    reason = first_line(exc.orig)
    lowered = reason.lower()
    if "database is locked" in lowered or "database table is locked" in lowered:
        return StoreLockedError(busy_timeout())
    shown = redact_url(url)
    for phrases, message, hint in _KNOWN_FAULTS:
        if any(p in lowered for p in phrases):
            return StoreError(message.format(url=shown, reason=reason), hint)
    if is_unavailable(exc):
        return StoreError(f"the store {shown} is unreachable: {reason}",
                          "check the URL (--db or CROSSPROMO_DATABASE_URL) and that the server is up")
    return StoreError(f"the store {shown} refused the operation: {reason}",
                      "check that the store belongs to this version of crosspromo")


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the store cannot be reached now (as opposed to a bad statement). A
    store locked by another writer for longer than the busy timeout is out of reach too: its
    rows are good and are retried, never quarantined."""
    if isinstance(exc, OperationalError | InterfaceError | StoreFileGoneError | StoreLockedError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class SqliteWriteLock:
    """SQLite has one writer at a time. Writers queue here — threads on a mutex, processes on a
    lock file beside the database — instead of in SQLite's busy handler, which polls with
    growing sleeps and lets one busy process starve the others."""

    def __init__(self, database: str | None, timeout: float) -> None:
        self._threads = threading.Lock()
        self._timeout = timeout
        self._file = None if database is None else open(f"{database}.write-lock", "a")  # noqa: SIM115

    def __enter__(self) -> None:
        deadline = time.monotonic() + self._timeout
        if not self._threads.acquire(timeout=self._timeout):
            raise StoreLockedError(self._timeout)
        if self._file is None:
            return
        # flock has no timeout: poll without blocking until the deadline.
        while True:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._threads.release()
                    raise StoreLockedError(self._timeout) from None
                time.sleep(_LOCK_POLL_S)

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
        self._threads.release()


def create_engine(url: str, *, existing: bool = False) -> SAEngine:
    """A SQLAlchemy engine for `url`, connected once; with `existing`, a SQLite file that is not
    there is an error instead of a new store. The schema is `engine.migrations`'s business."""
    shown = redact_url(url)
    timeout = busy_timeout()
    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        database = _sqlite_file(parsed.database) if backend == "sqlite" else None
        if database is not None:
            _check_sqlite_path(database, shown, existing)
        sa = (sa_create_engine(url, hide_parameters=True,
                               connect_args={"check_same_thread": False, "timeout": timeout})
              if backend == "sqlite" else
              sa_create_engine(url, hide_parameters=True, pool_pre_ping=True, pool_size=10, max_overflow=10,
                               connect_args={"connect_timeout": 3}))
    except StoreError:
        raise
    except Exception as exc:  # sqlalchemy raises several kinds for a bad URL or missing driver
        raise StoreError(f"invalid database URL {shown}: {first_line(exc)}",
                         "use sqlite:///path.db or postgresql+psycopg://user@host/db") from None
    if backend == "sqlite":
        _tune_sqlite(sa, timeout)
        try:
            _WRITE_LOCKS[sa] = SqliteWriteLock(database, timeout)
        except OSError as exc:
            raise StoreError(f"cannot open the store {shown}: {exc.strerror} ({exc.filename})",
                             "the store's directory must be writable (SQLite keeps a lock file beside it)") from None
    try:
        with sa.connect():  # the first connection: SQLite creates the file, a server says it is there
            pass
    except Exception as exc:
        raise store_error(exc, url) or StoreError(
            f"cannot open the store {shown}: {first_line(exc)}",
            "check the URL (--db or CROSSPROMO_DATABASE_URL) and that the server is up") from None
    if database is not None:
        identity = sqlite_file_identity(database)
        if identity is not None:
            _SQLITE_FILES[sa] = (database, identity)
    return sa


SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_header(path: Path) -> bytes | None:
    """The 100-byte header of the SQLite database at `path`; None if it is not one (or absent)."""
    try:
        with path.open("rb") as fh:
            header = fh.read(100)
    except OSError:
        return None
    return header if len(header) == 100 and header.startswith(SQLITE_MAGIC) else None


def sqlite_file_identity(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at `path`, None if there is none: a file deleted and made
    anew at the same path has another identity."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def check_sqlite_file(sa: SAEngine) -> None:
    """Raise `StoreFileGoneError` if `sa`'s SQLite file is no longer the one opened at start."""
    opened = _SQLITE_FILES.get(sa)
    if opened is None:
        return
    path, identity = opened
    now = sqlite_file_identity(path)
    if now != identity:
        what = "was deleted" if now is None else "was replaced by another file"
        raise StoreFileGoneError(f"the database file {path} {what} while in use",
                                 "restore the file and restart the service; writes wait until then")


def _sqlite_file(database: str | None) -> str | None:
    """The file behind a SQLite URL's database (a `file:` URI names one too); None in memory."""
    if database in (None, "", ":memory:"):
        return None
    if database.startswith("file:"):
        path = database.removeprefix("file:").partition("?")[0]
        return None if path in ("", ":memory:") else path
    return database


def _check_sqlite_path(database: str, shown: str, existing: bool) -> None:
    """A SQLite file path whose directory is missing, or that names a directory, is the user's
    mistake, not an invalid URL: say which."""
    path = Path(database)
    if path.is_dir():
        raise StoreError(f"cannot open the store {shown}: {path} is a directory", "name a file, e.g. sqlite:///app.db")
    if not path.parent.is_dir():
        raise StoreError(f"cannot open the store {shown}: directory {path.parent} does not exist",
                         "create the directory first, or point --db at a file in an existing one")
    if existing and not path.exists():
        raise StoreError(f"there is no store at {shown}", "check --db; 'crosspromo db upgrade' creates a store")


def _tune_sqlite(sa: SAEngine, timeout: float) -> None:
    @event.listens_for(sa, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so BEGIN is ours to choose.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(sa, "do_connect")
    def _on_do_connect(*_: Any) -> None:
        check_sqlite_file(sa)  # never open an empty store in place of a deleted one

    @event.listens_for(sa, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "" if conn.get_execution_options().get("read_only") else " IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN{mode}")


@contextmanager
def write(sa: SAEngine) -> Iterator[Connection]:
    """One write transaction: committed on success, rolled back on any error."""
    with _WRITE_LOCKS.get(sa, nullcontext()):
        check_sqlite_file(sa)  # a pooled connection would write on into a deleted file
        with sa.begin() as conn:
            yield conn


@contextmanager
def read(sa: SAEngine) -> Iterator[Connection]:
    with sa.connect() as conn, conn.execution_options(read_only=True).begin():
        yield conn


@lru_cache(maxsize=64)
def _insert_ignoring_duplicates(dialect: str, table: Table) -> Insert:
    # RETURNING tells inserted from skipped rows on both backends (rowcount is not reliable on psycopg).
    key = list(table.primary_key.columns)[0]
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing().returning(key)
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing().returning(key)
    raise StoreError(f"unsupported database {dialect!r}", "use SQLite or PostgreSQL")


def insert_if_absent(conn: Connection, table: Table, row: dict[str, Any]) -> bool:
    """Insert `row` unless its primary key exists (no error, no lock wait); True if inserted."""
    return conn.execute(_insert_ignoring_duplicates(conn.dialect.name, table), row).first() is not None


def bulk_insert(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert `rows` (tuples in the order of `columns`): `insert_columns` for rows."""
    if rows:
        insert_columns(conn, table, dict(zip(columns, zip(*rows, strict=True), strict=True)))


def insert_columns(conn: Connection, table: Table, data: Mapping[str, Sequence[Any]]) -> None:
    """Insert rows given column by column (`data`: column name -> its values, all of one
    length) by the driver's fastest path: COPY on PostgreSQL, one prepared `executemany` on
    SQLite. Without conflict handling: a key that exists raises `IntegrityError`, as a plain
    INSERT would. Rows exist only as the driver takes them, one at a time from the columns."""
    columns = list(data)
    values = list(data.values())
    if not values or not len(values[0]):
        return
    names = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        assert raw is not None
        try:
            with raw.cursor() as cur:
                types = _column_types(cur, table.name)
                with cur.copy(f"COPY {table.name} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types([types[c] for c in columns])
                    for row in zip(*values, strict=True):
                        copy.write_row(row)
        except conn.dialect.loaded_dbapi.Error as exc:
            # The driver's own error, as SQLAlchemy would have raised it (IntegrityError, ...).
            raise DBAPIError.instance(f"COPY {table.name}", None, exc, conn.dialect.loaded_dbapi.Error,
                                      dialect=conn.dialect) from exc
        return
    for i, c in enumerate(columns):
        if f := _bind_processor(table.c[c].type, conn.dialect):
            # Each distinct value converted once (a batch's rows share a timestamp).
            stored = {v: None if v is None else f(v) for v in set(values[i])}
            if any(w is not v for v, w in stored.items()):  # else f kept every value (floats as floats)
                values[i] = [stored[v] for v in values[i]]
    placeholders = ", ".join("?" * len(columns))
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({placeholders})",
                         list(zip(*values, strict=True)))


def _column_types(cur: Any, table: str) -> dict[str, int]:
    """The server's type (oid) of each column, which binary COPY must send exactly.
    Read once per table: the tables are ours and built-in type oids never change."""
    if table not in _COLUMN_TYPES:
        cur.execute("SELECT attname, atttypid::int FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped", [table])
        _COLUMN_TYPES[table] = dict(cur.fetchall())
    return _COLUMN_TYPES[table]


def _bind_processor(type_: TypeEngine[Any], dialect: Any) -> Callable[[Any], Any] | None:
    """How SQLAlchemy would store a value of this column (on SQLite: datetimes as text)."""
    return type_.dialect_impl(dialect).bind_processor(dialect)


def member_of(column: ColumnElement[Any], name: str, dialect: str) -> ColumnElement[bool]:
    """`column` is one of the list bound as `name`: `= ANY(array)` on PostgreSQL (one statement
    text whatever the list's length, so the server can keep it prepared), `IN (...)` on SQLite."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))
