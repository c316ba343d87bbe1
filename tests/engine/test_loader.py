from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.loader import SpecError, load_specs, parse_spec
from tests.samples import AB_YAML, BANDIT_YAML, REPO

# (name, change to the valid A/B file, expected "line:col: field: message" fragments)
BROKEN = [
    ("typo in a top-level key", ("owner: growth@example.com", "owner: growth@example.com\nhypotesis: x"),
     ["5:1", "hypotesis", "unknown field"]),
    ("typo in a nested key", ("traffic: {coverage: 1.0}", "traffic: {coverrage: 1.0}"),
     ["8:11", "traffic.coverrage", "unknown field"]),
    ("negative weight",
     ("channel: in_app, weight: 0.5}\n  - {key: curated", "channel: in_app, weight: -0.5}\n  - {key: curated"),
     ["10:86", "arms[0].weight", "greater than or equal to 0"]),
    ("weights do not add up", ("channel: in_app, weight: 0.5}\nanalysis", "channel: in_app, weight: 0.7}\nanalysis"),
     ["9:1", "arms", "add up to 1"]),
    ("duplicate arm key", ("- {key: curated", "- {key: control"), ["11:11", "arms[1].key", "duplicate arm key"]),
    ("control is not an arm", ("analysis: {control: control}", "analysis: {control: nope}"),
     ["12:21", "analysis.control", "'nope' is not an arm"]),
    ("bad status", ("status: running", "status: runing"), ["5:9", "status", "'running'"]),
    ("missing owner", ("owner: growth@example.com\n", ""), ["1:1", "owner", "required field is missing"]),
    ("bad channel", ("channel: in_app, weight: 0.5}\nanalysis", "channel: fax, weight: 0.5}\nanalysis"),
     ["11:", "arms[1].channel", "'email'"]),
    ("unknown default arm", ("analysis: {control: control}", "default_arm: nobody\nanalysis: {control: control}"),
     ["12:14", "default_arm", "'nobody' is not an arm"]),
    ("duplicate YAML key", ("kind: ab_test", "kind: ab_test\nkind: bandit"), ["7:1", "kind", "duplicate key"]),
    ("invalid YAML", ("arms:", "arms: ["), ["invalid YAML"]),
    ("weight on a bandit arm", ("kind: ab_test", "kind: bandit\npolicy: {name: thompson}"),
     ["arms[0].weight", "weights apply to ab_test arms"]),
]


@pytest.mark.parametrize(("name", "change", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_files_name_line_col_and_field(name: str, change: tuple[str, str], expected: list[str]) -> None:
    old, new = change
    assert old in AB_YAML, name
    text = AB_YAML.replace(old, new, 1)
    with pytest.raises(SpecError) as info:
        parse_spec(text, "experiments/x.yaml")
    message = str(info.value)
    assert message.startswith("experiments/x.yaml:")
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_bad_policy_name_is_reported() -> None:
    text = BANDIT_YAML.replace("name: thompson", "name: thompsen")
    with pytest.raises(SpecError) as info:
        parse_spec(text, "b.yaml")
    assert "policy" in str(info.value) and "thompson" in str(info.value)


def test_all_problems_of_a_file_are_reported_at_once() -> None:
    text = AB_YAML.replace("status: running", "status: nope").replace(
        "traffic: {coverage: 1.0}", "traffic: {coverage: 2}")
    with pytest.raises(SpecError) as info:
        parse_spec(text, "x.yaml")
    fields = [p.field for p in info.value.problems]
    assert fields == ["status", "traffic.coverage"]


def test_unsafe_yaml_tags_are_refused() -> None:
    with pytest.raises(SpecError, match="invalid YAML"):
        parse_spec("!!python/object/apply:os.system ['true']\n", "evil.yaml")


def test_valid_file_gives_frozen_spec() -> None:
    spec = parse_spec(AB_YAML)
    assert spec.key == "landing" and spec.weights == (0.5, 0.5) and spec.control == "control"
    with pytest.raises(ValidationError):
        spec.key = "other"  # type: ignore[misc]


def test_shipped_experiments_validate() -> None:
    specs = load_specs([REPO / "experiments"])
    kinds = {(s.kind.value, s.policy.name, s.metric.type.value) for s in specs}
    assert ("bandit", "thompson", "binary") in kinds
    assert ("bandit", "epsilon_greedy", "binary") in kinds
    assert ("ab_test", "fixed", "revenue") in kinds
    assert any(s.kind.value == "ab_test" and len(s.arms) == 3 for s in specs)


def test_the_same_key_in_two_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(AB_YAML)
    (tmp_path / "b.yaml").write_text(AB_YAML)
    with pytest.raises(SpecError, match="also declared"):
        load_specs([tmp_path])
