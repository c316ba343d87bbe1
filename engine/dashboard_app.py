"""The dashboard served alone (`crosspromo dashboard`): the results pages and nothing else."""

from __future__ import annotations

from fastapi import FastAPI

from engine.api import Engine
from engine.dashboard import mount_dashboard
from engine.server import ApiKeys, ErrorBoundary, add_error_handlers


def create_dashboard_app(engine: Engine, keys: ApiKeys, auth: bool) -> FastAPI:
    """The dashboard's routes only: no decision or event routes at all, and no OpenAPI pages."""
    app = FastAPI(title="crosspromo dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(ErrorBoundary)
    add_error_handlers(app)
    mount_dashboard(app, engine, keys, auth)
    return app
