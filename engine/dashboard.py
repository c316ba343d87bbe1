"""The results dashboard: server-rendered pages under /ui/ (Jinja2), read-only.

Mounted by `crosspromo serve` (viewer or admin keys sign in through a form) and served alone
by `crosspromo dashboard` (loopback: open; elsewhere only with a viewer key). Every route
reads: the report (O(arms)), the weights history (O(refreshes)), the stored versions and a
bounded timeline (`engine.timeline.recent_timeline`); nothing here writes to the store.

Charts are Plotly figures built server-side (`engine.dashboard_view`) and embedded as JSON in
<script type="application/json"> blocks; one script file draws them and refreshes the page's
fragments from `*.json` routes, so the CSP can forbid inline scripts. Plotly's JavaScript is
served from the installed `plotly` package (no CDN, nothing copied into the repository).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy import select

from engine.api import Engine, UnknownExperimentError
from engine.dashboard_auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    SecurityHeaders,
    Session,
    Signer,
    set_cookie,
    tokens_match,
)
from engine.dashboard_view import (
    PALETTE,
    exposure_progress,
    forest_plot,
    guardrail_state,
    posterior_chart,
    sparkline,
    timeline_charts,
    timeline_span,
    version_history,
    weights_chart,
)
from engine.db import read
from engine.report import build_report
from engine.report_format import blocks, render_markdown
from engine.tables import VERSIONS
from engine.timeline import newest, recent_timeline, weights_over_time

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")  # autoescape is on for .html


def script_json(value: Any) -> Markup:
    """JSON for a <script type="application/json"> block: orjson (fast on chart-sized data), with
    the characters that could end the block or start markup escaped, as Jinja's `tojson` does."""
    text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("'", "\\u0027")):
        text = text.replace(char, escaped)
    return Markup(text)


TEMPLATES.env.filters["script_json"] = script_json
STATIC = HERE / "static"
REFRESH_ENV = "CROSSPROMO_DASHBOARD_REFRESH_SECONDS"  # how often open pages update (default 30)
TIMELINE_LIMIT = 800  # newest exposures behind the cumulative charts
SPARK_LIMIT = 400
WEIGHTS_POINTS = 60  # refreshes in the weights chart, spread over the whole phase
SORTS = ("key", "status", "kind", "owner", "verdict", "exposures", "last")
STATUSES = ("draft", "running", "paused", "stopped", "concluded")
VERDICT_WORDS = {
    "winner": "Winner found", "keep_running": "Keep running", "no_difference": "No difference",
    "srm_invalid": "Invalid: sample ratio mismatch", "insufficient_data": "Not enough data yet",
}


class SignInRequired(Exception):
    pass


@lru_cache(maxsize=1)
def plotly_js() -> Path:
    """plotly.min.js as installed with the `plotly` package."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():  # pragma: no cover - a broken plotly install
        raise RuntimeError(f"plotly.min.js not found at {path}")
    return path


class Dashboard:
    """The dashboard's routes over `engine`. With `auth=False` every visitor is a viewer."""

    def __init__(self, engine: Engine, keys: Any, auth: bool) -> None:
        self.engine, self.keys, self.auth = engine, keys, auth
        self.signer = Signer()
        self._versions: dict[str, tuple[int, list[Any]]] = {}

    # -- who is asking ---------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        if not self.auth:
            return Session("viewer", "", 0.0)
        session = self.signer.session(request)
        return session if session is not None and session.role in ("viewer", "admin") else None

    def require(self, request: Request) -> Session:
        session = self.session(request)
        if session is None:
            raise SignInRequired()
        return session

    # -- reading ---------------------------------------------------------------------

    def timeline(self, report: dict[str, Any], limit: int, points: int) -> Any:
        stored = self.engine.experiment(report["experiment"])
        aggregates = self.engine.store.arm_aggregates(stored.spec.key, stored.phase, stored.spec.arm_keys)
        totals = {a.arm: (a.exposures, a.conversions, a.total) for a in aggregates}
        return recent_timeline(self.engine.store.sa, stored.spec.key, stored.phase, totals, limit, points)

    def overview_rows(self, status: str = "", owner: str = "") -> list[dict[str, Any]]:
        """One row per experiment of this status and owner (any, when empty): filtered on the
        declaration before any report is built."""
        rows = []
        for stored in self.engine.experiments():
            if (status and stored.spec.status.value != status) or (owner and stored.spec.owner != owner):
                continue
            report = build_report(self.engine, stored.spec.key).to_dict()
            exposed, planned = exposure_progress(report)
            rows.append({
                "report": report, "owner": stored.spec.owner or "", "exposed": exposed, "planned": planned,
                "guardrail": guardrail_state(report), "verdict_words": VERDICT_WORDS.get(report["verdict"]["status"]),
                "spark": sparkline(report, timeline := self.timeline(report, SPARK_LIMIT, 20)),
                "last": newest(timeline),
            })
        return rows

    def experiment_view(self, key: str) -> dict[str, Any]:
        report = build_report(self.engine, key).to_dict()
        stored = self.engine.experiment(key)
        history = weights_over_time(self.engine.store.sa, stored.spec.key, stored.phase, WEIGHTS_POINTS)
        timeline = self.timeline(report, TIMELINE_LIMIT, 50)
        over_time = timeline_charts(report, timeline)
        charts = {
            "forest": forest_plot(report),
            "rate": over_time[0] if over_time else None,
            "lift": over_time[1] if over_time else None,
            "weights": weights_chart(history, list(stored.spec.arm_keys)) if report["kind"] == "bandit" else None,
            "posterior": posterior_chart(report),
        }
        return {
            "report": report, "spec": stored.spec, "charts": {k: v for k, v in charts.items() if v is not None},
            "history": history[::-1][:10], "refreshes": len(history), "blocks": blocks(report),
            "guardrail": guardrail_state(report), "progress": exposure_progress(report),
            "verdict_words": VERDICT_WORDS.get(report["verdict"]["status"]),
            "colours": {arm: i % len(PALETTE) for i, arm in enumerate(stored.spec.arm_keys)},
            "window": timeline_span(timeline),
            "last": newest(timeline),
        }

    def versions(self, key: str) -> list[Any]:
        """The stored versions with their diffs: read once per current version (applied
        versions never change, so a new one is the only news)."""
        current = self.engine.experiment(key).version
        cached = self._versions.get(key)
        if cached is None or cached[0] != current:
            v = VERSIONS.c
            with read(self.engine.store.sa) as conn:
                rows = conn.execute(select(v.version, v.applied_at, v.spec_json).where(v.key == key)).all()
            cached = current, version_history([(version, at, json.loads(spec)) for version, at, spec in rows])
            self._versions[key] = cached
        return cached[1]


def _sorted(rows: list[dict[str, Any]], sort: str, desc: bool) -> list[dict[str, Any]]:
    epoch = datetime.min.replace(tzinfo=UTC)
    by = {
        "key": lambda r: r["report"]["experiment"], "status": lambda r: r["report"]["status"],
        "kind": lambda r: r["report"]["kind"], "owner": lambda r: r["owner"],
        "verdict": lambda r: r["report"]["verdict"]["status"], "exposures": lambda r: r["exposed"],
        "last": lambda r: r["last"] or epoch,
    }[sort]
    return sorted(rows, key=by, reverse=desc)


def _page(request: Request, name: str, context: dict[str, Any], session: Session | None, status: int = 200
          ) -> HTMLResponse:
    refresh = os.environ.get(REFRESH_ENV, "")
    return TEMPLATES.TemplateResponse(request, name, {"session": session, "refresh": int(refresh) if refresh.isdigit()
                                                      else 30, **context},
                                      status_code=status)


def build_router(dash: Dashboard) -> APIRouter:  # noqa: C901 - one nested function per route
    router = APIRouter(prefix="/ui", include_in_schema=False)

    @router.get("/static/plotly.min.js")
    async def plotly() -> FileResponse:
        return FileResponse(plotly_js(), media_type="text/javascript",
                            headers={"cache-control": "public, max-age=31536000, immutable"})

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        files = {p.name: p for p in STATIC.iterdir()}
        if name not in files:
            return PlainTextResponse("not found", 404)
        media = "text/css" if name.endswith(".css") else "text/javascript"
        return FileResponse(files[name], media_type=media, headers={"cache-control": "public, max-age=3600"})

    @router.get("/")
    async def overview(request: Request, status: str = "", owner: str = "", sort: str = "key",
                       order: str = "asc") -> HTMLResponse:
        session = dash.require(request)
        status, sort = status if status in STATUSES else "", sort if sort in SORTS else "key"
        rows = _sorted(await run_in_threadpool(dash.overview_rows, status, owner), sort, order == "desc")
        every = await run_in_threadpool(dash.engine.experiments)
        owners = sorted({s.spec.owner for s in every if s.spec.owner})
        return _page(request, "overview.html", {
            "rows": rows, "total": len(every), "owners": owners, "statuses": STATUSES,
            "filters": {"status": status, "owner": owner, "sort": sort, "order": order}}, session)

    @router.get("/overview.json")
    async def overview_json(request: Request, status: str = "", owner: str = "", sort: str = "key",
                            order: str = "asc") -> JSONResponse:
        dash.require(request)
        rows = await run_in_threadpool(dash.overview_rows, status if status in STATUSES else "", owner)
        shown = _sorted(rows, sort if sort in SORTS else "key", order == "desc")
        html = TEMPLATES.get_template("_overview_rows.html").render(rows=shown)
        return JSONResponse({"fragments": {"overview-rows": html}, "charts": {}})

    @router.get("/experiments/{key}")
    async def experiment(request: Request, key: str) -> HTMLResponse:
        session = dash.require(request)
        try:
            view = await run_in_threadpool(dash.experiment_view, key)
            versions = await run_in_threadpool(dash.versions, key)
        except UnknownExperimentError:
            return _page(request, "error.html", {"title": "Unknown experiment",
                                                 "message": f"No experiment named {key!r}."}, session, 404)
        return _page(request, "experiment.html", {**view, "versions": versions}, session)

    @router.get("/experiments/{key}/data.json")
    async def experiment_json(request: Request, key: str) -> JSONResponse:
        dash.require(request)
        try:
            view = await run_in_threadpool(dash.experiment_view, key)
        except UnknownExperimentError:
            return JSONResponse({"error": f"no experiment {key!r}"}, 404)
        fragments = {name: TEMPLATES.get_template(f"_{name}.html").render(**view)
                     for name in ("summary", "tables", "history")}
        return Response(orjson.dumps({"fragments": fragments, "charts": view["charts"]},
                                     option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    @router.get("/experiments/{key}/report.json")
    async def report_json(request: Request, key: str) -> Response:
        dash.require(request)
        try:
            report = await run_in_threadpool(build_report, dash.engine, key)
        except UnknownExperimentError:
            return JSONResponse({"error": f"no experiment {key!r}"}, 404)
        return Response(report.to_json(), media_type="application/json")

    @router.get("/experiments/{key}/report.md")
    async def report_markdown(request: Request, key: str) -> Response:
        dash.require(request)
        try:
            report = await run_in_threadpool(build_report, dash.engine, key)
        except UnknownExperimentError:
            return PlainTextResponse(f"no experiment {key!r}", 404)
        return PlainTextResponse(render_markdown([report]), media_type="text/markdown; charset=utf-8")

    @router.get("/signin")
    async def signin_form(request: Request, error: str = "") -> HTMLResponse:
        if not dash.auth:
            return RedirectResponse("/ui/", 303)  # type: ignore[return-value]
        token = dash.signer.sign({"csrf": request.cookies.get(CSRF_COOKIE) or _token()})
        response = _page(request, "signin.html", {"csrf": token, "error": error}, None, 401 if error else 200)
        set_cookie(response, request, CSRF_COOKIE, token, 3600)
        return response

    @router.post("/signin")
    async def signin(request: Request) -> Response:
        if not dash.auth:
            return RedirectResponse("/ui/", 303)
        form = await read_form(request)
        key, csrf = form.get("key", ""), form.get("csrf", "")
        if not tokens_match(csrf, request.cookies.get(CSRF_COOKIE)) or dash.signer.unsign(csrf) is None:
            return _page(request, "error.html", {"title": "Form expired",
                                                 "message": "The sign-in form expired: load it again."}, None, 403)
        role = dash.keys.role_of(key.strip()) if key.strip() else None
        if role is None or role.value not in ("viewer", "admin"):
            return RedirectResponse("/ui/signin?error=1", 303)
        response = RedirectResponse("/ui/", 303)
        set_cookie(response, request, SESSION_COOKIE, dash.signer.new_session(role.value), SESSION_SECONDS)
        response.delete_cookie(CSRF_COOKIE, path="/ui")
        return response

    @router.post("/signout")
    async def signout(request: Request) -> Response:
        session = dash.session(request)
        csrf = (await read_form(request)).get("csrf", "")
        if session is None or not tokens_match(csrf, session.csrf):
            return _page(request, "error.html", {"title": "Form expired",
                                                 "message": "Sign-out needs the page's token: reload it."}, None, 403)
        response = RedirectResponse("/ui/signin", 303)
        response.delete_cookie(SESSION_COOKIE, path="/ui", httponly=True, samesite="strict")
        return response

    return router


async def read_form(request: Request, max_bytes: int = 4096) -> dict[str, str]:
    """An urlencoded form's fields (first value of each); a body too large or not a form is empty,
    which the callers refuse like a missing token."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    body = await request.body()
    if media != "application/x-www-form-urlencoded" or len(body) > max_bytes:
        return {}
    try:
        fields = parse_qs(body.decode(), max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in fields.items()}


def _token() -> str:
    import secrets

    return secrets.token_urlsafe(24)


def mount_dashboard(app: FastAPI, engine: Engine, keys: Any, auth: bool) -> None:
    """Serve the dashboard under /ui/ on `app`, with `/` redirecting there."""
    dash = Dashboard(engine, keys, auth)
    app.include_router(build_router(dash))
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _: SignInRequired) -> Response:
        if request.url.path.endswith((".json", ".md")):
            return JSONResponse({"error": "sign in first", "hint": "POST /ui/signin with a viewer or admin key"}, 401)
        return RedirectResponse("/ui/signin", 303)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/", 307)
