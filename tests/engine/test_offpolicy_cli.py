"""`crosspromo export-log` -> `crosspromo evaluate` round trip, plain CSV logs and bad rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from engine.api import Engine
from engine.cli import app
from engine.loader import load_specs
from engine.offpolicy import read_log
from tests.engine.test_targeting import TARGETED_YAML
from tests.samples import BANDIT_YAML, write_yaml

runner = CliRunner()
ESTIMATORS = {"replay", "ips", "snips", "dr"}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CROSSPROMO_DATABASE_URL", raising=False)
    # weights refreshed every 100 outcomes: a Thompson-sampling log, not a uniform one
    write_yaml(tmp_path / "experiments", "channels.yaml", TARGETED_YAML.replace("every_outcomes: 1000000",
                                                                                 "every_outcomes: 100"))
    return tmp_path


def test_export_log_then_evaluate(workdir: Path) -> None:
    rng = np.random.default_rng(0)
    best = {"painting": "by-email", "gaming": "by-sms"}
    with Engine.open("sqlite:///crosspromo.db", seed=0) as engine:
        engine.apply([workdir / "experiments"])
        for i in range(1500):
            interest = "painting" if i % 2 else "gaming"
            d = engine.decide("channels", f"u{i}", {"interest": interest, "opted_in": ["email", "push", "sms"]})
            if rng.random() < (0.3 if d.arm == best[interest] else 0.03):
                engine.record({"event_id": f"c{i}", "experiment": "channels", "decision_id": d.decision_id})
    result = runner.invoke(app, ["export-log", "channels", "--out", "log.csv"])
    assert result.exit_code == 0, result.output
    lines = (workdir / "log.csv").read_text().splitlines()
    assert lines[0] == "arm,reward,propensity,unit,timestamp,ctx_interest,ctx_opted_in"
    assert len(lines) == 1501 and '"email,push,sms"' in lines[1]

    result = runner.invoke(app, ["evaluate", "log.csv", "--experiment", "channels", "--format", "json",
                                 "--resamples", "200"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"targeted", "context_free", "logging"} <= set(data)
    for policy in ("targeted", "context_free", "logging"):
        assert set(data[policy]) == ESTIMATORS and data[policy]["replay"] is None  # Thompson logging
        for name in ("ips", "snips", "dr"):
            e = data[policy][name]
            assert 0 <= e["ci_low"] <= e["value"] <= e["ci_high"] <= 1
    assert data["log"]["rows"] == 1500 and data["log"]["targeting"]["recommender"] == "item_cf"
    # the planted structure pays: targeting beats the context-free policy on this log
    assert data["targeted"]["dr"]["value"] > data["context_free"]["dr"]["value"]
    table = runner.invoke(app, ["evaluate", "log.csv", "--experiment", "channels", "--resamples", "100"])
    assert table.exit_code == 0 and "context_free" in table.stdout and "snips" in table.stdout


def test_plain_csv_with_bad_rows_and_uniform_logging(workdir: Path) -> None:
    write_yaml(workdir / "experiments", "channels.yaml", BANDIT_YAML)  # no targeting: evaluate the default
    rng = np.random.default_rng(1)
    rows = ["arm,reward,propensity,unit,ctx_segment"]
    for i in range(600):
        segment = "a" if i % 2 else "b"
        arm = ("by-email", "by-push", "by-sms")[rng.integers(3)]
        rate = 0.4 if (segment, arm) in {("a", "by-email"), ("b", "by-sms")} else 0.05
        rows.append(f"{arm},{int(rng.random() < rate)},{1 / 3!r},u{i},{segment}")
    rows += ["by-email,1,0,x,a", "by-email,1,1.5,x,a", "nope,1,0.5,x,a", "by-sms,abc,0.5,x,b",
             "by-sms,nan,0.5,x,b", "by-sms,1,inf,x,b"]
    (workdir / "plain.csv").write_text("\n".join(rows) + "\n")
    result = runner.invoke(app, ["evaluate", "plain.csv", "--experiment", "channels", "--format", "json",
                                 "--resamples", "200", "--strength", "0.9"])
    assert result.exit_code == 0, result.output
    for line, reason in [(602, "propensity: must be in (0, 1]"), (603, "propensity: must be in (0, 1]"),
                         (604, "arm: 'nope' is not an arm"), (605, "reward: not a number"),
                         (606, "reward: must be finite"), (607, "propensity: must be finite")]:
        assert f"plain.csv:{line}: {reason}" in result.stderr
    data = json.loads(result.stdout)
    assert data["log"]["rows"] == 600 and data["log"]["skipped"] == 6 and data["log"]["uniform_logging"]
    assert data["log"]["targeting"]["segments_from"] == ["segment"]
    assert data["targeted"]["replay"] is not None
    assert data["targeted"]["snips"]["value"] > data["logging"]["ips"]["value"]


def test_bad_header_is_an_error(workdir: Path) -> None:
    (workdir / "bad.csv").write_text("arm,rewards,propensity\nby-email,1,0.5\n")
    result = runner.invoke(app, ["evaluate", "bad.csv", "--experiment", "channels"])
    assert result.exit_code == 1
    assert "missing column(s) reward" in result.output and "unknown column(s) rewards" in result.output
    assert "Traceback" not in result.output


HOSTILE_CELLS = ['=HYPERLINK("http://evil.example","click")', "+1+2", "-2+3", "@SUM(A1:A9)", "\tx", "\rx",
                 "'quoted", "plain"]


def _no_comma(cell: str) -> str:
    return cell.replace(",", ";")  # a context cell with commas is a list: keep these scalar


def test_export_log_neutralises_formula_cells_and_evaluate_reads_them_back(workdir: Path) -> None:
    with Engine.open("sqlite:///crosspromo.db", seed=0) as engine:
        engine.apply([workdir / "experiments"])
        for i, cell in enumerate(HOSTILE_CELLS * 10):
            engine.decide("channels", f"{cell}{i // len(HOSTILE_CELLS)}" if cell == "plain" else cell,
                          {"interest": _no_comma(cell), "opted_in": ["email", "push", "sms"]})
    result = runner.invoke(app, ["export-log", "channels", "--out", "log.csv"])
    assert result.exit_code == 0, result.output

    with (workdir / "log.csv").open(newline="", encoding="utf-8") as fh:
        cells = [c for row in csv.reader(fh) for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]  # nothing a spreadsheet runs
    assert "'=HYPERLINK(\"http://evil.example\",\"click\")" in cells and "''quoted" in cells

    spec = next(s for s in load_specs([workdir / "experiments"]) if s.key == "channels")
    rows, problems = read_log(workdir / "log.csv", spec)
    assert problems == [] and len(rows) == len(HOSTILE_CELLS) * 10
    assert {r.unit for r in rows} >= set(HOSTILE_CELLS) - {"plain"}
    assert {r.context["interest"] for r in rows} == {_no_comma(c) for c in HOSTILE_CELLS}
    result = runner.invoke(app, ["evaluate", "log.csv", "--experiment", "channels", "--resamples", "20"])
    assert result.exit_code == 0, result.output


def test_export_log_never_replaces_a_database_unless_forced(workdir: Path) -> None:
    with Engine.open("sqlite:///crosspromo.db", seed=0) as engine:
        engine.apply([workdir / "experiments"])
        engine.decide("channels", "u1", {"opted_in": ["email"]})
    before = (workdir / "crosspromo.db").read_bytes()
    result = runner.invoke(app, ["export-log", "channels", "--out", "crosspromo.db"])
    assert result.exit_code == 1 and "--out crosspromo.db: is a SQLite database" in result.output
    assert (workdir / "crosspromo.db").read_bytes() == before
    assert runner.invoke(app, ["winners"]).exit_code == 0  # the store is intact
    (workdir / "old.db").write_bytes(before)
    result = runner.invoke(app, ["export-log", "channels", "--out", "old.db", "--force"])
    assert result.exit_code == 0, result.output
    assert (workdir / "old.db").read_text().startswith("arm,")
