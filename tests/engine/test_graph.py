"""The social graph in the engine: the edge store (SQLite and PostgreSQL), `ingest-graph`, the
YAML fields, social refits and the cold start that ends in a TARGETED decision, and the social
policy of off-policy evaluation."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from engine.api import Engine
from engine.cli import app
from engine.decision import Reason
from engine.loader import SpecError, parse_spec
from engine.offpolicy import LogRow, evaluate_log, evaluation_targeting
from engine.spec import Recommender
from engine.store import Store
from engine.store.graph import build_graph, canonical
from tests.engine.test_targeting import Clock, open_engine
from tests.samples import BANDIT_YAML, write_yaml

runner = CliRunner()
SOCIAL_YAML = BANDIT_YAML.replace(
    "policy: {name: thompson, update: {every_outcomes: 50, every_seconds: 60}}",
    "policy: {name: thompson, min_weight: 0.05, update: {every_outcomes: 1000000, every_seconds: 1000}}",
) + "targeting: {recommender: social, strength: 0.8, refit_every_seconds: 60}\n"
ARMS = ("by-email", "by-push", "by-sms")


# -- the store --------------------------------------------------------------------------


def test_edges_are_idempotent_undirected_unless_a_follow_and_updated_by_weight(db_url: str) -> None:
    store = Store(db_url)
    try:
        first = store.upsert_edges([(1, canonical("b", "a", "share", 1.0)), (2, canonical("a", "b", "share", 1.0)),
                                    (3, canonical("a", "b", "follow", 1.0)), (4, canonical("b", "a", "follow", 2.0))])
        # (b, a, share) and (a, b, share) are one edge; the two follows are two.
        assert (first.accepted, first.updated, first.duplicates) == (3, 0, 1)
        again = store.upsert_edges([(1, canonical("a", "b", "share", 1.0)), (2, canonical("a", "b", "follow", 1.0))])
        assert (again.accepted, again.updated, again.duplicates) == (0, 0, 2)
        heavier = store.upsert_edges([(1, canonical("b", "a", "referral", 1.0)),
                                      (2, canonical("a", "b", "follow", 3.0)), (3, canonical("a", "b", "follow", 4.0))])
        # within one chunk the last row of an edge wins; the earlier one is a duplicate
        assert (heavier.accepted, heavier.updated, heavier.duplicates) == (1, 1, 1)
        assert store.edge_counts() == {"follow": 2, "share": 1, "referral": 1}
        graph = store.graph()
        edges = {(graph.units[s], graph.units[t], bool(d), w) for s, t, d, w in
                 zip(graph.sources, graph.targets, graph.directed, graph.weights, strict=True)}
        assert edges == {("a", "b", False, 1.0), ("a", "b", False, 1.0), ("a", "b", True, 4.0), ("b", "a", True, 2.0)}
        assert graph.size == 4
    finally:
        store.close()


def test_concurrent_writers_of_the_same_edges_store_each_once(db_url: str) -> None:
    edges = [(i, canonical(f"u{i}", f"u{i + 1}", "share", 1.0)) for i in range(300)]
    stores = [Store(db_url) for _ in range(3)]
    outcomes = []
    threads = [threading.Thread(target=lambda s=s: outcomes.append(s.upsert_edges(edges))) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert stores[0].edge_counts()["share"] == 300
        assert len(outcomes) == 3 and sum(o.accepted for o in outcomes) >= 300
    finally:
        for s in stores:
            s.close()


# -- the command line -------------------------------------------------------------------


def test_ingest_graph_prints_the_summary_and_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    path = tmp_path / "edges.csv"
    path.write_text("source,target,kind,weight\na,b,follow,2\nb,a,share,\nc,c,share,1\nd,e,referral,0.5\n")
    first = runner.invoke(app, ["ingest-graph", str(path), "--db", url])
    assert first.exit_code == 0, first.output
    assert "3 accepted, 0 updated, 0 duplicates, 1 rejected" in first.stdout
    assert "edges.csv:4: target: an edge joins two different units" in first.stderr
    path.write_text("source,target,kind,weight\na,b,follow,3\nb,a,share,1\n")
    again = runner.invoke(app, ["ingest-graph", str(path), "--db", url, "--format", "json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == {"accepted": 0, "updated": 1, "duplicates": 1, "rejected": [],
                                        "rejected_count": 0}


def test_ingest_graph_reads_jsonl_from_stdin_and_strict_fails_on_a_bad_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    data = '{"source": "a", "target": "b", "kind": "share"}\n{"source": "a", "target": "b", "kind": "like"}\n'
    result = runner.invoke(app, ["ingest-graph", "-", "--db", url, "--strict"], input=data)
    assert result.exit_code == 1
    assert "<stdin>:2: kind:" in result.stderr and "--strict" in result.stderr
    assert Store(url).edge_counts()["share"] == 1


# -- the declaration -------------------------------------------------------------------------


@pytest.mark.parametrize(("targeting", "field", "message"), [
    ("{recommender: social, social_weight: 0.5}", "targeting.social_weight", "hybrid recommender only"),
    ("{recommender: item_cf, layers: 3}", "targeting.layers", "social recommender"),
    ("{recommender: hybrid, layers: 3}", "targeting.layers", "social_weight"),
    ("{recommender: social, layers: 9}", "targeting.layers", "less than or equal to 8"),
    ("{recommender: social, layers: 0}", "targeting.layers", "greater than or equal to 1"),
    ("{recommender: hybrid, social_weight: -1}", "targeting.social_weight", "greater than or equal to 0"),
    ("{recommender: hybrid, social_weight: .nan}", "targeting.social_weight", "NaN"),
    ("{recommender: hybrid, cf_weight: 0, content_weight: 0}", "targeting.cf_weight", "social_weight"),
    ("{recommender: sociall}", "targeting.recommender", "social"),
])
def test_social_declaration_errors_point_at_the_field(targeting: str, field: str, message: str) -> None:
    text = BANDIT_YAML + f"targeting: {targeting}\n"
    with pytest.raises(SpecError) as info:
        parse_spec(text, "x.yaml")
    problems = [p for p in info.value.problems if p.field == field and message in p.message]
    assert problems, info.value
    assert str(problems[0]).startswith(f"x.yaml:{len(text.splitlines())}:")


@pytest.mark.parametrize("targeting", [
    "{recommender: social, layers: 3}",
    "{recommender: hybrid, cf_weight: 0, content_weight: 0, social_weight: 1}",
    "{recommender: hybrid, social_weight: 0.4, layers: 1}",
])
def test_social_declarations_validate(targeting: str) -> None:
    spec = parse_spec(BANDIT_YAML + f"targeting: {targeting}\n", "x.yaml")
    assert spec.targeting is not None and spec.targeting.uses_graph


# -- social refits and the cold start -----------------------------------------------------


def train(engine: Engine, homophilous: bool = True, groups: int = 2, per_group: int = 40, rounds: int = 40) -> None:
    """Units g{group}-{i} convert 40% on the group's arm and 2% on the others. Friends are the
    other members of the group (`homophilous`) or units drawn at random. Decisions come in rounds,
    so earlier conversions precede later decisions."""
    rng = np.random.default_rng(7)
    members = [f"g{g}-{i}" for g in range(groups) for i in range(per_group)]
    pairs = ([(a, b) for a in members for b in members if a < b and a.split("-")[0] == b.split("-")[0]]
             if homophilous else [(a, str(rng.choice(members))) for a in members for _ in range(20)])
    engine.ingest_graph([{"source": a, "target": b, "kind": "share"} for a, b in pairs if a != b])
    n = 0
    for _ in range(rounds):
        for unit in members:
            d = engine.decide("channels", unit)
            if rng.random() < (0.4 if d.arm == ARMS[int(unit[1])] else 0.02):
                engine.record({"event_id": f"c{n}", "experiment": "channels", "decision_id": d.decision_id})
            n += 1


def test_a_cold_start_unit_whose_friends_converted_gets_their_arm(db_url: str, tmp_path: Path) -> None:
    clock = Clock()
    with open_engine(db_url, clock) as engine:
        engine.apply([write_yaml(tmp_path, "s.yaml", SOCIAL_YAML)])
        train(engine)
        # A newcomer and a unit nobody knows; the newcomer's friends are in group 1 (push).
        engine.ingest_graph([{"source": "newcomer", "target": f"g1-{i}", "kind": "referral"} for i in range(5)])
        assert engine.decide("channels", "stranger").reason is Reason.BANDIT  # model not refitted yet
        clock.now += 61  # the targeting cadence: the refit reads the edges ingested since
        p = engine.probabilities("channels", "newcomer")
        assert max(p, key=p.get) == "by-push" and p["by-push"] > 0.7
        d = engine.decide("channels", "newcomer")
        assert d.reason is Reason.TARGETED and d.propensity == pytest.approx(p[d.arm], rel=1e-12)
        assert engine.decide("channels", "stranger").reason is Reason.BANDIT
        live = engine.snapshot.get("channels")
        assert live.model is not None and live.model.recommender.social_evidence.predictive


def test_a_follower_reads_the_followed_not_the_other_way(sqlite_url: str, tmp_path: Path) -> None:
    clock = Clock()
    with open_engine(sqlite_url, clock) as engine:
        engine.apply([write_yaml(tmp_path, "s.yaml", SOCIAL_YAML)])
        train(engine)
        engine.ingest_graph([{"source": "fan", "target": "g0-0", "kind": "follow"},
                             {"source": "idol", "target": "g1-0", "kind": "follow"},
                             {"source": "g0-1", "target": "idol", "kind": "follow"}])
        clock.now += 61
        fan, idol = engine.probabilities("channels", "fan"), engine.probabilities("channels", "idol")
        assert max(fan, key=fan.get) == "by-email"
        # the idol follows group 1 only: being followed by g0-1 passes nothing of group 0 to it
        assert max(idol, key=idol.get) == "by-push"


def test_without_homophily_the_social_scores_stay_off(sqlite_url: str, tmp_path: Path) -> None:
    clock = Clock()
    with open_engine(sqlite_url, clock) as engine:
        engine.apply([write_yaml(tmp_path, "s.yaml", SOCIAL_YAML)])
        train(engine, homophilous=False)  # the same conversions, friends drawn at random
        engine.ingest_graph([{"source": "newcomer", "target": f"g1-{i}", "kind": "referral"} for i in range(5)])
        clock.now += 61
        d = engine.decide("channels", "newcomer")
        live = engine.snapshot.get("channels")
        assert live.model is not None
        evidence = live.model.recommender.social_evidence
        assert evidence is not None and evidence.exposed > 500 and not evidence.predictive
        assert d.reason is Reason.BANDIT and live.model.recommender.social is None


# -- off-policy evaluation -----------------------------------------------------------------


def test_evaluation_reports_the_social_policy_and_it_pays_on_a_homophilous_log(tmp_path: Path) -> None:
    spec = parse_spec(BANDIT_YAML, "x.yaml")
    rng = np.random.default_rng(9)
    group = {f"u{i}": i % 2 for i in range(400)}
    rows = []
    for line in range(6000):
        unit = f"u{rng.integers(400)}"
        arm = int(rng.integers(3))
        rows.append(LogRow(line, arm, float(rng.random() < (0.4 if arm == group[unit] else 0.02)), 1 / 3, unit, {}))
    units = sorted(group)
    edges = [canonical(u, v, "share", 1.0) for u in units for v in rng.choice(units, 6) if u != v
             and group[u] == group[v]]
    graph = build_graph(edges)
    targeting = evaluation_targeting(spec, rows, Recommender.ITEM_CF, 0.9)
    result = evaluate_log(spec, rows, targeting, seed=0, resamples=200, graph=graph)
    data = result.to_dict()
    assert result.policies == ["targeted", "social", "context_free", "logging"]
    assert data["social"]["dr"]["value"] > data["context_free"]["dr"]["value"]
    assert data["social"]["dr"]["ci_low"] > data["logging"]["dr"]["value"]
    without = evaluate_log(spec, rows, targeting, seed=0, resamples=200)
    assert "social" not in without.to_dict() and without.policies == ["targeted", "context_free", "logging"]


def test_evaluate_with_a_graph_file_reports_the_social_policy_and_its_bad_rows(tmp_path: Path) -> None:
    write_yaml(tmp_path / "exp", "b.yaml", BANDIT_YAML)
    rng = np.random.default_rng(10)
    lines = ["arm,reward,propensity,unit"]
    for _ in range(3000):
        unit, arm = int(rng.integers(200)), int(rng.integers(3))
        lines.append(f"{ARMS[arm]},{int(rng.random() < (0.4 if arm == unit % 2 else 0.02))},{1 / 3},u{unit}")
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    edges = [json.dumps({"source": f"u{u}", "target": f"u{v}", "kind": "share"})
             for u in range(200) for v in range(u % 2, 200, 2)[:8] if u != v]
    (tmp_path / "edges.jsonl").write_text("\n".join([*edges, '{"source": "u1", "target": "u1", "kind": "share"}']))
    result = runner.invoke(app, ["evaluate", str(tmp_path / "log.csv"), "--experiment", "channels",
                                 "--experiments", str(tmp_path / "exp"), "--graph", str(tmp_path / "edges.jsonl"),
                                 "--format", "json", "--resamples", "100"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= {"targeted", "social", "context_free", "logging"}
    assert data["social"]["dr"]["value"] > data["logging"]["dr"]["value"]
    assert f"edges.jsonl:{len(edges) + 1}: target: an edge joins two different units" in result.stderr
