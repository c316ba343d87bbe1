"""Frozen plans and kept verdicts through the report: the plan is declared or frozen once per
phase (on every replica alike), and a final verdict is kept with the counts it was made on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.api import Engine
from engine.cli import app
from engine.store import FrozenPlan, KeptVerdict
from engine.tables import PLANS, VERDICTS
from policies.stats.planning import plan_binary_sample_size
from tests.samples import AB_YAML, write_yaml

runner = CliRunner()
FAST = AB_YAML.replace("analysis: {control: control}", "analysis: {control: control, mde: 0.5}")


def feed(engine: Engine, arm: str, start: int, units: int, conversions: int) -> None:
    """`units` new units of `arm` (numbered from `start`), the first `conversions` of them converted."""
    ids = [f"{arm}-{i}" for i in range(start, start + units)]
    events = [{"event_id": f"x-{u}", "type": "exposure", "experiment": "landing", "unit": u, "arm": arm} for u in ids]
    events += [{"event_id": f"c-{u}", "type": "conversion", "experiment": "landing", "unit": u}
               for u in ids[:conversions]]
    assert not engine.ingest(events).rejected


def both(engine: Engine, start: int, units: int, control: int, curated: int) -> None:
    feed(engine, "control", start, units, control)
    feed(engine, "curated", start, units, curated)


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


def applied(url: str, directory: Path, text: str = FAST) -> Engine:
    engine = Engine.open(url)
    engine.apply([write_yaml(directory, "landing.yaml", text)])
    return engine


def rows(engine: Engine, table: object) -> list[dict[str, object]]:
    with engine.store.sa.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(table.select())]  # type: ignore[attr-defined]


def test_the_plan_is_frozen_at_the_first_report_where_every_arm_has_min_sample(store: str, tmp_path: Path) -> None:
    with applied(store, tmp_path, AB_YAML) as engine:
        both(engine, 0, 60, 6, 9)
        before = engine.report("landing").to_dict()
        assert before["planning"]["source"] is None and before["planning"]["planned_n_per_arm"] is None
        assert before["verdict"]["status"] == "keep_running"
        assert "no plan yet" in before["verdict"]["reason"] and "has 60" in before["verdict"]["reason"]
        assert rows(engine, PLANS) == []

        both(engine, 60, 40, 4, 6)  # 100 units each, the control at 10/100
        at = engine.report("landing").to_dict()["planning"]
        assert at["source"] == "frozen" and at["baseline"] == pytest.approx(0.1)
        assert at["planned_n_per_arm"] == plan_binary_sample_size(0.1, 0.1).n_per_arm
        assert at["share_reached"] == pytest.approx(100 / at["planned_n_per_arm"])

        both(engine, 100, 900, 300, 300)  # the control's rate moves to 31%: the plan stays put
        after = engine.report("landing").to_dict()
        assert {k: after["planning"][k] for k in ("source", "baseline", "planned_n_per_arm", "frozen_at")} == {
            k: at[k] for k in ("source", "baseline", "planned_n_per_arm", "frozen_at")}
        assert after["arms"][0]["rate"] == pytest.approx(0.31)
        [row] = rows(engine, PLANS)
        assert json.loads(row["counts_json"]) == {"control": 100, "curated": 100} and row["version"] == 1


def test_a_declared_baseline_plans_from_the_start_and_wins_over_a_frozen_one(store: str, tmp_path: Path) -> None:
    declared = AB_YAML.replace("{control: control}", "{control: control, baseline: 0.05}")
    with applied(store, tmp_path, AB_YAML) as engine:
        both(engine, 0, 100, 10, 12)
        assert engine.report("landing").to_dict()["planning"]["source"] == "frozen"
        engine.apply([write_yaml(tmp_path, "landing.yaml", declared)])
        planning = engine.report("landing").to_dict()["planning"]
        assert planning["source"] == "declared" and planning["baseline"] == 0.05 and planning["frozen_at"] is None
        assert planning["planned_n_per_arm"] == plan_binary_sample_size(0.05, 0.1).n_per_arm
        engine.apply([write_yaml(tmp_path, "landing.yaml", AB_YAML)])  # declared no more: the frozen plan is back
        planning = engine.report("landing").to_dict()["planning"]
        assert planning["source"] == "frozen" and planning["baseline"] == pytest.approx(0.1)


def test_a_declared_baseline_needs_no_freeze(store: str, tmp_path: Path) -> None:
    with applied(store, tmp_path, AB_YAML.replace("{control: control}", "{control: control, baseline: 0.2}")) as e:
        both(e, 0, 40, 4, 6)
        report = e.report("landing").to_dict()
        assert report["planning"]["source"] == "declared"
        assert report["planning"]["planned_n_per_arm"] == plan_binary_sample_size(0.2, 0.1).n_per_arm
        assert "no plan yet" not in report["verdict"]["reason"] and rows(e, PLANS) == []


def kept_then_contradicted(engine: Engine) -> tuple[dict[str, object], dict[str, object]]:
    """A winner once the plan is reached, then data that alone would call the control."""
    both(engine, 0, 1000, 100, 200)
    first = engine.report("landing").to_dict()
    both(engine, 1000, 6000, 2400, 300)
    return first, engine.report("landing").to_dict()


def test_a_final_verdict_is_kept_and_the_disagreeing_current_one_shown(store: str, tmp_path: Path) -> None:
    with applied(store, tmp_path) as engine:
        first, later = kept_then_contradicted(engine)
    assert first["verdict"]["status"] == "winner" and first["verdict"]["winner"] == "curated"
    assert first["verdict"]["kept_at"] is not None and first["current_verdict"] is None
    kept = later["verdict"]
    assert {k: kept[k] for k in ("status", "winner", "reason", "kept_at")} == {
        k: first["verdict"][k] for k in ("status", "winner", "reason", "kept_at")}
    assert kept["version"] == 1 and kept["counts"] == [
        {"arm": "control", "units": 1000, "conversions": 100, "total": 100.0},
        {"arm": "curated", "units": 1000, "conversions": 200, "total": 200.0}]
    assert later["current_verdict"]["status"] == "winner" and later["current_verdict"]["winner"] == "control"
    assert later["metrics"][0]["verdict"]["winner"] == "control"  # the metric's own analysis is today's


def test_a_verdict_that_is_not_final_is_not_kept(store: str, tmp_path: Path) -> None:
    with applied(store, tmp_path) as engine:
        both(engine, 0, 300, 30, 40)
        report = engine.report("landing").to_dict()
        assert report["verdict"]["status"] == "keep_running" and report["verdict"]["kept_at"] is None
        assert report["verdict"]["counts"] is None and report["current_verdict"] is None
        assert rows(engine, VERDICTS) == []


def test_a_new_phase_starts_without_plan_or_kept_verdict(store: str, tmp_path: Path) -> None:
    with applied(store, tmp_path) as engine:
        kept_then_contradicted(engine)
        phase_2 = FAST.replace("{coverage: 1.0}", "{coverage: 1.0, phase: 2}")
        engine.apply([write_yaml(tmp_path, "landing.yaml", phase_2)])
        report = engine.report("landing").to_dict()
    assert report["phase"] == 2 and report["planning"]["source"] is None
    assert report["verdict"]["kept_at"] is None and report["verdict"]["status"] == "insufficient_data"


def test_two_engines_on_one_store_freeze_and_keep_once(db_url: str, tmp_path: Path) -> None:
    with applied(db_url, tmp_path) as one, Engine.open(db_url) as two:
        both(one, 0, 1000, 100, 200)
        a, b = two.report("landing").to_dict(), one.report("landing").to_dict()
        assert a["planning"] == b["planning"] and a["verdict"] == b["verdict"]
        assert len(rows(one, PLANS)) == 1 and len(rows(one, VERDICTS)) == 1
        # Two writers racing with different observations: the first row stands for both.
        plan = one.store.frozen_plan("landing", 1, "purchase")
        assert plan is not None
        other = FrozenPlan(**{**plan.__dict__, "baseline": 0.5, "n_per_arm": 7})
        assert two.store.freeze_plan(other) == plan
        verdict = one.store.kept_verdict("landing", 1)
        assert verdict is not None
        assert two.store.keep_verdict(KeptVerdict(**{**verdict.__dict__, "winner": "control"})) == verdict


def test_the_cli_shows_the_plan_and_both_verdicts(store: str, tmp_path: Path) -> None:
    with applied(store, tmp_path) as engine:
        kept_then_contradicted(engine)
    report = json.loads(runner.invoke(app, ["report", "landing", "--format", "json", "--db", store]).stdout)
    assert report["planning"]["source"] == "frozen" and report["verdict"]["winner"] == "curated"
    assert report["current_verdict"]["winner"] == "control"
    for fmt in ("table", "markdown"):
        result = runner.invoke(app, ["report", "landing", "--format", fmt, "--db", store])
        assert result.exit_code == 0, result.output
        text = " ".join(result.stdout.split())
        assert "winner -> curated" in text and "[kept on " in text
        assert "current data: winner -> control" in text
        assert "units per arm" in text and ", frozen)" in text
    result = runner.invoke(app, ["winners", "landing", "--db", store])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].startswith("landing: winner -> curated")
    assert result.stdout.splitlines()[1].startswith("landing: current data: winner -> control")


def unsubscribe(engine: Engine, arm: str, start: int, units: int) -> None:
    assert not engine.ingest([{"event_id": f"u-{arm}-{i}", "type": "conversion", "experiment": "landing",
                               "unit": f"{arm}-{i}", "metric": "unsub"} for i in range(start, start + units)]).rejected


def test_winners_exit_codes_follow_the_kept_verdict(store: str, tmp_path: Path) -> None:
    guarded = FAST.replace("metric: {name: purchase, type: binary}", "metrics: [{name: purchase}, {name: unsub, "
                           "role: guardrail, direction: decrease, margin: 0.9}]")
    with applied(store, tmp_path, guarded) as engine:
        both(engine, 0, 1000, 100, 200)
        unsubscribe(engine, "control", 0, 100)
        unsubscribe(engine, "curated", 0, 100)
        assert engine.report("landing").to_dict()["verdict"]["winner"] == "curated"
        both(engine, 1000, 1000, 100, 200)
        unsubscribe(engine, "curated", 1000, 1000)  # every later curated unit unsubscribes
        report = engine.report("landing").to_dict()
    assert report["verdict"]["status"] == "winner" and report["current_verdict"]["status"] == "guardrail_failed"
    result = runner.invoke(app, ["winners", "landing", "--fail-on-guardrail", "--db", store])
    assert result.exit_code == 0, result.output
    assert "landing: current data: guardrail_failed" in result.stdout
