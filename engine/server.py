"""The decision service: FastAPI routes over one `Engine` per process (`crosspromo serve`).
Why this module is one piece (about 400 lines): the routes, their request bodies and the one
error boundary they share are read together; each route is a few lines over one engine call.

Every request body is read with a size cap and parsed strictly (NaN and Infinity are not
JSON), so bad input gets a 4xx with a reason. Store outages never surface as errors: the
engine answers decisions from its snapshot (reason `STALE`) and spools events (answer 202).

One error boundary maps what the engine raises: user errors to 4xx with the reason, an
unavailable store to 503 with `Retry-After`, and anything unexpected to 503 with an id that
matches the log line holding its traceback. No answer is a 500. Everything that may touch the
store (a decision too: it may flush a full buffer) runs in a worker thread, never on the event
loop, so a slow or locked store cannot freeze `/healthz` or other requests.
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
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, WithJsonSchema
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from typing_extensions import TypedDict

from engine.api import Engine, UnknownExperimentError
from engine.config import EngineConfig, load_config
from engine.dashboard import mount_dashboard
from engine.db import StoreError, is_unavailable
from engine.events import Event
from engine.graph import Edge
from engine.incident import record_incident
from engine.spool import Spool, SpoolFullError

log = logging.getLogger("crosspromo.server")

MAX_BATCH = 10_000
RETRY_AFTER = {"Retry-After": "5"}  # seconds; the background upkeep retries the store every 0.2 s


class Role(StrEnum):
    DECIDE = "decide"  # services: decisions and their outcome events
    ADMIN = "admin"  # everything, including experiments and reports
    VIEWER = "viewer"  # the dashboard only: reads results, never decides or records


@dataclass(frozen=True)
class ApiKeys:
    """Keys by role, read from the env vars named in configs/engine.yaml; never logged."""

    admin: str | None
    decide: str | None
    viewer: str | None = None

    @classmethod
    def from_env(cls, config: EngineConfig) -> ApiKeys:
        return cls(*(os.environ.get(n) or None for n in (config.admin_key_env, config.decide_key_env,
                                                         config.viewer_key_env)))

    def role_of(self, token: str) -> Role | None:
        # Compare against every key so the time taken does not reveal which one matched.
        hits = [(role, key is not None and hmac.compare_digest(token.encode(), key.encode()))
                for role, key in ((Role.ADMIN, self.admin), (Role.DECIDE, self.decide), (Role.VIEWER, self.viewer))]
        return next((role for role, hit in hits if hit), None)


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

    # Each event is checked by the engine on its own, so one bad event is `rejected[i]` and the
    # others are kept; the spec still shows clients (and fuzzers) what an event looks like.
    events: Annotated[list[Annotated[Any, WithJsonSchema(Event.model_json_schema())]],
                      Field(min_length=1, max_length=MAX_BATCH)]


class EdgesRequest(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    # Checked one by one as events are: a bad edge is `rejected[i]`, the others are stored.
    edges: Annotated[list[Annotated[Any, WithJsonSchema(Edge.model_json_schema())]],
                     Field(min_length=1, max_length=MAX_BATCH)]


BODIES = (DecideRequest, BatchDecideRequest, EventsRequest, EdgesRequest)
DECIDE_BODY, BATCH_BODY, EVENTS_BODY, EDGES_BODY = (TypeAdapter(t) for t in BODIES)
_BODY_REFS, _BODY_SCHEMAS = TypeAdapter.json_schemas(
    [(t.__name__, "validation", TypeAdapter(t)) for t in BODIES],
    ref_template="#/components/schemas/{model}",
)


def body_spec(body_type: type) -> dict[str, Any]:
    """The OpenAPI `requestBody` of a route that parses `body_type` by hand (see `read_json`)."""
    schema = _BODY_REFS[(body_type.__name__, "validation")]
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def read_json(request: Request, body_type: TypeAdapter[Any], max_bytes: int) -> Any:
    """The request body validated as `body_type`: 413 above `max_bytes`, 415 for a body that is
    not plain JSON, 400 for a length that is not the declared one, 422 with the reason otherwise."""
    check_media(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"request body over {max_bytes} bytes", "split the batch")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, f"request body over {max_bytes} bytes", "split the batch")
    if declared is not None and (not declared.isdigit() or int(declared) != len(body)):
        raise ApiError(400, f"Content-Length is {declared!r} but the body has {len(body)} bytes")
    try:
        data = orjson.loads(body)  # strict: NaN, Infinity and out-of-range numbers are refused
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, f"body is not valid JSON: {exc}") from None
    try:
        return body_type.validate_python(data)
    except ValidationError as exc:
        raise ApiError(422, validation_reasons(exc)) from None


def check_media(request: Request) -> None:
    """Refuse bodies the service would misread: encoded (it does not decompress) or not JSON.
    A missing Content-Type is taken as JSON, as curl and most clients send it."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ApiError(415, f"Content-Encoding {encoding!r} is not supported", "send the body uncompressed")
    media = request.headers.get("content-type", "application/json").partition(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ApiError(415, f"Content-Type {media!r} is not JSON", "send Content-Type: application/json")


def json_response(data: Any, status: int = 200) -> Response:
    """JSON by orjson, without FastAPI's per-field encoder (dataclasses such as `Decision` are
    written field by field, enums as their values)."""
    return Response(orjson.dumps(data, default=str), status, media_type="application/json")


def error_response(status: int, error: str, hint: str = "", headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, **({"hint": hint} if hint else {})}, status_code=status, headers=headers)


def validation_reasons(exc: ValidationError) -> str:
    """One line: each error's place (`units.3.unit`, `body`) and what is wrong there."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                     for e in exc.errors(include_url=False))


def internal_error(exc: BaseException, where: str) -> JSONResponse:
    """The answer to an exception nothing expected: 503 with an id; the log line with the same id
    holds the traceback (the store's engine hides SQL parameters, so no row data is logged)."""
    return JSONResponse({"error": "internal error", "id": record_incident(log, exc, where)}, status_code=503)


class ErrorBoundary:
    """The last stop for an exception that no handler took: logged with an id, answered by
    `internal_error` (Starlette's own last stop would answer 500 with no id)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:  # too late for an answer: the server closes the connection
                raise
            await internal_error(exc, f"{scope['method']} {scope['path']}")(scope, receive, send)


def add_error_handlers(app: FastAPI) -> None:
    """The one place that turns what routes and the engine raise into answers."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.error, exc.hint, exc.headers)

    @app.exception_handler(UnknownExperimentError)
    async def _unknown(request: Request, exc: UnknownExperimentError) -> JSONResponse:
        # Listing experiments is admin-only, so only an admin's 404 lists the known keys.
        admin = getattr(request.state, "role", None) is Role.ADMIN
        return error_response(404, str(exc), exc.hint if admin else "check the experiment key")

    @app.exception_handler(SpoolFullError)
    async def _spool_full(_: Request, exc: SpoolFullError) -> JSONResponse:
        return error_response(429, str(exc), "retry later: the database is unreachable", RETRY_AFTER)

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> JSONResponse:
        return error_response(503, str(exc), exc.hint, RETRY_AFTER)

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        if is_unavailable(exc):  # the driver's message may name hosts and statements: not for clients
            log.warning("store unavailable during %s %s: %s", request.method, request.url.path, type(exc).__name__)
            return error_response(503, "the store is unavailable", "retry later", RETRY_AFTER)
        return internal_error(exc, f"{request.method} {request.url.path}")

    @app.exception_handler(StarletteHTTPException)  # routing's own 404 and 405, in the same shape
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(ValueError)  # EventError, and the engine's refusals of a unit or context
    async def _invalid(_: Request, exc: ValueError) -> JSONResponse:
        return error_response(422, validation_reasons(exc) if isinstance(exc, ValidationError) else str(exc))


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
    app.state.engine = engine
    app.add_middleware(ErrorBoundary)
    add_error_handlers(app)
    declare_request_bodies(app)

    def require(role: Role) -> Callable[[Request], Awaitable[Role]]:
        async def check(request: Request) -> Role:  # async: no thread hop per request
            if not auth:
                request.state.role = Role.ADMIN
                return Role.ADMIN
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise ApiError(401, "missing API key", "send Authorization: Bearer <key>",
                               {"WWW-Authenticate": "Bearer"})
            granted = keys.role_of(token.strip())
            if granted is None:
                raise ApiError(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
            if granted is Role.VIEWER:
                raise ApiError(403, "a viewer key may read the dashboard only", "use a decide or admin key")
            if role is Role.ADMIN and granted is not Role.ADMIN:
                raise ApiError(403, "this key may decide and record events only", "use an admin key")
            request.state.role = granted
            return granted

        return check

    decider, admin = Depends(require(Role.DECIDE)), Depends(require(Role.ADMIN))

    async def decided(fn: Callable[..., Any], key: str, *args: Any) -> Any:
        """Decide on the event loop when that touches no store (a known experiment, weights at
        hand, nothing to claim), else in a thread. A flush the decisions make due (a full
        buffer: backpressure) is awaited in a thread: the loop never waits for the database."""
        if not engine.decides_in_memory(key):
            return await run_in_threadpool(fn, key, *args)
        with engine.flush_deferred():
            result = fn(key, *args)
        if engine.flush_due:
            await run_in_threadpool(engine.flush)
        return result

    @app.post("/v1/experiments/{key}/decisions", dependencies=[decider], openapi_extra=body_spec(DecideRequest))
    async def decide(key: str, request: Request) -> Response:
        body = await read_json(request, DECIDE_BODY, max_body_bytes)
        return json_response(await decided(engine.decide, key, body["unit"], body.get("context")))

    @app.post("/v1/experiments/{key}/decisions:batch", dependencies=[decider],
              openapi_extra=body_spec(BatchDecideRequest))
    async def decide_batch(key: str, request: Request) -> Response:
        body = await read_json(request, BATCH_BODY, max_body_bytes)
        units = [u["unit"] for u in body["units"]]
        contexts = [u.get("context") for u in body["units"]]
        decisions = await decided(engine.decide_many, key, units, contexts)
        return json_response({"decisions": list(decisions)})

    @app.post("/v1/events", dependencies=[decider], openapi_extra=body_spec(EventsRequest))
    async def events(request: Request) -> JSONResponse:
        body = await read_json(request, EVENTS_BODY, max_body_bytes)
        summary = await run_in_threadpool(engine.ingest, body["events"])
        answer = {
            "accepted": summary.accepted, "duplicates": summary.duplicates, "spooled": summary.spooled,
            "rejected": [{"index": line - 1, "error": error} for line, error in summary.rejected],
        }
        return JSONResponse(answer, status_code=202 if summary.spooled else 200)

    @app.post("/v1/graph/edges", dependencies=[admin], openapi_extra=body_spec(EdgesRequest))
    async def graph_edges(request: Request) -> JSONResponse:
        body = await read_json(request, EDGES_BODY, max_body_bytes)
        summary = await run_in_threadpool(engine.ingest_graph, body["edges"])
        return JSONResponse({
            "accepted": summary.accepted, "updated": summary.updated, "duplicates": summary.duplicates,
            "rejected": [{"index": line - 1, "error": error} for line, error in summary.rejected],
        })

    @app.get("/v1/experiments", dependencies=[admin])
    async def experiments() -> list[dict[str, Any]]:
        stored = await run_in_threadpool(engine.experiments)
        return [{"key": s.spec.key, "name": s.spec.name, "kind": s.spec.kind.value, "status": s.spec.status.value,
                 "version": s.version, "phase": s.phase, "arms": list(s.spec.arm_keys)} for s in stored]

    @app.get("/v1/experiments/{key}/report", dependencies=[admin])
    async def report(key: str, by: str | None = None) -> dict[str, Any]:
        """`by`: an exploratory breakdown by `channel` or a context attribute (422 if no unit has it)."""
        from engine.breakdown import UnknownAttributeError
        from engine.report import build_report

        try:
            return (await run_in_threadpool(build_report, engine, key, 0, by)).to_dict()
        except UnknownAttributeError as exc:
            raise ApiError(422, f"by {exc}", exc.hint) from None

    mount_dashboard(app, engine, keys, auth)  # the results pages under /ui/

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready when writes would land: the store answers and (SQLite) its file is the one opened."""
        try:
            await run_in_threadpool(engine.store.ping)
        except StoreError as exc:
            return JSONResponse({"status": "not ready", "reason": str(exc), "serving": "stale snapshot"},
                                status_code=503, headers=RETRY_AFTER)
        except Exception as exc:  # any failure of the probe means not ready; its kind is enough
            return JSONResponse({"status": "store unreachable", "reason": type(exc).__name__,
                                 "serving": "stale snapshot"}, status_code=503, headers=RETRY_AFTER)
        return JSONResponse({"status": "ready"})

    return app


def declare_request_bodies(app: FastAPI) -> None:
    """Put the request bodies' schemas in the OpenAPI components that `body_spec` refers to."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            build().setdefault("components", {}).setdefault("schemas", {}).update(_BODY_SCHEMAS["$defs"])
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


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
    if auth and keys.admin is None and keys.decide is None and keys.viewer is None:
        raise SystemExit(f"error: no API keys: set {config.admin_key_env}, {config.decide_key_env} and/or "
                         f"{config.viewer_key_env} (or pass --no-auth for local use)")
    return create_app(engine, keys, config.max_body_bytes, auth)
