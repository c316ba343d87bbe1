"""Engine settings: `configs/engine.yaml` (looked up from the working directory), then env vars.

The file is read with the experiments' safe YAML loader and validated by `SettingsFile`:
unknown keys (a typo such as `prot`) and wrong types are errors that name `file:line:col` and
the field, raised as `ConfigError`. Absent settings keep the defaults of `EngineConfig`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from engine.loader import SpecError, parse_model, read_yaml_text

DEFAULT_URL = "sqlite:///crosspromo.db"
CONFIG_PATH = Path("configs/engine.yaml")
URL_ENV = "CROSSPROMO_DATABASE_URL"


@dataclass(frozen=True)
class EngineConfig:
    database_url: str = DEFAULT_URL
    experiments_dir: Path = Path("experiments")
    exposure_batch_size: int = 500
    exposure_flush_seconds: float = 1.0
    # Past this many buffered exposures a decision waits for the write: memory stays bounded,
    # and a service deciding faster than the database can write slows to the write rate.
    exposure_max_buffered: int = 50_000
    server_host: str = "127.0.0.1"
    server_port: int = 8080
    admin_key_env: str = "CROSSPROMO_ADMIN_KEY"
    decide_key_env: str = "CROSSPROMO_DECIDE_KEY"
    viewer_key_env: str = "CROSSPROMO_VIEWER_KEY"  # the dashboard's read-only sign-in
    max_body_bytes: int = 1024 * 1024
    spool_dir: Path = Path(".crosspromo-spool")
    spool_max_bytes: int = 64 * 1024 * 1024
    # Default cost of one decision per channel (an arm's own `cost` wins), e.g. {"sms": 0.05}.
    channel_costs: Mapping[str, float] = field(default_factory=dict)


class ConfigError(SpecError):
    """The settings file is invalid; `problems` names each place (`file:line:col: field: ...`)."""

    hint = f"fix the settings file, or remove it to use the defaults (see {CONFIG_PATH} in the README)"


# Strict numbers: YAML types its scalars, so `port: "80"` or `batch_size: true` is a mistake.
Count = Annotated[int, Field(strict=True, ge=1)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Text = Annotated[str, Field(strict=True, min_length=1)]
EnvName = Annotated[str, Field(strict=True, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class _Section(BaseModel):
    """A block of the file; every setting is optional (None keeps `EngineConfig`'s default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: Text | None = None


class ExposureSettings(_Section):
    batch_size: Count | None = None
    flush_seconds: Seconds | None = None
    max_buffered: Count | None = None


class ApiKeySettings(_Section):
    admin_env: EnvName | None = None
    decide_env: EnvName | None = None
    viewer_env: EnvName | None = None


class ServerSettings(_Section):
    host: Text | None = None
    port: Annotated[int, Field(strict=True, ge=1, le=65535)] | None = None
    max_body_bytes: Count | None = None
    spool_dir: Text | None = None
    spool_max_bytes: Count | None = None
    api_keys: ApiKeySettings = ApiKeySettings()


Cost = Annotated[float, Field(ge=0.0, le=1e6, allow_inf_nan=False)]


class CostSettings(_Section):
    """Default cost of one decision (a send) per channel."""

    email: Cost | None = None
    push: Cost | None = None
    sms: Cost | None = None
    in_app: Cost | None = None
    social: Cost | None = None


class SettingsFile(_Section):
    """The layout of `configs/engine.yaml`."""

    database: DatabaseSettings = DatabaseSettings()
    costs: CostSettings = CostSettings()
    experiments_dir: Text | None = None
    exposures: ExposureSettings = ExposureSettings()
    server: ServerSettings = ServerSettings()

    def to_config(self) -> EngineConfig:
        db, ex, server = self.database, self.exposures, self.server
        given = {
            "database_url": os.environ.get(URL_ENV) or db.url,
            "experiments_dir": Path(self.experiments_dir) if self.experiments_dir else None,
            "exposure_batch_size": ex.batch_size,
            "exposure_flush_seconds": ex.flush_seconds,
            "exposure_max_buffered": ex.max_buffered,
            "server_host": server.host,
            "server_port": server.port,
            "admin_key_env": server.api_keys.admin_env,
            "decide_key_env": server.api_keys.decide_env,
            "viewer_key_env": server.api_keys.viewer_env,
            "max_body_bytes": server.max_body_bytes,
            "spool_dir": Path(server.spool_dir) if server.spool_dir else None,
            "spool_max_bytes": server.spool_max_bytes,
            "channel_costs": {k: v for k, v in self.costs.model_dump().items() if v is not None} or None,
        }
        return EngineConfig(**{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]


def parse_config(text: str, path: str = str(CONFIG_PATH)) -> EngineConfig:
    """Settings from the text of a settings file (empty: the defaults), or `ConfigError`."""
    try:
        return parse_model(text, path, SettingsFile, empty_ok=True).to_config()
    except SpecError as exc:
        raise ConfigError(exc.problems) from None


def load_config(path: Path = CONFIG_PATH) -> EngineConfig:
    """Settings from `path` if it exists (defaults otherwise); `CROSSPROMO_DATABASE_URL` wins."""
    if not (path.exists() or path.is_symlink()):
        return SettingsFile().to_config()
    try:
        text = read_yaml_text(path)
    except SpecError as exc:
        raise ConfigError(exc.problems) from None
    return parse_config(text, str(path))
