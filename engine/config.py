"""Engine settings: `configs/engine.yaml` (looked up from the working directory), then env vars."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

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
    max_body_bytes: int = 1024 * 1024
    spool_dir: Path = Path(".crosspromo-spool")
    spool_max_bytes: int = 64 * 1024 * 1024


def load_config(path: Path = CONFIG_PATH) -> EngineConfig:
    """Settings from `path` if it exists (defaults otherwise); `CROSSPROMO_DATABASE_URL` wins."""
    raw: dict[str, Any] = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of settings")
        raw = loaded
    db = raw.get("database") or {}
    exposures = raw.get("exposures") or {}
    server = raw.get("server") or {}
    keys = server.get("api_keys") or {}
    defaults = EngineConfig()
    return EngineConfig(
        database_url=os.environ.get(URL_ENV) or db.get("url") or defaults.database_url,
        experiments_dir=Path(raw.get("experiments_dir") or defaults.experiments_dir),
        exposure_batch_size=int(exposures.get("batch_size", defaults.exposure_batch_size)),
        exposure_flush_seconds=float(exposures.get("flush_seconds", defaults.exposure_flush_seconds)),
        exposure_max_buffered=int(exposures.get("max_buffered", defaults.exposure_max_buffered)),
        server_host=str(server.get("host", defaults.server_host)),
        server_port=int(server.get("port", defaults.server_port)),
        admin_key_env=str(keys.get("admin_env", defaults.admin_key_env)),
        decide_key_env=str(keys.get("decide_env", defaults.decide_key_env)),
        max_body_bytes=int(server.get("max_body_bytes", defaults.max_body_bytes)),
        spool_dir=Path(server.get("spool_dir") or defaults.spool_dir),
        spool_max_bytes=int(server.get("spool_max_bytes", defaults.spool_max_bytes)),
    )
