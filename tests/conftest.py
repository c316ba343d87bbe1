from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlmodel import SQLModel

import engine.tables  # noqa: F401  (registers the tables to drop)
from engine.api import Engine
from tests.samples import AB_YAML, REVENUE_YAML, write_yaml

POSTGRES_URL = os.environ.get("CROSSPROMO_TEST_POSTGRES_URL")


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
