"""`configs/engine.yaml`: validated settings, errors naming file:line:col and the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.config import CONFIG_PATH, ConfigError, EngineConfig, load_config, parse_config
from tests.samples import REPO

SHIPPED = (REPO / "configs" / "engine.yaml").read_text()


def test_the_shipped_settings_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CROSSPROMO_DATABASE_URL", raising=False)
    assert parse_config(SHIPPED) == EngineConfig()


def test_settings_are_read_and_the_env_url_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CROSSPROMO_DATABASE_URL", raising=False)
    path = tmp_path / "engine.yaml"
    path.write_text("database: {url: 'sqlite:///x.db'}\nexposures: {batch_size: 7, flush_seconds: 0.5}\n"
                    "server: {port: 9000, spool_dir: sp, api_keys: {admin_env: MY_ADMIN}}\n")
    config = load_config(path)
    assert config == dataclasses.replace(EngineConfig(), database_url="sqlite:///x.db", exposure_batch_size=7,
                                         exposure_flush_seconds=0.5, server_port=9000, spool_dir=Path("sp"),
                                         admin_key_env="MY_ADMIN")
    monkeypatch.setenv("CROSSPROMO_DATABASE_URL", "sqlite:///env.db")
    assert load_config(path).database_url == "sqlite:///env.db"


def test_an_empty_or_absent_file_gives_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CROSSPROMO_DATABASE_URL", raising=False)
    assert parse_config("# nothing set\n") == EngineConfig()
    assert load_config(tmp_path / "absent.yaml") == EngineConfig()


@pytest.mark.parametrize(("text", "expected"), [
    ("server:\n  host: h\n  port: abc\n", "configs/engine.yaml:3:9: server.port: Input should be a valid integer"),
    ("database: 5\n", "configs/engine.yaml:1:11: database: expected a mapping of fields"),
    ("exposures:\n  batch_sise: 10\n", "configs/engine.yaml:2:3: exposures.batch_sise: unknown field"),
    ("server: {prot: 80}\n", "configs/engine.yaml:1:10: server.prot: unknown field"),
    ("server: [\n", "configs/engine.yaml:2:1: invalid YAML"),
], ids=["port abc", "database 5", "batch_sise", "prot", "syntax error"])
def test_bad_settings_name_file_line_col_and_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert str(info.value).startswith(expected), str(info.value)


def test_every_command_reports_bad_settings_without_a_traceback(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / CONFIG_PATH).write_text("database:\n  url: sqlite:///x.db\nserver:\n  port: abc\n")
    runner = CliRunner()
    for args in (["validate"], ["apply", "--dry-run"], ["winners"], ["serve"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("error: configs/engine.yaml:4:9: server.port: "), (args, result.output)
        assert "hint:" in result.output and "Traceback" not in result.output


def test_channel_costs_are_read_and_checked() -> None:
    assert parse_config("costs: {sms: 0.05, push: 0}\n").channel_costs == {"sms": 0.05, "push": 0.0}
    with pytest.raises(ConfigError, match=r"engine.yaml:1:14: costs.sms: Input should be greater than or equal to 0"):
        parse_config("costs: {sms: -1}\n", "configs/engine.yaml")
    with pytest.raises(ConfigError, match=r"engine.yaml:1:9: costs.fax: unknown field"):
        parse_config("costs: {fax: 1}\n", "configs/engine.yaml")
