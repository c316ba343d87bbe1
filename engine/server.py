"""The decision service: FastAPI routes over one `Engine` per process (`crosspromo serve`).

Every request body is read with a size cap and parsed strictly (NaN and Infinity are not
JSON), so bad input gets a 4xx with a reason. Store outages never surface as errors: the
engine answers decisions from its snapshot (reason `STALE`) and spools events (answer 202).
"""

from __future__ import annotations

import gc
import hmac
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, NotRequired

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from engine.api import Engine, UnknownExperimentError
from engine.config import EngineConfig, load_config
from engine.db import StoreError
from engine.events import EventError
from engine.spool import Spool, SpoolFullError

log = logging.getLogger("crosspromo.server")

MAX_BATCH = 10_000


class Role(StrEnum):
    DECIDE = "decide"  # services: decisions and their outcome events
    ADMIN = "admin"  # everything, including experiments and reports


@dataclass(frozen=True)
class ApiKeys:
    """Keys by role, read from the env vars named in configs/engine.yaml; never logged."""

    admin: str | None
    decide: str | None

    @classmethod
    def from_env(cls, config: EngineConfig) -> ApiKeys:
        return cls(os.environ.get(config.admin_key_env) or None, os.environ.get(config.decide_key_env) or None)

    def role_of(self, token: str) -> Role | None:
        # Compare against every key so the time taken does not reveal which one matched.
        is_admin = self.admin is not None and hmac.compare_digest(token.encode(), self.admin.encode())
        is_decide = self.decide is not None and hmac.compare_digest(token.encode(), self.decide.encode())
        return Role.ADMIN if is_admin else Role.DECIDE if is_decide else None


class ApiError(Exception):
    def __init__(self, status: int, error: str, hint: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.hint, self.headers = status, error, hint, headers or {}


# Request bodies are TypedDicts validated by pydantic: as strict as models, without building
# one model object per unit of a 10,000-unit batch.
class DecideRequest(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    unit: Annotated[str, Field(min_length=1, max_length=256)]
    context: NotRequired[dict[str, Any]]


class BatchDecideRequest(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    units: Annotated[list[DecideRequest], Field(min_length=1, max_length=MAX_BATCH)]


class EventsRequest(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    events: Annotated[list[Any], Field(min_length=1, max_length=MAX_BATCH)]


DECIDE_BODY, BATCH_BODY, EVENTS_BODY = (TypeAdapter(t) for t in (DecideRequest, BatchDecideRequest, EventsRequest))


async def read_json(request: Request, body_type: TypeAdapter[Any], max_bytes: int) -> Any:
    """The request body validated as `body_type`: 413 above `max_bytes`, 422 with the reason otherwise."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"request body over {max_bytes} bytes", "split the batch")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, f"request body over {max_bytes} bytes", "split the batch")
    try:
        data = orjson.loads(body)  # strict: NaN, Infinity and out-of-range numbers are refused
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, f"body is not valid JSON: {exc}") from None
    try:
        return body_type.validate_python(data)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ApiError(422, reasons) from None


def json_response(data: Any, status: int = 200) -> Response:
    """JSON by orjson, without FastAPI's per-field encoder (dataclasses such as `Decision` are
    written field by field, enums as their values)."""
    return Response(orjson.dumps(data, default=str), status, media_type="application/json")


def create_app(engine: Engine, keys: ApiKeys, max_body_bytes: int = 1024 * 1024, auth: bool = True) -> FastAPI:
    """The service's routes over `engine`. With `auth=False` every request is admin (local use only)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        engine.start_background()
        # What exists now (modules, the snapshot) lives as long as the process: keep it out of
        # the cyclic collector's full passes, whose pauses would land on request latency.
        gc.freeze()
        yield
        await run_in_threadpool(engine.close)

    app = FastAPI(title="crosspromo decision service", version="1", lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        body = {"error": exc.error, **({"hint": exc.hint} if exc.hint else {})}
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    def require(role: Role) -> Callable[[Request], Awaitable[Role]]:
        async def check(request: Request) -> Role:  # async: no thread hop per request
            if not auth:
                return Role.ADMIN
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise ApiError(401, "missing API key", "send Authorization: Bearer <key>",
                               {"WWW-Authenticate": "Bearer"})
            granted = keys.role_of(token.strip())
            if granted is None:
                raise ApiError(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
            if role is Role.ADMIN and granted is not Role.ADMIN:
                raise ApiError(403, "this key may decide and record events only", "use an admin key")
            return granted

        return check

    decider, admin = Depends(require(Role.DECIDE)), Depends(require(Role.ADMIN))

    def call(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except UnknownExperimentError as exc:
            raise ApiError(404, str(exc), exc.hint) from None
        except SpoolFullError as exc:
            raise ApiError(429, str(exc), "retry later: the database is unreachable", {"Retry-After": "5"}) from None
        except StoreError as exc:
            raise ApiError(503, str(exc), exc.hint, {"Retry-After": "5"}) from None
        except (EventError, ValueError) as exc:
            raise ApiError(422, str(exc)) from None

    async def off_loop(fn: Callable[..., Any], key: str, *args: Any) -> Any:
        """Decisions run on the event loop (no I/O: snapshot and buffer), except those that may
        touch the store — a key not in the snapshot yet, a sticky bandit claiming a unit's
        first arm — which run in a thread."""
        if not engine.is_cached(key) or call(engine.experiment, key).spec.traffic.sticky:
            return await run_in_threadpool(call, fn, key, *args)
        return call(fn, key, *args)

    @app.post("/v1/experiments/{key}/decisions", dependencies=[decider])
    async def decide(key: str, request: Request) -> Response:
        body = await read_json(request, DECIDE_BODY, max_body_bytes)
        decision = await off_loop(engine.decide, key, body["unit"], body.get("context"))
        return json_response(decision)

    @app.post("/v1/experiments/{key}/decisions:batch", dependencies=[decider])
    async def decide_batch(key: str, request: Request) -> Response:
        body = await read_json(request, BATCH_BODY, max_body_bytes)
        units = [u["unit"] for u in body["units"]]
        contexts = [u.get("context") for u in body["units"]]
        decisions = await off_loop(engine.decide_many, key, units, contexts)
        return json_response({"decisions": list(decisions)})

    @app.post("/v1/events", dependencies=[decider])
    async def events(request: Request) -> JSONResponse:
        body = await read_json(request, EVENTS_BODY, max_body_bytes)
        summary = await run_in_threadpool(call, engine.ingest, body["events"])
        answer = {
            "accepted": summary.accepted, "duplicates": summary.duplicates, "spooled": summary.spooled,
            "rejected": [{"index": line - 1, "error": error} for line, error in summary.rejected],
        }
        return JSONResponse(answer, status_code=202 if summary.spooled else 200)

    @app.get("/v1/experiments", dependencies=[admin])
    async def experiments() -> list[dict[str, Any]]:
        stored = await run_in_threadpool(call, engine.experiments)
        return [{"key": s.spec.key, "name": s.spec.name, "kind": s.spec.kind.value, "status": s.spec.status.value,
                 "version": s.version, "phase": s.phase, "arms": list(s.spec.arm_keys)} for s in stored]

    @app.get("/v1/experiments/{key}/report", dependencies=[admin])
    async def report(key: str) -> dict[str, Any]:
        from engine.report import build_report

        return (await run_in_threadpool(call, build_report, engine, key)).to_dict()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        try:
            await run_in_threadpool(engine.store.ping)
        except Exception:
            return JSONResponse({"status": "store unreachable", "serving": "stale snapshot"}, status_code=503)
        return JSONResponse({"status": "ready"})

    return app


def replica_spool(config: EngineConfig) -> Spool:
    """This process's spool; the spools of dead replicas (no lock held) are adopted into it.

    Adopted records are replayed with ours, and replays are idempotent, so nothing a dead
    replica acknowledged is lost and nothing is counted twice.
    """
    path = config.spool_dir / f"{socket.gethostname()}-{os.getpid()}.jsonl"
    spool = Spool(path, config.spool_max_bytes)
    if not spool.take_ownership():
        raise RuntimeError(f"spool {path} is held by another process")
    def adopt(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        spool.append(records)
        return []  # nothing stays behind in the orphan

    for other in sorted(config.spool_dir.glob("*.jsonl")):
        orphan = Spool(other, config.spool_max_bytes)
        if other != path and orphan.take_ownership():
            try:
                orphan.drain(adopt)
            except SpoolFullError:
                log.warning("spool %s left for a later start: %s is full", other, path)
                continue
            other.unlink()
    return spool


def app_from_env() -> FastAPI:
    """The app a uvicorn worker builds (`crosspromo serve` passes its options by env vars)."""
    config = load_config()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    seed = os.environ.get("CROSSPROMO_SEED")
    engine = Engine.open(config=config, spool=replica_spool(config), seed=int(seed) if seed else None)
    auth = os.environ.get("CROSSPROMO_NO_AUTH") != "1"
    keys = ApiKeys.from_env(config)
    if auth and keys.admin is None and keys.decide is None:
        raise SystemExit(f"error: no API keys: set {config.admin_key_env} and/or {config.decide_key_env} "
                         "(or pass --no-auth for local use)")
    return create_app(engine, keys, config.max_body_bytes, auth)
