"""The dashboard in a real browser: Debian's chromium driven headless by Playwright, on a demo
store served by a real uvicorn. Every page is loaded after signing in (and the session is
ended by signing out); every chart must have drawn its data points; any console error, page
error or alert fails the test; axe-core must find no serious or critical violation.

Screenshots go to CROSSPROMO_ARTIFACTS (default: pytest's temporary directory); the README's
screenshot of the experiment page is made by `test_experiment_pages`.

Skipped, with the reason, when chromium, Playwright or axe-core are missing; CI installs all
three (.ci/browser.sh) and sets CROSSPROMO_REQUIRE_BROWSER=1, which turns those skips into failures.
With CROSSPROMO_UPDATE_SCREENSHOT=1 the README's screenshot, docs/dashboard.png, is rewritten.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.api import Engine
from engine.demo import run_demo
from engine.server import ApiKeys, create_app
from tests.samples import REPO, write_yaml

REQUIRED = os.environ.get("CROSSPROMO_REQUIRE_BROWSER") == "1"
# Under pytest-xdist (`--dist loadgroup`) these tests stay in one worker: they share one demo store,
# one uvicorn and one chromium (module fixtures), which a split would build once per worker.
pytestmark = pytest.mark.xdist_group("browser")


def unavailable(reason: str) -> None:
    """Skip for want of a tool, or fail where the tools are required (CI)."""
    (pytest.fail if REQUIRED else pytest.skip)(reason)


try:
    from playwright import sync_api as playwright
except ImportError:  # pragma: no cover - depends on the environment
    playwright = None

CHROMIUM = os.environ.get("CROSSPROMO_CHROMIUM", "/usr/bin/chromium")
AXE_CACHE = Path(os.environ.get("CROSSPROMO_AXE_DIR", REPO / ".cache" / "axe-core"))
VIEWER = "viewer-key-for-browser-tests"
KEYS = ApiKeys(admin=None, decide=None, viewer=VIEWER)
DEMO_EXPERIMENTS = ("art-collection-landing", "art-training-crosspromo", "creative-courses-launch",
                    "education-bundle-revenue", "music-course-channels")
HOSTILE = "<script>alert('x')</script>"
HOSTILE_YAML = f"""\
schema: 1
key: hostile-strings
name: "Hostile {HOSTILE}"
owner: growth@example.com
hypothesis: "<img src=x onerror=alert(1)> {HOSTILE}"
status: running
kind: bandit
policy: {{name: thompson}}
metric: {{name: purchase, type: binary}}
arms:
  - {{key: a, campaign: "{HOSTILE}", partner: music, channel: email, payload: {{html: "{HOSTILE}"}}}}
  - {{key: b, campaign: c, partner: music, channel: push}}
"""



@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    if playwright is None:
        unavailable("Playwright for Python is not installed: pip install -e '.[test]'")
    if not Path(CHROMIUM).exists():
        unavailable(f"no chromium at {CHROMIUM}: apt-get install chromium (or run .ci/browser.sh)")


def axe_source() -> str:
    """axe.min.js from the npm package `axe-core`, fetched once with `npm pack` into AXE_CACHE."""
    script = AXE_CACHE / "package" / "axe.min.js"
    if not script.exists():
        npm = shutil.which("npm")
        if npm is None:
            unavailable("axe-core is not cached and npm is missing: run .ci/browser.sh")
        AXE_CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "pack", "axe-core@4", "--silent"], cwd=AXE_CACHE, capture_output=True,
                              text=True, timeout=120)
        tarball = AXE_CACHE / done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout else None
        if tarball is None or not tarball.exists():
            unavailable(f"cannot fetch axe-core with npm pack: {done.stderr.strip()[:200]}")
        subprocess.run(["tar", "-xzf", str(tarball), "-C", str(AXE_CACHE)], check=True)
    return script.read_text(encoding="utf-8")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("CROSSPROMO_ARTIFACTS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("dashboard-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Engine]]:
    """A real uvicorn serving the service (dashboard included) over a fresh demo store."""
    import uvicorn

    work = tmp_path_factory.mktemp("dashboard")
    db = work / "demo.db"
    run_demo(db, REPO / "configs" / "demo.yaml", REPO / "experiments", users=2000, seed=7)
    engine = Engine.open(f"sqlite:///{db}", seed=0)
    engine.apply([write_yaml(work, "hostile.yaml", HOSTILE_YAML)])
    for i in range(40):
        engine.decide("hostile-strings", f"u{i}")
    engine.flush()
    os.environ["CROSSPROMO_DASHBOARD_REFRESH_SECONDS"] = "2"
    port = free_port()
    config = uvicorn.Config(create_app(engine, KEYS), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", engine
    srv.should_exit = True
    thread.join(10)
    os.environ.pop("CROSSPROMO_DASHBOARD_REFRESH_SECONDS", None)


class Watched:
    """A page whose console errors, page errors and dialogs are collected (each fails the test)."""

    def __init__(self, page: Any) -> None:
        self.page, self.problems = page, []
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text} at {m.location}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))

    def check(self) -> None:
        assert not self.problems, self.problems


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        except Exception as exc:  # a chromium that cannot start here (no display libs)
            unavailable(f"chromium at {CHROMIUM} does not start: {str(exc).splitlines()[0]}")
        yield b
        b.close()


def signed_in(browser: Any, base: str, width: int = 1280, height: int = 900) -> tuple[Any, Watched]:
    context = browser.new_context(viewport={"width": width, "height": height})
    watched = Watched(context.new_page())
    page = watched.page
    page.goto(f"{base}/ui/experiments/art-training-crosspromo")
    assert page.url.endswith("/ui/signin")
    page.get_by_label("Viewer or admin key").fill(VIEWER)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/ui/")
    return context, watched


def axe_violations(page: Any, source: str) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations (WCAG 2.1 A and AA rules) of the page as shown.

    The script is evaluated through the DevTools protocol, which the page's CSP does not govern."""
    page.evaluate(f"() => {{ {source}\n }}")
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a',
            'wcag21aa', 'best-practice']}});
        return r.violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))}));
    }""")
    return [v for v in result if v["impact"] in ("serious", "critical")]


def drawn_charts(page: Any) -> dict[str, list[int]]:
    """Points per trace of every chart as Plotly holds them (`gd.data`) after drawing."""
    page.wait_for_function("""() => Array.from(document.querySelectorAll('[data-chart]'))
        .every(el => el.data && el.querySelector('.main-svg'))""", timeout=15000)
    return page.evaluate("""() => Object.fromEntries(Array.from(document.querySelectorAll('[data-chart]'))
        .map(el => [el.dataset.chart, el.data.map(t => (t.x || []).filter(v => v !== null).length)]))""")


def test_experiment_pages(server: tuple[str, Engine], browser: Any, artefacts: Path) -> None:
    base, _ = server
    axe = axe_source()
    context, watched = signed_in(browser, base)
    page = watched.page
    seen_axe: dict[str, list[dict[str, Any]]] = {}
    for key in (*DEMO_EXPERIMENTS, "hostile-strings"):
        page.goto(f"{base}/ui/experiments/{key}")
        expected = page.evaluate("() => JSON.parse(document.getElementById('chart-data').textContent)")
        drawn = drawn_charts(page)
        assert set(drawn) == set(expected) and drawn, key
        for name, points in drawn.items():
            want = [len([v for v in t.get("x", []) if v is not None]) for t in expected[name]["data"]]
            assert points == want and all(n > 0 for n in points), (key, name, points, want)
        if key == "art-training-crosspromo":
            assert {"forest", "rate", "lift", "weights", "posterior"} <= set(drawn)
            # The README's picture: from the top to the end of the arm tables (the YAML below is long).
            box = page.locator("#tables").bounding_box()
            page.screenshot(path=str(artefacts / "dashboard.png"), full_page=True,
                            clip={"x": 0, "y": 0, "width": 1280, "height": box["y"] + box["height"] + 16})
            if os.environ.get("CROSSPROMO_UPDATE_SCREENSHOT") == "1":
                shutil.copyfile(artefacts / "dashboard.png", REPO / "docs" / "dashboard.png")
        page.screenshot(path=str(artefacts / f"experiment-{key}.png"), full_page=True)
        seen_axe[key] = axe_violations(page, axe)
    hostile = page.evaluate("""() => ({inline: document.querySelectorAll(
        'script:not([src]):not([type="application/json"])').length, imgs: document.querySelectorAll('main img').length,
        shown: document.body.innerText.includes("<script>alert('x')</script>")})""")
    assert hostile == {"inline": 0, "imgs": 0, "shown": True}
    assert seen_axe == {k: [] for k in seen_axe}, seen_axe
    watched.check()
    context.close()


def test_overview_sign_out_and_keyboard(server: tuple[str, Engine], browser: Any, artefacts: Path) -> None:
    base, _ = server
    axe = axe_source()
    context, watched = signed_in(browser, base)
    page = watched.page
    rows = page.locator("#overview-rows > tr")
    assert rows.count() == len(DEMO_EXPERIMENTS) + 1
    assert page.locator("svg.spark polyline").count() >= 2 * len(DEMO_EXPERIMENTS)
    page.screenshot(path=str(artefacts / "overview.png"), full_page=True)
    assert axe_violations(page, axe) == []
    # Keyboard only: the first Tab reaches the skip link; the filters are chosen and applied by keys.
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    page.focus("#f-status")
    page.keyboard.type("paused")  # a select picks the option typed
    for _ in range(4):  # owner, sort, order, then the Apply button
        page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Apply"
    page.keyboard.press("Enter")
    page.wait_for_url("**status=paused**")
    assert "No experiment matches" in page.inner_text("#overview-rows")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{base}/ui/signin")
    page.goto(f"{base}/ui/")
    assert page.url.endswith("/ui/signin")  # the session ended
    watched.check()
    context.close()


def test_auto_refresh_without_reload(server: tuple[str, Engine], browser: Any) -> None:
    base, engine = server
    context, watched = signed_in(browser, base)
    page = watched.page
    page.goto(f"{base}/ui/experiments/hostile-strings")
    drawn_charts(page)
    page.evaluate("() => { window.notReloaded = true; }")
    before = page.inner_text("#summary")
    for i in range(40, 90):
        engine.decide("hostile-strings", f"u{i}")
    engine.flush()
    page.wait_for_function("() => document.getElementById('refreshed').textContent.startsWith('Updated')",
                           timeout=15000)
    page.wait_for_function(f"() => document.getElementById('summary').innerText !== {before!r}", timeout=15000)
    assert page.evaluate("() => window.notReloaded") is True
    watched.check()
    context.close()


def test_phone_width(server: tuple[str, Engine], browser: Any, artefacts: Path) -> None:
    base, _ = server
    context, watched = signed_in(browser, base, width=360, height=740)
    page = watched.page
    for path in ("/ui/", "/ui/experiments/art-training-crosspromo"):
        page.goto(base + path)
        if "experiments" in path:
            drawn_charts(page)
        # Wide tables scroll inside their own region; the page itself never scrolls sideways.
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 360, path
        page.screenshot(path=str(artefacts / f"phone-{path.strip('/').replace('/', '-')}.png"), full_page=True)
    watched.check()
    context.close()
