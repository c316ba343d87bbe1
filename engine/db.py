"""Database connections: SQLite tuned for concurrent writers, PostgreSQL by URL alone.

SQLite runs in WAL mode with a busy timeout, and write transactions start with
`BEGIN IMMEDIATE` so two writers queue at BEGIN instead of failing at COMMIT. Reads use a
plain deferred `BEGIN`.
"""

from __future__ import annotations

import fcntl
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, Connection, Insert, Table, any_, bindparam, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.sql.type_api import TypeEngine
from sqlmodel import SQLModel

import engine.tables  # noqa: F401  (registers the tables on SQLModel.metadata)

SQLITE_BUSY_TIMEOUT_S = 30.0
_COLUMN_TYPES: dict[str, dict[str, int]] = {}  # PostgreSQL: table -> column -> type oid
_WRITE_LOCKS: weakref.WeakKeyDictionary[SAEngine, SqliteWriteLock] = weakref.WeakKeyDictionary()


class StoreError(RuntimeError):
    """The store cannot be reached or used; the message says why and what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the store cannot be reached now (as opposed to a bad statement)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class SqliteWriteLock:
    """SQLite has one writer at a time. Writers queue here — threads on a mutex, processes on a
    lock file beside the database — instead of in SQLite's busy handler, which polls with
    growing sleeps and lets one busy process starve the others."""

    def __init__(self, database: str | None) -> None:
        self._threads = threading.Lock()
        self._file = None if database in (None, "", ":memory:") else open(f"{database}.write-lock", "a")  # noqa: SIM115

    def __enter__(self) -> None:
        self._threads.acquire()
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
        self._threads.release()


def create_engine(url: str) -> SAEngine:
    """A SQLAlchemy engine for `url`, with the tables created if missing."""
    hint = "use sqlite:///path.db or postgresql+psycopg://user@host/db"
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            sa = sa_create_engine(
                url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
            )
            _tune_sqlite(sa)
            _WRITE_LOCKS[sa] = SqliteWriteLock(parsed.database)
        else:
            sa = sa_create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10,
                                  connect_args={"connect_timeout": 3})
    except Exception as exc:  # sqlalchemy raises several kinds for a bad URL or missing driver
        raise StoreError(f"invalid database URL {url!r}: {exc}", hint) from None
    try:
        SQLModel.metadata.create_all(sa)
    except Exception as exc:
        raise StoreError(f"cannot open the store at {parsed.render_as_string(hide_password=True)}: {exc}",
                         "check the URL (--db or CROSSPROMO_DATABASE_URL) and that the server is up") from None
    return sa


def _tune_sqlite(sa: SAEngine) -> None:
    @event.listens_for(sa, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module so BEGIN is ours to choose.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(sa, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "" if conn.get_execution_options().get("read_only") else " IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN{mode}")


@contextmanager
def write(sa: SAEngine) -> Iterator[Connection]:
    """One write transaction: committed on success, rolled back on any error."""
    with _WRITE_LOCKS.get(sa, nullcontext()), sa.begin() as conn:
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
