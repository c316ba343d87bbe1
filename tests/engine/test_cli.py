from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

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
    assert sum(a["exposures"] for a in arms.values()) == 2
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
    assert result.exit_code == 4 and "error:" in result.output and "Traceback" not in result.output


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
