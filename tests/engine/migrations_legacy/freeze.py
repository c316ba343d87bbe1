"""Freeze the DDL with which an earlier release created its store, for the upgrade tests.

    python -m tests.engine.migrations_legacy.freeze COMMIT NAME

writes `NAME.sqlite.sql` and `NAME.postgresql.sql` beside this file: the CREATE TABLE and
CREATE INDEX statements that `SQLModel.metadata.create_all` ran for `engine/tables.py` as it
was at COMMIT (read with `git show`, imported in a child process so that its tables do not
meet today's on one `SQLModel.metadata`). Run it once per release whose schema changed: the
files are then frozen, whatever `engine/tables.py` becomes.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
_COMPILE = """
import sys
sys.path.insert(0, sys.argv[1])
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlmodel import SQLModel
import frozen_tables  # noqa: F401
dialect = {"sqlite": sqlite.dialect(), "postgresql": postgresql.dialect()}[sys.argv[2]]
for table in SQLModel.metadata.sorted_tables:
    print(str(CreateTable(table).compile(dialect=dialect)).strip() + ";")
    for index in sorted(table.indexes, key=lambda i: i.name):
        print(str(CreateIndex(index).compile(dialect=dialect)).strip() + ";")
"""


def freeze(commit: str, name: str) -> None:
    source = subprocess.run(["git", "show", f"{commit}:engine/tables.py"], check=True, capture_output=True,
                            text=True, cwd=HERE).stdout
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "frozen_tables.py").write_text(source, encoding="utf-8")
        for dialect in ("sqlite", "postgresql"):
            ddl = subprocess.run([sys.executable, "-c", _COMPILE, tmp, dialect], check=True, capture_output=True,
                                 text=True).stdout
            header = (f"-- The {dialect} schema of a store created at commit {commit} (engine/tables.py then).\n"
                      f"-- Frozen by: python -m tests.engine.migrations_legacy.freeze {commit} {name}\n")
            (HERE / f"{name}.{dialect}.sql").write_text(header + ddl, encoding="utf-8")


if __name__ == "__main__":
    freeze(*sys.argv[1:3])
