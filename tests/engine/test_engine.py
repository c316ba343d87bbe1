from __future__ import annotations

from pathlib import Path

import pytest

from engine.api import Engine, UnknownExperimentError, UnsafeChangeError
from engine.decision import Reason
from engine.events import EventError
from tests.samples import AB_YAML, BANDIT_YAML, write_yaml


def test_ab_decisions_are_sticky_and_logged(engine: Engine) -> None:
    first = engine.decide("landing", "user-1")
    again = engine.decide("landing", "user-1")
    assert first.reason is Reason.SPLIT and first.in_experiment
    assert (first.arm, first.bucket) == (again.arm, again.bucket)
    assert first.decision_id != again.decision_id
    assert first.propensity == 0.5
    engine.flush()
    _, aggs = engine.aggregates("landing")
    assert sum(a.exposures for a in aggs) == 2


def test_unknown_experiment_names_the_known_ones(engine: Engine) -> None:
    with pytest.raises(UnknownExperimentError) as info:
        engine.decide("nope", "u")
    assert "landing" in info.value.hint


def test_units_outside_coverage_get_the_default_arm_unlogged(db_url: str, tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "l.yaml", AB_YAML.replace("coverage: 1.0", "coverage: 0.1"))
    with Engine.open(db_url) as e:
        e.apply([path])
        decisions = e.decide_many("landing", [f"u{i}" for i in range(2000)])
        outside = [d for d in decisions if not d.in_experiment]
        assert 1600 < len(outside) < 1990
        assert {d.reason for d in outside} == {Reason.DEFAULT}
        assert {d.arm for d in outside} == {"control"}
        assert all(d.decision_id is None for d in outside)
        _, aggs = e.aggregates("landing")
        assert sum(a.exposures for a in aggs) == 2000 - len(outside)


def test_stopped_experiment_serves_the_winner_and_logs_nothing(db_url: str, tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "l.yaml", AB_YAML.replace("status: running", "status: concluded\nwinner: curated"))
    with Engine.open(db_url) as e:
        e.apply([path])
        d = e.decide("landing", "u1")
        assert (d.arm, d.reason, d.in_experiment, d.decision_id) == ("curated", Reason.STOPPED, False, None)
        _, aggs = e.aggregates("landing")
        assert sum(a.exposures for a in aggs) == 0


def test_ab_unit_not_eligible_for_every_arm_stays_out(db_url: str, tmp_path: Path) -> None:
    text = AB_YAML.replace("traffic: {coverage: 1.0}", "eligibility: {channels_from: opted_in}").replace(
        "channel: in_app, weight: 0.5}\nanalysis", "channel: push, weight: 0.5}\nanalysis")
    with Engine.open(db_url) as e:
        e.apply([write_yaml(tmp_path, "l.yaml", text)])
        d = e.decide("landing", "u1", {"opted_in": ["in_app"]})
        assert (d.reason, d.in_experiment, d.arm) == (Reason.DEFAULT, False, "control")
        d = e.decide("landing", "u1", {"opted_in": "push"})
        assert (d.reason, d.arm) == (Reason.DEFAULT, None)  # control's channel is not allowed either
        d = e.decide("landing", "u1", {"opted_in": "in_app,push"})
        assert d.reason is Reason.SPLIT


def test_conversions_count_once_per_exposure_and_revenue_sums(engine: Engine) -> None:
    d = engine.decide("bundle", "buyer-1")
    assert engine.record({"event_id": "e1", "experiment": "bundle", "decision_id": d.decision_id, "value": 30})
    assert engine.record({"event_id": "e2", "experiment": "bundle", "unit": "buyer-1", "value": 12.5})
    assert not engine.record({"event_id": "e2", "experiment": "bundle", "unit": "buyer-1", "value": 12.5})
    _, aggs = engine.aggregates("bundle")
    arm = next(a for a in aggs if a.arm == d.arm)
    assert (arm.exposures, arm.conversions) == (1, 1)
    assert arm.total == pytest.approx(42.5) and arm.total_sq == pytest.approx(42.5**2)

    b = engine.decide("landing", "buyer-1")
    for event_id in ("x1", "x2"):
        engine.record({"event_id": event_id, "experiment": "landing", "decision_id": b.decision_id})
    _, aggs = engine.aggregates("landing")
    arm = next(a for a in aggs if a.arm == b.arm)
    assert (arm.exposures, arm.conversions, arm.total) == (1, 1, 1.0)


BAD_EVENTS = [
    ({"experiment": "landing", "unit": "u"}, "event_id: required"),
    ({"event_id": "b", "experiment": "nope", "unit": "u"}, "unknown experiment"),
    ({"event_id": "b", "experiment": "landing", "unit": "u", "arm": "zzz"}, "is not an arm"),
    ({"event_id": "b", "experiment": "landing", "unit": "u", "value": float("nan")}, "finite"),
    ({"event_id": "b", "experiment": "landing", "unit": "u", "value": float("inf")}, "finite"),
    ({"event_id": "b", "experiment": "landing", "unit": "u", "value": -1}, ">= 0"),
    ({"event_id": "b", "experiment": "landing", "unit": "u", "value": True}, "boolean"),
    ({"event_id": "b", "experiment": "landing", "unit": "u", "value": 1e200}, "<= 1e"),
    ({"event_id": "b", "experiment": "landing", "unit": "never-seen"}, "no exposure"),
    ({"event_id": "b", "experiment": "landing"}, "decision_id or unit"),
    ({"event_id": "b", "experiment": "landing", "decision_id": "missing"}, "no decision"),
    ({"event_id": "b", "experiment": "bundle", "unit": "u", "type": "click"}, "type"),
    ({"event_id": "b", "experiment": "landing", "unit": "u", "colour": 1}, "unknown field"),
]


@pytest.mark.parametrize(("event", "reason"), BAD_EVENTS, ids=[r for _, r in BAD_EVENTS])
def test_bad_events_are_refused_with_a_reason(engine: Engine, event: dict, reason: str) -> None:
    with pytest.raises(EventError, match=reason):
        engine.record(event)
    assert engine.store.counts()["events"] == 0


def test_revenue_conversion_needs_a_value(engine: Engine) -> None:
    engine.decide("bundle", "u")
    with pytest.raises(EventError, match="value: required"):
        engine.record({"event_id": "r", "experiment": "bundle", "unit": "u"})


def test_imported_exposures_count(engine: Engine) -> None:
    assert engine.record({"event_id": "x", "type": "exposure", "experiment": "landing", "unit": "u9", "arm": "curated"})
    assert engine.record({"event_id": "y", "experiment": "landing", "unit": "u9"})
    _, aggs = engine.aggregates("landing")
    assert [(a.arm, a.exposures, a.conversions) for a in aggs] == [("control", 0, 0), ("curated", 1, 1)]


def test_ingest_keeps_good_rows_and_reports_bad_ones_by_line(engine: Engine, tmp_path: Path) -> None:
    d = engine.decide("landing", "u1")
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([
        f'{{"event_id": "ok1", "experiment": "landing", "decision_id": "{d.decision_id}"}}',
        '{"event_id": "bad-json", ',
        '{"event_id": "nan", "experiment": "landing", "unit": "u1", "value": NaN}',
        '{"event_id": "neg", "experiment": "landing", "unit": "u1", "value": -3}',
        '{"event_id": "ok2", "experiment": "landing", "unit": "u1"}',
        '[1, 2]',
    ]) + "\n")
    summary = engine.ingest_file(path)
    assert (summary.accepted, summary.duplicates) == (2, 0)
    assert [line for line, _ in summary.rejected] == [2, 3, 4, 6]
    assert "malformed JSON" in summary.rejected[0][1] and "NaN" in summary.rejected[1][1]


def test_ingest_csv(engine: Engine, tmp_path: Path) -> None:
    d = engine.decide("bundle", "u1")
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,type,experiment,unit,decision_id,value\n"
        f"a,conversion,bundle,,{d.decision_id},19.5\n"
        "b,conversion,bundle,u1,,inf\n"
        "c,conversion,bundle,u1,,-2\n"
        "d,conversion,bundle,u1,,abc\n"
        "e,conversion,bundle,u1,,5\n"
    )
    summary = engine.ingest_file(path)
    assert summary.accepted == 2
    assert [line for line, _ in summary.rejected] == [3, 4, 5]


def test_unsafe_change_to_running_ab_test_is_refused_unless_new_phase(engine: Engine, tmp_path: Path) -> None:
    changed = AB_YAML.replace("weight: 0.5}\n  - {key: curated", "weight: 0.6}\n  - {key: curated").replace(
        "channel: in_app, weight: 0.5}\nanalysis", "channel: in_app, weight: 0.4}\nanalysis")
    path = write_yaml(tmp_path / "v2", "l.yaml", changed)
    plan = engine.apply([path], dry_run=True)
    assert plan.refused and "weights" in plan.refused[0].reason and "phase: 2" in plan.refused[0].hint
    with pytest.raises(UnsafeChangeError):
        engine.apply([path])
    assert engine.experiment("landing").spec.weights == (0.5, 0.5)

    phase2 = write_yaml(tmp_path / "v3", "l.yaml", changed.replace("coverage: 1.0", "coverage: 1.0, phase: 2"))
    plan = engine.apply([phase2])
    assert plan.items[0].action == "update" and plan.items[0].version == 2
    assert engine.experiment("landing").spec.weights == (0.6, 0.4)


def test_safe_changes_apply_and_bump_the_version(engine: Engine, tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "v2", "l.yaml", AB_YAML.replace("name: Landing page test", "name: Landing v2"))
    assert engine.apply([path]).items[0].action == "update"
    assert engine.apply([path]).items[0].action == "unchanged"
    assert engine.experiment("landing").version == 2


def test_bandit_decisions_respect_eligibility_and_carry_propensities(db_url: str, tmp_path: Path) -> None:
    with Engine.open(db_url, seed=3) as e:
        e.apply([write_yaml(tmp_path, "b.yaml", BANDIT_YAML)])
        decisions = e.decide_many("channels", [f"u{i}" for i in range(300)], [{"opted_in": ["email", "sms"]}] * 300)
        assert {d.reason for d in decisions} == {Reason.BANDIT}
        assert {d.channel for d in decisions} <= {"email", "sms"}
        assert all(0 < d.propensity <= 1 for d in decisions)
        nobody = e.decide("channels", "u-x", {"opted_in": []})
        assert (nobody.arm, nobody.reason) == (None, Reason.DEFAULT)


def test_stopped_and_draft_experiments_respect_channel_opt_in(db_url: str, tmp_path: Path) -> None:
    concluded = BANDIT_YAML.replace("status: running", "status: concluded\nwinner: by-sms")
    draft = BANDIT_YAML.replace("key: channels", "key: drafted").replace("status: running", "status: draft")
    with Engine.open(db_url) as e:
        e.apply([write_yaml(tmp_path, "c.yaml", concluded), write_yaml(tmp_path, "d.yaml", draft)])
        d = e.decide("channels", "u1", {"opted_in": ["email"]})
        assert (d.reason, d.arm, d.channel) == (Reason.STOPPED, None, None)
        assert e.decide("channels", "u1", {"opted_in": ["sms"]}).arm == "by-sms"
        d = e.decide("drafted", "u1", {"opted_in": ["push"]})
        assert (d.reason, d.arm) == (Reason.DEFAULT, None)


@pytest.mark.parametrize("context", [{"opted_in": 5}, {"opted_in": None}, {"opted_in": True}])
def test_malformed_contexts_and_units_are_caller_errors(db_url: str, tmp_path: Path, context: dict) -> None:
    with Engine.open(db_url) as e:
        e.apply([write_yaml(tmp_path, "b.yaml", BANDIT_YAML)])
        with pytest.raises(ValueError, match="context"):
            e.decide("channels", "u1", context)
        with pytest.raises(ValueError, match="unit"):
            e.decide("channels", "u" * 300)


def test_conversions_count_in_their_decisions_phase(db_url: str, tmp_path: Path) -> None:
    with Engine.open(db_url) as first, Engine.open(db_url) as second:
        first.apply([write_yaml(tmp_path / "v1", "l.yaml", AB_YAML)])
        second.experiment("landing")  # second's snapshot: phase 1
        phase2 = AB_YAML.replace("coverage: 1.0", "coverage: 1.0, phase: 2")
        first.apply([write_yaml(tmp_path / "v2", "l.yaml", phase2)])
        d = first.decide("landing", "u1")
        first.flush()
        assert second.record({"event_id": "c1", "experiment": "landing", "decision_id": d.decision_id})
        _, aggs = first.aggregates("landing")
        assert sum(a.conversions for a in aggs) == 1


def test_long_event_ids_import_exposures(engine: Engine) -> None:
    event = {"event_id": "x" * 250, "type": "exposure", "experiment": "landing", "unit": "u", "arm": "control"}
    assert engine.record(event)
    assert not engine.record(event)
    _, aggs = engine.aggregates("landing")
    assert sum(a.exposures for a in aggs) == 1


def test_removing_an_arm_of_a_running_sticky_bandit_needs_a_new_phase(db_url: str, tmp_path: Path) -> None:
    sticky = BANDIT_YAML.replace("eligibility:", "traffic: {sticky: true}\neligibility:")
    fewer = sticky.replace("  - {key: by-sms, campaign: c, partner: music, channel: sms}\n", "")
    with Engine.open(db_url) as e:
        e.apply([write_yaml(tmp_path / "a", "b.yaml", sticky)])
        with pytest.raises(UnsafeChangeError, match="sticky"):
            e.apply([write_yaml(tmp_path / "b", "b.yaml", fewer)])
        e.apply([write_yaml(tmp_path / "c", "b.yaml", fewer.replace("{sticky: true}", "{sticky: true, phase: 2}"))])


def test_batch_decisions_equal_single_ones(db_url: str, tmp_path: Path) -> None:
    # The batch path is vectorised; every unit must still get exactly what `decide` gives it,
    # including units whose context sends them down the one-at-a-time path.
    text = AB_YAML.replace("traffic: {coverage: 1.0}",
                           "traffic: {coverage: 0.6}\neligibility: {channels_from: opted_in}")
    units = [f"u{i}" for i in range(600)]
    contexts = [None, {}, {"opted_in": ["in_app"]}, {"opted_in": ["email"]}, {"segment": "art"}] * 120
    with Engine.open(db_url) as e:
        e.apply([write_yaml(tmp_path, "l.yaml", text)])
        batch = e.decide_many("landing", units, contexts)
        single = [e.decide("landing", u, c) for u, c in zip(units, contexts, strict=True)]
        fields = ("arm", "channel", "campaign", "reason", "in_experiment", "bucket", "propensity", "payload")
        for b, s in zip(batch, single, strict=True):
            assert [getattr(b, f) for f in fields] == [getattr(s, f) for f in fields]
        inside = sum(d.in_experiment for d in batch)
        assert 200 < inside < 400 and len({d.decision_id for d in batch if d.decision_id}) == inside
        _, aggs = e.aggregates("landing")
        assert sum(a.exposures for a in aggs) == 2 * inside


def test_batch_bandit_decisions_carry_each_units_propensity(db_url: str, tmp_path: Path) -> None:
    # Weights held still for the batch: each unit's propensity is its arm's probability among the
    # arms it is eligible for, and the draws follow those probabilities.
    frozen = BANDIT_YAML.replace("every_outcomes: 50, every_seconds: 60", "every_outcomes: 100000, every_seconds: 3600")
    units = [f"u{i}" for i in range(3000)]
    contexts = [None, {"opted_in": ["email", "sms"]}, {"opted_in": []}] * 1000
    with Engine.open(db_url, seed=5) as e:
        e.apply([write_yaml(tmp_path, "b.yaml", frozen)])
        decisions = e.decide_many("channels", units, contexts)
        probabilities = [e.probabilities("channels", u, c) for u, c in zip(units[:3], contexts[:2], strict=False)]
    for d, c in zip(decisions, contexts, strict=True):
        if c == {"opted_in": []}:
            assert (d.arm, d.reason, d.in_experiment) == (None, Reason.DEFAULT, False)
        else:
            assert d.reason is Reason.BANDIT and d.propensity == probabilities[c is not None][d.arm]
            assert c is None or d.channel in {"email", "sms"}
    for offset, p in enumerate(probabilities):
        drawn = decisions[offset::3]
        for arm, share in p.items():
            n = sum(d.arm == arm for d in drawn)
            assert abs(n - 1000 * share) < 5 * (1000 * share * (1 - share)) ** 0.5 + 1, (arm, n, share)


def test_a_bad_unit_or_context_refuses_the_whole_batch_and_logs_nothing(db_url: str, tmp_path: Path) -> None:
    with Engine.open(db_url) as e:
        e.apply([write_yaml(tmp_path, "b.yaml", BANDIT_YAML)])
        with pytest.raises(ValueError, match="context"):
            e.decide_many("channels", ["u1", "u2", "u3"], [None, None, {"opted_in": 5}])
        with pytest.raises(ValueError, match="unit"):
            e.decide_many("channels", ["u1", "u" * 300])
        _, aggs = e.aggregates("channels")
        assert sum(a.exposures for a in aggs) == 0
