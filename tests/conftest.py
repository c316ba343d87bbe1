from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

import engine.tables  # noqa: F401  (registers the tables to drop)
from engine.api import Engine
from tests.samples import AB_YAML, REVENUE_YAML, write_yaml

SERVER_URL = os.environ.get("CROSSPROMO_TEST_POSTGRES_URL")


def _worker_database(server_url: str | None, worker: str | None) -> str | None:
    """The database of this pytest-xdist worker: `<db>_gw0`, `<db>_gw1`... on the server of `server_url`.

    Parallel workers must not empty each other's tables, so each gets its own database, created on
    first use through a connection to the server's existing one (CREATE DATABASE runs outside a
    transaction). Without xdist (no worker id) the named database itself is used.
    """
    if not server_url or not worker or worker == "master":
        return server_url
    url = make_url(server_url)
    name = f"{url.database}_{worker}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


# Every test and helper reaches PostgreSQL through this URL (never the environment variable directly).
POSTGRES_URL = _worker_database(SERVER_URL, os.environ.get("PYTEST_XDIST_WORKER"))


def _fresh_postgres(url: str) -> str:
    """`url` emptied: crosspromo's tables and the schema version dropped."""
    sa = create_engine(url)
    try:
        SQLModel.metadata.drop_all(sa)
        with sa.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        sa.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store per test: a new SQLite file, or an emptied PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    if not POSTGRES_URL:
        pytest.skip("no PostgreSQL server: set CROSSPROMO_TEST_POSTGRES_URL (.ci/postgres.sh starts one)")
    return _fresh_postgres(POSTGRES_URL)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def engine(db_url: str, tmp_path: Path) -> Iterator[Engine]:
    exp = tmp_path / "experiments"
    write_yaml(exp, "landing.yaml", AB_YAML)
    write_yaml(exp, "bundle.yaml", REVENUE_YAML)
    with Engine.open(db_url, seed=0) as e:
        e.apply([exp])
        yield e
