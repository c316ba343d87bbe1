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
    kinds = {(s.kind.value, s.policy.name, s.primary.type.value) for s in specs}
    assert ("bandit", "thompson", "binary") in kinds
    assert ("bandit", "epsilon_greedy", "revenue") in kinds
    assert ("ab_test", "fixed", "revenue") in kinds
    roles = {m.role.value for s in specs for m in s.measures}
    assert roles == {"primary", "guardrail"} and any(a.cost for s in specs for a in s.arms)
    assert any(s.kind.value == "ab_test" and len(s.arms) == 3 for s in specs)


def test_the_same_key_in_two_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(AB_YAML)
    (tmp_path / "b.yaml").write_text(AB_YAML)
    with pytest.raises(SpecError, match="also declared"):
        load_specs([tmp_path])


ARM = "  - {key: curated, campaign: curated, partner: art-collection, channel: in_app, weight: 0.5}"


def with_payload(payload: str) -> str:
    """The valid A/B file with `payload` on its second arm (line 11)."""
    return AB_YAML.replace(ARM, ARM[:-1] + ", payload: " + payload + "}")


# (name, payload, field, message fragment): values JSON cannot carry are refused where they are.
NOT_JSON = [
    ("integer above 64 bits", "{n: 1234567890123456789012345678901}", "arms[1].payload.n", "64-bit"),
    ("negative integer below 64 bits", "{n: -9223372036854775809}", "arms[1].payload.n", "64-bit"),
    ("binary", "{b: !!binary aGVsbG8=}", "arms[1].payload.b", "binary data is not a JSON value"),
    ("date", "{d: 2024-01-01}", "arms[1].payload.d", "a date is not a JSON value"),
    ("timestamp", "{d: 2024-01-01 10:00:00}", "arms[1].payload.d", "a timestamp is not a JSON value"),
    ("set", "{s: !!set {a, b}}", "arms[1].payload.s", "a set is not a JSON value"),
    ("nan", "{x: .nan}", "arms[1].payload.x", "NaN and infinity"),
    ("infinity in a list", "{x: [1, -.inf]}", "arms[1].payload.x[1]", "NaN and infinity"),
    ("number as key", "{1: a}", "arms[1].payload", "keys must be text: quote '1'"),
    ("NUL in text", '{a: "x\\0y"}', "arms[1].payload.a", "NUL characters"),
    ("lone surrogate in text", '{a: "x\\ud800"}', "arms[1].payload.a", "not valid UTF-8"),
    ("lone surrogate in a key", '{"\\udcff": 1}', "arms[1].payload", "not valid UTF-8"),
    ("nested 20 levels", "{a: " + "{b: " * 20 + "1" + "}" * 20 + "}", "arms[1].payload.a.b", "nested deeper than 16"),
]


@pytest.mark.parametrize(("name", "payload", "field", "fragment"), NOT_JSON, ids=[n[0] for n in NOT_JSON])
def test_payload_values_that_json_cannot_carry_are_refused(name: str, payload: str, field: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(with_payload(payload), "x.yaml")
    [problem] = info.value.problems
    assert (problem.path, problem.line) == ("x.yaml", 11) and problem.col > 90, problem
    assert problem.field.startswith(field) and fragment in problem.message, problem


def test_json_payload_values_are_kept_as_written() -> None:
    spec = parse_spec(with_payload("{n: 9223372036854775807, m: -9223372036854775808, f: 0.1, d: '2024-01-01', "
                                   "l: [1, null, true, x], o: {k: v}}"))
    assert spec.arms[1].payload == {"n": 2**63 - 1, "m": -(2**63), "f": 0.1, "d": "2024-01-01",
                                    "l": [1, None, True, "x"], "o": {"k": "v"}}


def test_a_payload_given_in_python_is_checked_too() -> None:
    from engine.spec import Arm

    with pytest.raises(ValidationError, match="64-bit"):
        Arm(key="a", campaign="c", partner="p", channel="email", payload={"n": 2**64})
    deep: dict = {}
    node = deep
    for _ in range(5000):  # judged without recursion
        node["a"] = node = {}
    with pytest.raises(ValidationError, match="nested deeper"):
        Arm(key="a", campaign="c", partner="p", channel="email", payload=deep)


def test_a_value_that_is_not_json_is_refused_anywhere_in_the_file() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(AB_YAML.replace("name: Landing page test", "name: 2024-01-01"), "x.yaml")
    [problem] = info.value.problems  # the same field is not reported again as "not a string"
    assert str(problem) == "x.yaml:3:7: name: a date is not a JSON value; quote it to keep it as text"


def test_an_impossible_date_names_its_place() -> None:
    with pytest.raises(SpecError, match=r"x.yaml:11:\d+: invalid YAML: cannot read this timestamp value: month"):
        parse_spec(with_payload("{d: 2024-13-01}"), "x.yaml")


def billion_laughs(levels: int = 10, width: int = 9) -> str:
    lines = ["a0: &a0 [lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_alias_bombs_are_refused_after_one_visit_per_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the bound the 1.6 KB file below stands for 9^9 values; each walk followed every alias."""
    from engine import loader

    text = billion_laughs()
    assert len(text) < 1700
    visits = 0
    children = loader._children

    def counting(node: object) -> list:
        nonlocal visits
        visits += 1
        return children(node)  # type: ignore[arg-type]

    monkeypatch.setattr(loader, "_children", counting)
    with pytest.raises(SpecError) as info:
        parse_spec(text, "bomb.yaml")
    [problem] = info.value.problems
    assert problem.line is not None and problem.line <= 10
    assert "aliases expand this to more than 100,000 values" in problem.message
    assert visits <= 2 * (10 * 10 + 1)  # each distinct node twice at most: entered and sized


def test_small_aliases_and_merge_keys_are_accepted() -> None:
    text = AB_YAML.replace(
        "  - {key: control, campaign: grid, partner: art-collection, channel: in_app, weight: 0.5}",
        "  - &first {key: control, campaign: grid, partner: art-collection, channel: in_app, weight: 0.5}",
    ).replace(ARM, "  - {<<: *first, key: curated, campaign: curated, channel: email}")
    spec = parse_spec(text)
    assert [(a.key, a.partner, a.channel.value, a.weight) for a in spec.arms] == [
        ("control", "art-collection", "in_app", 0.5), ("curated", "art-collection", "email", 0.5)]


def test_recursive_aliases_are_refused() -> None:
    with pytest.raises(SpecError, match="x.yaml:12:11: invalid YAML: recursive alias"):
        parse_spec(AB_YAML.replace("analysis: {control: control}", "analysis: &a {control: [*a]}"), "x.yaml")


@pytest.mark.parametrize("text", ["a: " + "[" * 600 + "]" * 600 + "\n",
                                  "".join(" " * i + f"k{i}:\n" for i in range(600)),
                                  "a: &a [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1 if i > 1 else ''}]\n"
                                                          for i in range(1, 60))],
                         ids=["flow", "block", "through aliases"])
def test_deep_nesting_is_refused_with_its_place(text: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "deep.yaml")
    [problem] = info.value.problems
    assert problem.line is not None and "deeper than 32 levels" in problem.message, problem


def test_problems_are_capped_and_the_rest_counted() -> None:
    text = AB_YAML + "".join(f"k{i}: 1\n" for i in range(20_000))
    with pytest.raises(SpecError) as info:
        parse_spec(text, "x.yaml")
    problems = info.value.problems
    assert len(problems) == 21
    assert [str(p) for p in problems[:2]] == [
        "x.yaml:13:1: k0: unknown field (check the spelling; see the YAML reference in the README)",
        "x.yaml:14:1: k1: unknown field (check the spelling; see the YAML reference in the README)"]
    assert str(problems[-1]) == "x.yaml:33:1: and 19,980 more problem(s)"


def test_duplicate_keys_are_capped_too() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(AB_YAML + "".join(f"kind: {i}\n" for i in range(5000)), "x.yaml")
    assert len(info.value.problems) == 21 and info.value.problems[0].field == "kind"
    assert info.value.problems[-1].message == "and 4,980 more problem(s)"


def test_an_oversized_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(AB_YAML + "# " + "x" * 1024 * 1024 + "\n")
    with pytest.raises(SpecError, match=r"big.yaml: larger than 1,048,576 bytes"):
        load_specs([big])


def test_an_undecodable_file_is_named_and_the_others_are_still_checked(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_bytes(AB_YAML.encode().replace(b"Landing", b"Land\xffing"))
    (tmp_path / "b.yaml").write_bytes(b"\x00\x01\x02binary\x00")
    (tmp_path / "c.yaml").write_text(AB_YAML.replace("status: running", "status: runing"))
    (tmp_path / "d.yaml").write_text(AB_YAML.replace("key: landing", "key: other"))
    with pytest.raises(SpecError) as info:
        load_specs([tmp_path])
    lines = [str(p) for p in info.value.problems]
    assert lines[0] == f"{tmp_path}/a.yaml:3:11: not UTF-8 text (byte 0xff); save the file as UTF-8"
    assert lines[1].startswith(f"{tmp_path}/b.yaml:1:1: invalid YAML: character #x0000 is not allowed")
    assert lines[2].startswith(f"{tmp_path}/c.yaml:5:9: status:")
    assert len(lines) == 3


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "win.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + AB_YAML.replace("\n", "\r\n").encode())
    [spec] = load_specs([path])
    assert spec.key == "landing" and spec.name == "Landing page test"


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(SpecError) as info:
        load_specs([tmp_path])
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path}/dir.yaml: cannot read: Is a directory",
        f"{tmp_path}/loop.yaml: cannot read: Too many levels of symbolic links"]
