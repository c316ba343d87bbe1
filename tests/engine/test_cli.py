from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.api import Engine
from engine.cli import app
from tests.samples import AB_YAML, BANDIT_YAML, REPO, write_yaml

runner = CliRunner()


def run(*args: str) -> object:
    return runner.invoke(app, list(args))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with two experiments and its own database."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CROSSPROMO_DATABASE_URL", raising=False)
    write_yaml(tmp_path / "experiments", "landing.yaml", AB_YAML)
    write_yaml(tmp_path / "experiments", "channels.yaml", BANDIT_YAML)
    return tmp_path


def test_validate_ok_and_broken(workdir: Path) -> None:
    result = run("validate")
    assert result.exit_code == 0, result.output
    assert "2 experiment(s) valid" in result.output
    write_yaml(workdir / "experiments", "broken.yaml", AB_YAML.replace("key: landing", "key: broken").replace(
        "traffic: {coverage: 1.0}", "traffic: {coverage: 1.0, coverag: 2}"))
    result = run("validate")
    assert result.exit_code == 2
    assert "experiments/broken.yaml:8:26: traffic.coverag: unknown field" in result.output
    assert "Traceback" not in result.output


def test_shipped_experiments_validate_from_the_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = run("validate")
    assert result.exit_code == 0, result.output


def test_apply_decide_record_report_winners(workdir: Path) -> None:
    assert run("apply", "--dry-run").exit_code == 0
    result = run("apply")
    assert result.exit_code == 0, result.output
    assert "create" in result.output and (workdir / "crosspromo.db").exists()

    result = run("decide", "landing", "--unit", "u-42", "--format", "json")
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout)
    assert decision["reason"] == "SPLIT" and decision["arm"] in ("control", "curated")
    again = json.loads(run("decide", "landing", "--unit", "u-42", "--format", "json").stdout)
    assert again["arm"] == decision["arm"]

    event = json.dumps({"event_id": "e-1", "experiment": "landing", "decision_id": decision["decision_id"]})
    result = run("record", event)
    assert result.exit_code == 0 and "recorded" in result.output
    result = run("record", event)
    assert result.exit_code == 0 and "duplicate" in result.output
    result = run("record", '{"event_id": "e-2", "experiment": "landing", "unit": "u-42", "value": NaN}')
    assert result.exit_code == 1 and "error:" in result.output and "Traceback" not in result.output

    result = run("report", "landing", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    arms = {a["arm"]: a for a in report["arms"]}
    # One unit decided twice: one exposure (the analysis unit is the user), two decisions.
    assert sum(a["exposures"] for a in arms.values()) == 1
    assert sum(a["decisions"] for a in arms.values()) == 2
    assert arms[decision["arm"]]["conversions"] == 1
    assert report["verdict"]["status"] == "insufficient_data"

    result = run("report", "landing", "--plot", str(workdir / "plots"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (workdir / "plots").iterdir()) == [
        "landing-cumulative-rate.png", "landing-lift.png", "landing-posterior.png"]

    result = run("report", "--format", "markdown")
    assert result.exit_code == 0 and "| arm |" in result.stdout
    result = run("report")
    assert result.exit_code == 0 and "landing" in result.stdout
    result = run("winners")
    assert result.exit_code == 0
    assert {line.split(":")[0] for line in result.stdout.splitlines()} == {"landing", "channels"}


def test_ingest_reports_bad_lines_and_is_idempotent(workdir: Path) -> None:
    run("apply")
    decision = json.loads(run("decide", "landing", "--unit", "u1", "--format", "json").stdout)
    path = workdir / "events.jsonl"
    path.write_text(
        json.dumps({"event_id": "a", "experiment": "landing", "decision_id": decision["decision_id"]}) + "\n"
        + '{"event_id": "b", "experiment": "landing", "unit": "u1", "value": -1}\n'
        + "not json\n"
    )
    result = run("ingest", str(path))
    assert result.exit_code == 0, result.output
    assert "1 accepted, 0 duplicates, 2 rejected" in result.stdout
    assert "events.jsonl:2: value: must be >= 0" in result.output
    assert "events.jsonl:3: malformed JSON" in result.output
    result = run("ingest", str(path), "--format", "json")
    assert json.loads(result.stdout)["duplicates"] == 1


def test_unsafe_apply_exits_1_with_a_hint(workdir: Path) -> None:
    run("apply")
    extra_arm = "  - {key: extra, campaign: e, partner: p, channel: push, weight: 0.0}\n"
    last_arm = "channel: in_app, weight: 0.5}\n"
    changed = AB_YAML.replace(last_arm + "analysis", last_arm + extra_arm + "analysis")
    write_yaml(workdir / "experiments", "landing.yaml", changed)
    result = run("apply")
    assert result.exit_code == 1
    assert "refused" in result.output and "hint: declare traffic.phase: 2" in result.output


def test_errors_are_one_line_without_traceback(workdir: Path) -> None:
    result = run("decide", "nope", "--unit", "u")
    assert result.exit_code == 1
    assert result.output.startswith("error: unknown experiment 'nope'")
    assert "hint:" in result.output
    result = run("decide", "landing", "--unit", "u", "--db", "nosuchdriver://x")
    assert result.exit_code == 5 and "error:" in result.output and "Traceback" not in result.output


def test_simulate_prints_json_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = run("simulate", "art-training-crosspromo", "--users", "20000", "--format", "json", "--seed", "3",
                 "--plot", str(tmp_path))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["users"] == 20000 and data["best_arm"] == "watercolour-push"
    assert set(data) >= {"users", "conversions", "best_arm", "regret", "weights"}
    assert abs(sum(data["weights"].values()) - 1) < 1e-9
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "art-training-crosspromo-simulated-regret.png", "art-training-crosspromo-simulated-weights.png"]
    again = json.loads(run("simulate", "art-training-crosspromo", "--users", "20000", "--format", "json",
                           "--seed", "3").stdout)
    assert again == data
    drift = run("simulate", "music-course-channels", "--users", "20000", "--drift", "10000:guitar-email=0.2",
                "--format", "json")
    assert drift.exit_code == 0 and json.loads(drift.stdout)["best_arm"] == "guitar-email"
    bad = run("simulate", "education-bundle-revenue")
    assert bad.exit_code == 1 and "A/B test" in bad.output
    bad = run("simulate", "music-course-channels", "--truth", "nope=0.1")
    assert bad.exit_code == 1 and "ARM=RATE" in bad.output


def test_winners_fail_on_srm_exits_3(workdir: Path) -> None:
    run("apply")
    # 600 exposures imported into one arm of a declared 50/50 split: a sample ratio mismatch.
    path = workdir / "exposures.jsonl"
    arms = ["control"] * 500 + ["curated"] * 100
    path.write_text("".join(json.dumps({"event_id": f"x{i}", "type": "exposure", "experiment": "landing",
                                        "unit": f"u{i}", "arm": arm}) + "\n" for i, arm in enumerate(arms)))
    assert run("ingest", str(path)).exit_code == 0
    result = run("winners", "landing")
    assert result.exit_code == 0 and "landing: srm_invalid" in result.stdout
    result = run("winners", "landing", "--fail-on-srm")
    assert result.exit_code == 3
    report = json.loads(run("report", "landing", "--format", "json").stdout)
    assert report["srm"]["flagged"] is True and report["verdict"]["status"] == "srm_invalid"


HEAVY = ("scipy", "statsmodels", "matplotlib", "sqlalchemy", "fastapi", "uvicorn", "pandas")


def _loaded_after(code: str, cwd: Path = REPO) -> list[str]:
    """The heavy modules loaded after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint('loaded:', *(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1].split()[1:]


def test_importing_the_cli_and_help_load_no_heavy_module() -> None:
    assert _loaded_after("import engine.cli") == []
    assert _loaded_after("import engine") == []
    assert _loaded_after("import policies") == []
    help_run = ("from engine.cli import app\ntry:\n    app(['--help'], prog_name='crosspromo')\n"
                "except SystemExit:\n    pass")
    assert _loaded_after(help_run) == []


def test_validate_loads_no_store_analysis_plotting_or_server() -> None:
    validate_run = ("from engine.cli import app\ntry:\n    app(['validate'], prog_name='crosspromo')\n"
                    "except SystemExit as exc:\n    assert exc.code == 0, exc.code")
    assert _loaded_after(validate_run) == []


def test_the_cli_choices_match_the_experiment_model() -> None:
    from engine.cli import CorrectionChoice, RecommenderChoice
    from engine.spec import Correction, Recommender

    assert [c.value for c in CorrectionChoice] == [c.value for c in Correction]
    assert {c.value for c in RecommenderChoice} == {r.value for r in Recommender} - {"none"}


def test_an_unexpected_exception_is_one_line_with_an_id_found_in_the_log(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.loader

    log = workdir / "state" / "crosspromo.log"
    monkeypatch.setenv("CROSSPROMO_LOG_FILE", str(log))

    def broken(paths: object) -> None:
        raise RuntimeError("boom while reading postgresql://app:hunter2@db.internal/x")

    monkeypatch.setattr(engine.loader, "load_specs", broken)
    result = run("validate")
    assert result.exit_code == 70
    lines = result.output.splitlines()
    assert lines[0].startswith("error: internal error (id ") and str(log) in lines[0]
    assert len(lines) == 2 and lines[1].startswith("hint: ") and "Traceback" not in result.output
    incident = re.search(r"\(id ([0-9a-f]{12})\)", lines[0]).group(1)  # type: ignore[union-attr]
    text = log.read_text()
    assert f"internal error {incident} in `crosspromo validate`" in text
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom" in text
    assert "hunter2" not in text and "app:***@db.internal" in text


def test_library_warnings_go_to_the_log_not_the_user(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.loader

    log = workdir / "crosspromo.log"
    monkeypatch.setenv("CROSSPROMO_LOG_FILE", str(log))

    def noisy(paths: object) -> list[object]:
        warnings.warn("solver did not converge", RuntimeWarning, stacklevel=1)
        return []

    monkeypatch.setattr(engine.loader, "load_specs", noisy)
    result = run("validate")
    assert result.exit_code == 0 and "converge" not in result.output
    assert "RuntimeWarning: solver did not converge" in log.read_text()


def test_apply_prints_the_store_url_without_its_password(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`apply` names the store it wrote to; a PostgreSQL URL's password is masked."""
    import engine.api

    url = "postgresql+psycopg://app:hunter2@db.internal/crosspromo"

    class FakeEngine:
        store = type("FakeStore", (), {"url": url})()

        def __enter__(self) -> FakeEngine:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def apply(self, paths: object, dry_run: bool) -> engine.api.Plan:
            return engine.api.Plan((), dry_run)

    monkeypatch.setattr(engine.api.Engine, "open", staticmethod(lambda *a, **k: FakeEngine()))
    result = run("apply", "--db", url)
    assert result.exit_code == 0, result.output
    assert "applied to postgresql+psycopg://app:***@db.internal/crosspromo" in result.output
    assert "hunter2" not in result.output


def test_demo_refuses_to_replace_a_store_that_is_not_a_demo_unless_forced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    store = tmp_path / "production.db"
    with Engine.open(f"sqlite:///{store}", seed=0) as engine:
        engine.apply([REPO / "experiments"])
        engine.decide("art-collection-landing", "precious-unit", {})
    before = store.read_bytes()

    result = run("demo", "--users", "200", "--out", str(store))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith(f"error: --out {store}: exists and is not a demo store")
    assert "--force" in result.output and store.read_bytes() == before

    demo = tmp_path / "demo.db"
    assert run("demo", "--users", "200", "--out", str(demo)).exit_code == 0
    assert run("demo", "--users", "200", "--out", str(demo)).exit_code == 0  # its own store: replaced
    assert run("demo", "--users", "200", "--out", str(store), "--force").exit_code == 0
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT count(*) FROM decisions WHERE unit = 'precious-unit'").fetchone() == (0,)


def test_an_unwritable_log_still_gives_one_line(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.loader

    (workdir / "afile").write_text("")
    monkeypatch.setenv("CROSSPROMO_LOG_FILE", str(workdir / "afile" / "crosspromo.log"))  # under a file
    monkeypatch.setattr(engine.loader, "load_specs", lambda paths: 1 / 0)
    result = run("validate")
    assert result.exit_code == 70 and "cannot be written" in result.output and "CROSSPROMO_DEBUG=1" in result.output
    assert "Traceback" not in result.output and "Logging error" not in result.output


def test_ingest_refuses_to_write_rejections_over_its_own_input(workdir: Path) -> None:
    events = workdir / "events.jsonl"
    events.write_text('{"event_id": "e1", "experiment": "landing", "unit": "nobody"}\nnot json\n')
    result = run("ingest", str(events), "--rejects", str(events))
    assert result.exit_code == 2 and "--rejects" in result.output and "Traceback" not in result.output
    assert events.read_text().count("\n") == 2  # untouched


@pytest.mark.parametrize("args", [["evaluate", "--help"], ["sample-size", "--baseline", "0.1", "--mde", "0.1"]])
def test_a_reader_that_goes_away_gets_no_error_message(workdir: Path, args: list[str]) -> None:
    """`crosspromo ... | head`: once the reader closed the pipe, the command stops quietly
    (exit 1, as rich and click do), with no `error:` about a broken pipe."""
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir)
    assert proc.stdout is not None
    proc.stdout.close()  # before the command writes a byte
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and stderr == b"", stderr


def test_serve_on_a_taken_port_says_so_before_starting(workdir: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--host", "127.0.0.1", "--port", str(port), "--no-auth")
    assert result.exit_code == 1, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.output and "Traceback" not in result.output
