"""An arm's `description`: free text in any language, bounded, storable, kept through apply."""

from __future__ import annotations

import pytest

from engine.api import Engine
from engine.loader import SpecError, parse_spec
from engine.spec import MAX_DESCRIPTION_CHARS
from tests.samples import BANDIT_YAML

ARM = "  - {key: by-sms, campaign: c, partner: music, channel: sms}"


def with_description(value: str) -> str:
    assert ARM in BANDIT_YAML
    return BANDIT_YAML.replace(ARM, ARM[:-1] + f", description: {value}}}")


@pytest.mark.parametrize("text", ["用代码写音乐：在 Sonic Pi 里实时编程", "Live coding music with Sonic Pi",
                                  "'a: quoted, with {braces}'"])
def test_a_description_in_chinese_or_english_is_read_as_written(text: str) -> None:
    spec = parse_spec(with_description(text), "x.yaml")
    assert spec.arms[2].description == text.strip("'")
    assert spec.arms[0].description is None


@pytest.mark.parametrize(("value", "message"), [
    ('""', "blank"),
    ('"   "', "blank"),
    ('"\\ud800 lone surrogate"', "UTF-8"),
    ("x" * (MAX_DESCRIPTION_CHARS + 1), f"at most {MAX_DESCRIPTION_CHARS} characters"),
    ("[a, list]", "valid string"),
])
def test_a_bad_description_is_refused_at_its_line_and_column(value: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(with_description(value), "x.yaml")
    assert "x.yaml:13:" in str(info.value) and "arms[2].description" in str(info.value), str(info.value)
    assert message in str(info.value)


def test_nul_in_a_description_is_refused_by_the_model_too() -> None:
    """A spec built in Python (not from YAML, whose reader refuses NUL first) is checked alike."""
    spec = parse_spec(BANDIT_YAML).to_json_dict()
    spec["arms"][0]["description"] = "a\x00b"
    with pytest.raises(ValueError, match="NUL"):
        type(parse_spec(BANDIT_YAML)).model_validate(spec)


def test_a_description_survives_apply_and_a_change_of_it_is_an_update(tmp_path) -> None:
    spec = parse_spec(with_description("Guitar by text message"))
    with Engine.open(f"sqlite:///{tmp_path}/s.db") as engine:
        engine.apply([spec])
        assert engine.experiment("channels").spec.arms[2].description == "Guitar by text message"
        plan = engine.apply([parse_spec(with_description("Guitar lessons by SMS"))])
    assert [i.action for i in plan.items] == ["update"]
