"""Hostile `configs/engine.yaml` files: every command that reads the settings exits 2 with
`error: configs/engine.yaml:LINE:COL: field: ...`, a hint, and no traceback; the experiments
beside them are untouched. Odd but valid settings files are accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from tests.hostile.conftest import assert_names, assert_no_traceback
from tests.samples import AB_YAML, REPO

SHIPPED = (REPO / "configs" / "engine.yaml").read_text()


def edit(old: str, new: str) -> str:
    assert old in SHIPPED, old
    return SHIPPED.replace(old, new, 1)


# (id, content of configs/engine.yaml, places the message must name). Lines are the shipped file's.
INVALID: list[tuple[str, str | bytes, tuple[str, ...]]] = [
    ("syntax error", "server: [\n", ("engine.yaml:2:1", "invalid YAML")),
    ("database is a number", "database: 5\n", ("engine.yaml:1:11: database:", "mapping")),
    ("port is text", edit("port: 8080", "port: abc"), ("engine.yaml:11:9: server.port:", "integer")),
    ("port out of range", edit("port: 8080", "port: 70000"), ("engine.yaml:11:9: server.port:", "65535")),
    ("port is quoted", edit("port: 8080", 'port: "8080"'), ("engine.yaml:11:9: server.port:",)),
    ("typo batch_sise", edit("batch_size", "batch_sise"), ("engine.yaml:6:3: exposures.batch_sise:", "unknown")),
    ("typo prot", edit("port: 8080", "prot: 8080"), ("engine.yaml:11:3: server.prot:", "unknown")),
    ("unknown top-level key", SHIPPED + "extra: 1\n", ("engine.yaml:18:1: extra:", "unknown")),
    ("negative batch size", edit("batch_size: 500", "batch_size: -1"), ("engine.yaml:6:15: exposures.batch_size:",)),
    ("flush seconds NaN", edit("flush_seconds: 1.0", "flush_seconds: .nan"),
     ("engine.yaml:7:18: exposures.flush_seconds:",)),
    ("boolean buffer size", edit("max_buffered: 50000", "max_buffered: true"),
     ("engine.yaml:8:17: exposures.max_buffered:",)),
    ("huge body limit", edit("max_body_bytes: 1048576", "max_body_bytes: 123456789012345678901234567890"),
     ("engine.yaml:12:19: server.max_body_bytes:", "64-bit")),
    ("empty url", edit("url: sqlite:///crosspromo.db", "url: ''"), ("engine.yaml:3:8: database.url:",)),
    ("bad env var name", edit("admin_env: CROSSPROMO_ADMIN_KEY", "admin_env: 'my key'"),
     ("engine.yaml:16:16: server.api_keys.admin_env:",)),
    ("duplicate key", edit("  host: 127.0.0.1", "  host: 127.0.0.1\n  host: 0.0.0.0"),
     ("engine.yaml:11:3: server.host:", "duplicate")),
    ("a list instead of a mapping", "- database\n", ("engine.yaml:1:1", "mapping")),
    ("tab indentation", edit("  host: 127.0.0.1", "\thost: 127.0.0.1"), ("engine.yaml:10:1", "invalid YAML")),
    ("not UTF-8", SHIPPED.encode().replace(b"Engine settings", b"Engine s\xe9ttings"), ("engine.yaml:1:11", "UTF-8")),
    ("python tag", "database: !!python/object:os.system {}\n", ("engine.yaml:1:11", "constructor")),
    ("alias bomb", "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n"
                                            for i in range(1, 10)), ("engine.yaml:", "aliases expand")),
]
VALID: list[tuple[str, str | bytes]] = [
    ("empty file", ""),
    ("comments only", "# defaults\n"),
    ("BOM and CRLF", ("\ufeff" + SHIPPED.replace("\n", "\r\n")).encode()),
    ("partial settings", "server: {port: 9000}\n"),
]
COMMANDS = [["validate"], ["apply", "--dry-run"], ["winners"]]
runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CROSSPROMO_DATABASE_URL", raising=False)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "landing.yaml").write_text(AB_YAML)
    (tmp_path / "configs").mkdir()
    return tmp_path


def write(workdir: Path, content: str | bytes) -> None:
    path = workdir / "configs" / "engine.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())


@pytest.mark.parametrize(("content", "places"), [r[1:] for r in INVALID], ids=[r[0] for r in INVALID])
def test_bad_settings_stop_every_command_naming_the_place(workdir: Path, content: str | bytes,
                                                          places: tuple[str, ...]) -> None:
    write(workdir, content)
    for args in COMMANDS:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert_no_traceback(result.output)
        assert result.output.startswith("error: configs/engine.yaml"), result.output
        assert_names(result.output, *places, "hint: ")
    assert (workdir / "experiments" / "landing.yaml").read_text() == AB_YAML
    assert not (workdir / "crosspromo.db").exists()


@pytest.mark.parametrize("content", [r[1] for r in VALID], ids=[r[0] for r in VALID])
def test_odd_but_valid_settings_are_accepted(workdir: Path, content: str | bytes) -> None:
    write(workdir, content)
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 0, result.output
    assert_names(result.output, "1 experiment(s) valid: landing")
    result = runner.invoke(app, ["apply", "--dry-run", "--db", f"sqlite:///{workdir / 'store.db'}"])
    assert result.exit_code == 0, result.output
    assert_names(result.output, "create    landing")
