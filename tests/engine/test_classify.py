"""Classified tags end to end: train on a catalogue, tag the arms that declare none, store the
tags, and let the content recommender use them; the `classify` and `tags` commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from engine.api import Engine
from engine.catalogue import Catalogue, CatalogueError, CatalogueRow, read_catalogue
from engine.classify import check_catalogue, tag_arms, train
from engine.cli import app
from engine.config import load_config
from engine.decision import Reason
from engine.loader import parse_spec
from engine.store import Store
from engine.tags import predicted_tags, tag_views
from engine.targeting import HistoryRow, fit_targeting
from tests.samples import REPO, write_yaml

CATALOGUE = REPO / "configs" / "catalogue.yaml"
LAUNCH_YAML = """\
schema: 1
key: launch
name: New courses
owner: growth@example.com
status: running
kind: bandit
policy: {name: thompson, update: {every_outcomes: 1000000, every_seconds: 1000}}
metric: {name: enrolment, type: binary}
eligibility: {exclude_arms_from: bought}
targeting: {recommender: content, strength: 0.8, refit_every_seconds: 60}
arms:
  - {key: guitar, campaign: guitar, partner: p, channel: email, tags: [music]}
  - {key: python, campaign: python, partner: p, channel: email, tags: [programming]}
  - key: piano
    campaign: piano
    partner: p
    channel: email
    description: 成人钢琴零基础：看五线谱、双手配合，学会弹奏一首完整的曲子。
  - key: web
    campaign: web
    partner: p
    channel: email
    description: "JavaScript and TypeScript web development: build and deploy a REST API."
  - {key: mystery, campaign: mystery, partner: p, channel: email}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return train(read_catalogue(CATALOGUE))


def rows(n: int, topics: list[tuple[str, ...]]) -> Catalogue:
    return Catalogue("c.yaml", tuple(CatalogueRow(i + 1, f"text {i}", topics[i % len(topics)]) for i in range(n)), ())


def test_a_catalogue_too_small_or_of_one_topic_is_refused_and_rare_topics_are_warned_of() -> None:
    with pytest.raises(CatalogueError, match="9 usable row.*at least 10"):
        check_catalogue(rows(9, [("a",), ("b",)]), 5)
    with pytest.raises(CatalogueError, match="at least 16.*--folds 8"):
        check_catalogue(rows(15, [("a",), ("b",)]), 8)
    with pytest.raises(CatalogueError, match="one topic 'a'"):
        check_catalogue(rows(20, [("a",)]), 5)
    warnings = check_catalogue(rows(20, [("a",)] * 9 + [("a", "b")]), 5)
    assert len(warnings) == 1 and "topic 'b' has 2 row(s), fewer than the 5 folds" in warnings[0]


def test_tags_are_predicted_for_undeclared_arms_only_and_replace_earlier_ones(db_url: str, tmp_path: Path,
                                                                             model) -> None:  # type: ignore[no-untyped-def]
    with Engine.open(db_url, seed=0) as engine:
        engine.apply([write_yaml(tmp_path, "launch.yaml", LAUNCH_YAML)])
        for _ in range(2):
            tagging = tag_arms(engine.store, model, "char n-grams")
        stored = {t.arm: t for t in engine.store.arm_tags("launch")}
    assert tagging.undescribed == (("launch", "mystery"),)
    assert set(stored) == {"piano", "web"} and [t.arm for t in tagging.tagged] == ["piano", "web"]
    assert stored["piano"].topics[0] == "music" and stored["web"].topics[0] == "programming"
    assert all(0.5 <= s <= 1 for _, s in stored["web"].tags) and stored["web"].classifier == "char n-grams"


def test_declared_tags_win_and_tags_of_a_changed_description_are_stale(tmp_path: Path, model) -> None:  # type: ignore[no-untyped-def]
    with Engine.open(f"sqlite:///{tmp_path}/s.db", seed=0) as engine:
        engine.apply([write_yaml(tmp_path, "launch.yaml", LAUNCH_YAML)])
        tag_arms(engine.store, model, "m")
        spec = engine.experiment("launch").spec
        assert predicted_tags(spec, engine.store.arm_tags())["piano"][0] == "music"
        changed = LAUNCH_YAML.replace("学会弹奏一首完整的曲子", "学会弹奏两首曲子")
        engine.apply([write_yaml(tmp_path, "launch.yaml", changed)])
        spec = engine.experiment("launch").spec
        stored = engine.store.arm_tags()
    views = {v.arm: v for v in tag_views(spec, stored)}
    assert {a: v.source for a, v in views.items()} == {
        "guitar": "declared", "python": "declared", "piano": "stale", "web": "predicted", "mystery": "none"}
    assert set(predicted_tags(spec, stored)) == {"web"}


def test_predicted_tags_make_the_content_recommender_favour_the_arm_of_the_unit_s_topic() -> None:
    """A unit that converted on the music arm: with the piano arm tagged `music`, content scores
    rank piano over web; without predicted tags the two new arms tie (nothing tells them apart)."""
    spec = parse_spec(LAUNCH_YAML)
    assert spec.targeting is not None
    history = [HistoryRow("fan", 0, True, {}), HistoryRow("coder", 1, True, {})]
    rng = np.random.default_rng(0)
    tagged = fit_targeting(spec, spec.targeting, history, rng, {"piano": ("music",), "web": ("programming",)})
    fan = tagged.scores("fan", {})
    assert fan is not None and fan[2] > fan[3] and fan[2] > fan[4]
    coder = tagged.scores("coder", {})
    assert coder is not None and coder[3] > coder[2]
    untagged = fit_targeting(spec, spec.targeting, history, rng).scores("fan", {})
    assert untagged is not None and untagged[2] == untagged[3]


def test_a_new_campaign_with_a_description_only_gets_targeted_decisions(tmp_path: Path, model) -> None:  # type: ignore[no-untyped-def]
    """Engine end to end: units that converted on the music arm are steered to the piano arm,
    whose only signal is the tag the classifier gave its Chinese description."""
    clock = Clock()
    with Engine(Store(f"sqlite:///{tmp_path}/s.db"), load_config(), np.random.default_rng(0), clock=clock) as engine:
        engine.apply([write_yaml(tmp_path, "launch.yaml", LAUNCH_YAML)])
        for i in range(300):
            d = engine.decide("launch", f"u{i}")
            if d.arm == ("guitar" if i % 2 else "python"):
                engine.record({"event_id": f"c{i}", "experiment": "launch", "decision_id": d.decision_id})
        tag_arms(engine.store, model, "m")
        clock.now += 1001  # the recommender is due for a refit
        bought = {"bought": ["guitar", "python"]}  # what a unit bought is not offered again
        reasons = {engine.decide("launch", f"u{i}", bought).reason for i in range(1, 300, 2)}
        converted = {row.unit: row.arm for row in engine.store.decision_history("launch", 1) if row.converted}
        fan = next(u for u, arm in converted.items() if arm == "guitar")
        coder = next(u for u, arm in converted.items() if arm == "python")
        p = engine.probabilities("launch", fan, bought)
        q = engine.probabilities("launch", coder, bought)
    assert Reason.TARGETED in reasons
    # (1 - strength) = 0.2 of the draw follows the bandit, which knows nothing of the new arms
    assert p["piano"] > 0.6 and p["piano"] > 3 * max(p["web"], p["mystery"]), p
    assert q["web"] > 0.6 and q["web"] > 3 * max(q["piano"], q["mystery"]), q


def run(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def test_classify_prints_f1_per_topic_and_macro_f1(tmp_path: Path) -> None:
    result = run("classify", "--catalogue", str(CATALOGUE), "--folds", "3")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    out = result.stdout  # type: ignore[attr-defined]
    for topic in ("art-training", "art-collection", "music", "education", "programming"):
        assert topic in out
    assert "macro-F1 0." in out and "3-fold" in out


def test_classify_json_and_write_tags_then_tags_shows_where_each_tag_comes_from(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/s.db"
    assert run("apply", str(write_yaml(tmp_path / "exp", "launch.yaml", LAUNCH_YAML)),
               "--db", db).exit_code == 0  # type: ignore[attr-defined]
    result = run("classify", "--catalogue", str(CATALOGUE), "--format", "json", "--write-tags", "--db", db)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    data = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert 0.6 <= data["macro_f1"] <= 1 and set(data["per_topic"]) == {
        "art-training", "art-collection", "music", "education", "programming"}
    assert data["macro_f1"] == pytest.approx(np.mean([t["f1"] for t in data["per_topic"].values()]))
    assert [t["arm"] for t in data["tags"]] == ["piano", "web"] and data["untagged"] == [
        {"experiment": "launch", "arm": "mystery"}]
    shown = run("tags", "launch", "--db", db).stdout  # type: ignore[attr-defined]
    lines = {line.split()[1]: line.split(maxsplit=3)[2:] for line in shown.splitlines()}
    assert lines["guitar"] == ["declared", "music"] and lines["mystery"] == ["none", "-"]
    assert lines["piano"][0] == "predicted" and lines["piano"][1].startswith("music 0.")
    as_json = json.loads(run("tags", "--format", "json", "--db", db).stdout)  # type: ignore[attr-defined]
    assert {v["arm"]: v["source"] for v in as_json}["web"] == "predicted"


def test_classify_write_tags_prints_arm_and_tags_with_scores(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/s.db"
    run("apply", str(write_yaml(tmp_path / "exp", "launch.yaml", LAUNCH_YAML)), "--db", db)
    result = run("classify", "--catalogue", str(CATALOGUE), "--write-tags", "--db", db)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "launch/piano -> music 0." in result.stdout  # type: ignore[attr-defined]
    assert "launch/mystery: declares no tags and no description" in result.stderr  # type: ignore[attr-defined]


def test_the_demo_tags_its_new_campaigns_from_their_descriptions(tmp_path: Path) -> None:
    """`crosspromo demo` trains on configs/catalogue.yaml and tags the arms of
    creative-courses-launch that declare a description but no tags; its decisions use them."""
    from engine.demo import run_demo

    notices: list[str] = []
    run_demo(tmp_path / "demo.db", REPO / "configs" / "demo.yaml", REPO / "experiments", users=200, seed=1,
             notice=notices.append)
    store = Store(f"sqlite:///{tmp_path / 'demo.db'}")
    try:
        tags = {t.arm: set(t.topics) for t in store.arm_tags("creative-courses-launch")}
    finally:
        store.close()
    assert tags == {"generative-art-push": {"art-training", "programming"},
                    "live-coding-email": {"music", "programming"}}
    assert any("creative-courses-launch/generative-art-push -> art-training" in n for n in notices)
