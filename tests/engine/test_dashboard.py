"""The dashboard over HTTP (TestClient): sign-in, roles, CSRF, cookies, escaping, headers,
redirects, read-only routes, and the `dashboard` command's refusal of an open host."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from engine.api import Engine
from engine.cli import app as cli
from engine.dashboard_app import create_dashboard_app
from engine.dashboard_auth import CSRF_COOKIE, SESSION_COOKIE
from engine.db import read
from engine.server import ApiKeys, create_app
from engine.tables import DECISIONS, EVENTS, EXPERIMENTS, VERSIONS, WEIGHTS_HISTORY
from tests.samples import AB_YAML, BANDIT_YAML, write_yaml

KEYS = ApiKeys(admin="admin-secret", decide="decide-secret", viewer="viewer-secret")
HOSTILE = "<script>alert(1)</script>"
# A hypothesis, a name, a campaign and a payload carrying markup; arm keys are slugs by the schema.
HOSTILE_YAML = BANDIT_YAML.replace("name: Channel bandit", f"name: 'Bandit {HOSTILE}'").replace(
    "kind: bandit", f"hypothesis: '<img src=x onerror=alert(2)> {HOSTILE}'\nkind: bandit").replace(
    "- {key: by-email, campaign: c,", f"- {{key: by-email, campaign: '{HOSTILE}', payload: {{html: '{HOSTILE}'}},")


def _engine(tmp_path: Path, url: str) -> Engine:
    engine = Engine.open(url, seed=0)
    engine.apply([write_yaml(tmp_path, "ab.yaml", AB_YAML), write_yaml(tmp_path, "b.yaml", HOSTILE_YAML)])
    for i in range(60):
        d = engine.decide("landing", f"u{i}")
        if i % 4 == 0:
            engine.record({"event_id": f"e{i}", "experiment": "landing", "decision_id": d.decision_id})
        b = engine.decide("channels", f"u{i}", {"opted_in": ["email", "push", "sms"]})
        if i % 3 == 0:
            engine.record({"event_id": f"b{i}", "experiment": "channels", "decision_id": b.decision_id})
    engine.flush()
    engine.store.record_weights("channels", 1, {"by-email": 0.2, "by-push": 0.5, "by-sms": 0.3},
                                f"refresh {HOSTILE}")
    return engine


@pytest.fixture
def service(tmp_path: Path, sqlite_url: str) -> Iterator[TestClient]:
    engine = _engine(tmp_path, sqlite_url)
    with TestClient(create_app(engine, KEYS), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def local(tmp_path: Path, sqlite_url: str) -> Iterator[TestClient]:
    engine = _engine(tmp_path, sqlite_url)
    with TestClient(create_dashboard_app(engine, KEYS, auth=False), raise_server_exceptions=False) as c:
        yield c
    engine.close()


def sign_in(client: TestClient, key: str) -> None:
    form = client.get("/ui/signin")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    r = client.post("/ui/signin", data={"key": key, "csrf": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/", r.text


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]


def test_root_redirects_and_pages_need_a_session(service: TestClient) -> None:
    assert service.get("/", follow_redirects=False).headers["location"] == "/ui/"
    r = service.get("/ui/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/signin"
    assert service.get("/ui/experiments/landing/report.json").status_code == 401
    assert service.get("/ui/experiments/landing/data.json").status_code == 401


@pytest.mark.parametrize("key", ["viewer-secret", "admin-secret"])
def test_viewer_and_admin_sign_in_and_out(service: TestClient, key: str) -> None:
    sign_in(service, key)
    page = service.get("/ui/")
    assert page.status_code == 200 and "landing" in page.text and "channels" in page.text
    assert f"Signed in as {key.split('-')[0]}" in page.text
    r = service.post("/ui/signout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and SESSION_COOKIE in r.headers["set-cookie"]
    assert service.get("/ui/", follow_redirects=False).status_code == 303


def test_decide_key_and_wrong_keys_cannot_sign_in(service: TestClient) -> None:
    for key in ("decide-secret", "nope", ""):
        form = service.get("/ui/signin")
        r = service.post("/ui/signin", data={"key": key, "csrf": csrf_of(form.text)}, follow_redirects=False)
        assert r.headers["location"] == "/ui/signin?error=1"
        assert SESSION_COOKIE not in r.headers.get("set-cookie", "")


def test_sign_in_refuses_a_missing_or_foreign_csrf_token(service: TestClient) -> None:
    service.get("/ui/signin")
    r = service.post("/ui/signin", data={"key": "viewer-secret"}, follow_redirects=False)
    assert r.status_code == 403
    r = service.post("/ui/signin", data={"key": "viewer-secret", "csrf": "forged.0"}, follow_redirects=False)
    assert r.status_code == 403
    # A token signed by this server but not the one in this browser's cookie (another visitor's).
    other = TestClient(service.app)
    token = csrf_of(other.get("/ui/signin").text)
    r = service.post("/ui/signin", data={"key": "viewer-secret", "csrf": token}, follow_redirects=False)
    assert r.status_code == 403 and SESSION_COOKIE not in r.headers.get("set-cookie", "")


def test_sign_out_needs_the_session_csrf_token(service: TestClient) -> None:
    sign_in(service, "viewer-secret")
    assert service.post("/ui/signout", data={"csrf": "wrong"}).status_code == 403
    assert service.get("/ui/", follow_redirects=False).status_code == 200  # still signed in


def test_cookie_flags(service: TestClient) -> None:
    form = service.get("/ui/signin")
    csrf_cookie = form.headers["set-cookie"]
    assert CSRF_COOKIE in csrf_cookie and "HttpOnly" in csrf_cookie and "SameSite=strict" in csrf_cookie
    r = service.post("/ui/signin", data={"key": "viewer-secret", "csrf": csrf_of(form.text)}, follow_redirects=False)
    session = next(c for c in r.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))
    assert "HttpOnly" in session and "SameSite=strict" in session and "Path=/ui" in session
    assert "Secure" not in session  # plain http in tests; https gets Secure
    assert "viewer-secret" not in session


def test_secure_cookie_over_https(tmp_path: Path, sqlite_url: str) -> None:
    engine = _engine(tmp_path, sqlite_url)
    with TestClient(create_app(engine, KEYS), base_url="https://testserver") as c:
        form = c.get("/ui/signin")
        assert "Secure" in form.headers["set-cookie"]


def test_forged_session_cookie_is_refused(service: TestClient) -> None:
    service.cookies.set(SESSION_COOKIE, "eyJyb2xlIjoiYWRtaW4ifQ==.deadbeef", path="/ui")
    assert service.get("/ui/", follow_redirects=False).status_code == 303


def test_viewer_key_cannot_decide_record_or_read_admin_routes(service: TestClient) -> None:
    viewer = {"Authorization": "Bearer viewer-secret"}
    r = service.post("/v1/experiments/landing/decisions", json={"unit": "u1"}, headers=viewer)
    assert r.status_code == 403 and "viewer" in r.json()["error"]
    r = service.post("/v1/events", json={"events": [{"event_id": "x", "experiment": "landing", "unit": "u1"}]},
                     headers=viewer)
    assert r.status_code == 403
    assert service.get("/v1/experiments", headers=viewer).status_code == 403


def test_security_headers(local: TestClient) -> None:
    for path in ("/ui/", "/ui/experiments/channels", "/ui/experiments/nope", "/ui/static/dashboard.js"):
        h = local.get(path).headers
        csp = h["content-security-policy"]
        script_src = re.search(r"script-src ([^;]+)", csp).group(1)  # type: ignore[union-attr]
        assert script_src.strip() == "'self'" and "frame-ancestors 'none'" in csp
        assert h["x-content-type-options"] == "nosniff" and h["referrer-policy"]


def test_pages_have_no_inline_scripts(local: TestClient) -> None:
    for path in ("/ui/", "/ui/experiments/channels", "/ui/experiments/landing"):
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", local.get(path).text, re.S)
        for attrs, body in scripts:
            assert 'src="/ui/static/' in attrs or 'type="application/json"' in attrs, attrs
            assert "src=" in attrs or body.strip().startswith("{")


def test_user_strings_are_escaped(local: TestClient) -> None:
    for path in ("/ui/", "/ui/experiments/channels", "/ui/experiments/channels/data.json", "/ui/overview.json"):
        text = local.get(path).text
        assert "<script>alert" not in text and "<img src=x" not in text, path
    page = local.get("/ui/experiments/channels").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text
    weights = local.get("/ui/experiments/channels/data.json").json()["charts"]["weights"]["data"][0]
    assert weights["text"][-1] == "refresh &lt;script&gt;alert(1)&lt;/script&gt;"  # Plotly decodes entities only
    unknown = local.get("/ui/experiments/%3Cscript%3Ealert(3)%3C%2Fscript%3E")
    assert unknown.status_code == 404 and "<script>alert(3)" not in unknown.text


def test_experiment_page_shows_every_part(local: TestClient) -> None:
    page = local.get("/ui/experiments/channels").text
    for part in ('id="chart-forest"', 'id="chart-rate"', 'id="chart-lift"', 'id="chart-weights"',
                 'id="chart-posterior"', "Sample ratio check", "Declaration and versions", "crosspromo evaluate",
                 "report.json", "report.md", "Weight refreshes"):
        assert part in page, part
    ab = local.get("/ui/experiments/landing").text
    assert 'id="chart-weights"' not in ab and 'id="chart-posterior"' not in ab  # bandits only


def test_refresh_json_and_report_links(local: TestClient) -> None:
    data = local.get("/ui/experiments/channels/data.json").json()
    assert set(data["fragments"]) == {"summary", "tables", "history"}
    assert {"forest", "rate", "weights", "posterior"} <= set(data["charts"])
    weights = data["charts"]["weights"]["data"]
    assert [t["y"][-1] for t in weights] == [0.2, 0.5, 0.3]  # the newest refresh, the one recorded last
    report = local.get("/ui/experiments/landing/report.json").json()
    assert report["experiment"] == "landing" and sum(a["exposures"] for a in report["arms"]) == 60
    md = local.get("/ui/experiments/landing/report.md")
    assert md.headers["content-type"].startswith("text/markdown") and "Verdict" in md.text
    assert local.get("/ui/experiments/nope/report.json").status_code == 404


def test_overview_filters_and_sorts(local: TestClient) -> None:
    page = local.get("/ui/?sort=key&order=desc").text
    assert page.index(">landing<") < page.index(">channels<")
    page = local.get("/ui/?status=paused").text
    assert "0 of 2 experiments" in page and "No experiment matches" in page
    assert "2 of 2" in local.get("/ui/?owner=growth%40example.com&sort=bogus").text


def test_version_history_shows_diffs(tmp_path: Path, sqlite_url: str) -> None:
    engine = _engine(tmp_path, sqlite_url)
    engine.apply([write_yaml(tmp_path, "ab.yaml", AB_YAML.replace("Landing page test", "Landing page, v2"))])
    with TestClient(create_dashboard_app(engine, KEYS, auth=False)) as c:
        page = c.get("/ui/experiments/landing").text
    assert "Version 2 (current)" in page and "Version 1" in page
    assert '<span class="add">+name: Landing page, v2</span>' in page
    assert '<span class="del">-name: Landing page test</span>' in page
    engine.close()


def _counts(engine: Engine) -> tuple[int, ...]:
    with read(engine.store.sa) as conn:
        return tuple(conn.execute(select(func.count()).select_from(t)).scalar_one()
                     for t in (DECISIONS, EVENTS, EXPERIMENTS, VERSIONS, WEIGHTS_HISTORY))


def test_dashboard_is_read_only(tmp_path: Path, sqlite_url: str) -> None:
    engine = _engine(tmp_path, sqlite_url)
    before = _counts(engine)
    app = create_dashboard_app(engine, KEYS, auth=False)
    with TestClient(app) as c:
        for path in ("/ui/", "/ui/overview.json", "/ui/experiments/channels", "/ui/experiments/landing/data.json",
                     "/ui/experiments/landing/report.json", "/ui/experiments/landing/report.md"):
            assert c.get(path).status_code == 200
        # The only POST routes are sign-in and sign-out; the service's write routes are absent.
        routes = [sub for r in app.routes for sub in getattr(getattr(r, "original_router", None), "routes", [r])]
        posts = {r.path for r in routes if "POST" in (getattr(r, "methods", None) or set())}
        assert posts == {"/ui/signin", "/ui/signout"}
        assert c.post("/v1/events", json={"events": []}).status_code == 404
    assert _counts(engine) == before
    engine.close()


def test_dashboard_command_refuses_open_host_without_viewer_key(monkeypatch: pytest.MonkeyPatch,
                                                                 sqlite_url: str) -> None:
    monkeypatch.delenv("CROSSPROMO_VIEWER_KEY", raising=False)
    result = CliRunner().invoke(cli, ["dashboard", "--host", "0.0.0.0", "--db", sqlite_url])
    assert result.exit_code == 2, result.output
    assert "not a loopback address" in result.output and "CROSSPROMO_VIEWER_KEY" in result.output
    assert "Traceback" not in result.output


def test_dashboard_command_refuses_a_missing_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["dashboard", "--db", f"sqlite:///{tmp_path / 'absent.db'}"])
    assert result.exit_code == 2 and "no store at" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "absent.db").exists()


def test_viewer_key_env_is_named_in_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.config import parse_config

    config = parse_config("server:\n  api_keys:\n    viewer_env: TEAM_DASHBOARD_KEY\n")
    assert config.viewer_key_env == "TEAM_DASHBOARD_KEY"
    assert parse_config("").viewer_key_env == "CROSSPROMO_VIEWER_KEY"
    monkeypatch.setenv("TEAM_DASHBOARD_KEY", "v")
    keys = ApiKeys.from_env(config)
    assert keys.viewer == "v" and keys.role_of("v") is not None and keys.role_of("v").value == "viewer"


def test_experiment_page_shows_the_plan_and_the_kept_verdict_beside_the_current_one(tmp_path: Path,
                                                                                    sqlite_url: str) -> None:
    from tests.engine.test_plans import FAST, kept_then_contradicted

    engine = Engine.open(sqlite_url, seed=0)
    engine.apply([write_yaml(tmp_path, "ab.yaml", FAST)])
    kept_then_contradicted(engine)
    with TestClient(create_dashboard_app(engine, KEYS, auth=False)) as c:
        page = " ".join(c.get("/ui/experiments/landing").text.split())
    assert "<dt>Plan</dt><dd>frozen baseline 0.1, frozen <time" in page
    assert 'class="kept">Kept <time' in page and "on 2,000 units" in page
    assert 'class="current">The data since then alone say:' in page and "<strong>control</strong>" in page
    engine.close()
