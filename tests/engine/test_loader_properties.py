"""Property tests: whatever a YAML file holds, the loader answers a spec or a clean `SpecError`
whose every problem names `path:line:col` (never another exception)."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import ConfigError, EngineConfig, parse_config
from engine.loader import SpecError, parse_spec
from engine.spec import ExperimentSpec
from tests.samples import AB_YAML, BANDIT_YAML

BOUNDED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASES = [yaml.safe_load(AB_YAML), yaml.safe_load(BANDIT_YAML)]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
    st.sampled_from(["2024-01-01", ".nan", "-.inf", "!!binary aGk=", "yes", "~", "0x1F", "1e400", "*x", "&y"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=8), inner, max_size=3), max_leaves=10)


def paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a parsed document where a value can be replaced or a key added."""
    found = [prefix]
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    for key, child in items:
        found += paths(child, (*prefix, key))
    return found


def mutate(data: Any, path: tuple, new: Any, as_key: bool) -> Any:
    if not path:
        return new
    head, *rest = path
    copy = dict(data) if isinstance(data, dict) else list(data)
    if as_key and not rest and isinstance(copy, dict):
        copy[str(new)[:20] or "k"] = copy.pop(head)
        return copy
    copy[head] = mutate(copy[head], tuple(rest), new, as_key)
    return copy


@st.composite
def mutated_documents(draw: st.DrawFn) -> str:
    """A valid experiment with a few values (or key names) replaced, dumped in one YAML style."""
    data = draw(st.sampled_from(BASES))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(data)))
        data = mutate(data, path, draw(values), as_key=draw(st.booleans()))
    text = yaml.safe_dump(data, default_flow_style=draw(st.sampled_from([None, True, False])), allow_unicode=True)
    if draw(st.booleans()):  # raw YAML fragments the dumper would quote: tags, aliases, odd scalars
        lines = text.splitlines()
        i = draw(st.integers(0, len(lines) - 1))
        fragment = draw(st.sampled_from(["!!binary aGk=", "2024-13-01", "*nope", "&a [*a]", "{", "\t", "!!set {a}",
                                         "<<: 5", "'", "!!python/name:os.system", "? [a]\n: b"]))
        lines[i] = lines[i].split(":")[0] + ": " + fragment if ":" in lines[i] else fragment
        text = "\n".join(lines) + "\n"
    return text


def assert_spec_or_clean_error(text: str) -> None:
    try:
        spec = parse_spec(text, "f.yaml")
    except SpecError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert str(problem).startswith(f"f.yaml:{problem.line}:{problem.col}: "), problem
            assert problem.line is not None and problem.line >= 1 and problem.col is not None and problem.col >= 1
    else:
        assert isinstance(spec, ExperimentSpec)
        assert ExperimentSpec.model_validate_json(spec.model_dump_json(by_alias=True)) == spec  # reads back equal


@BOUNDED
@given(st.binary(max_size=2000))
def test_any_bytes_give_a_spec_or_a_clean_error(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # undecodable bytes are refused before parsing; see test_any_file_bytes_are_named
    assert_spec_or_clean_error(text)


@BOUNDED
@given(st.text(max_size=2000))
def test_any_text_gives_a_spec_or_a_clean_error(text: str) -> None:
    assert_spec_or_clean_error(text)


@BOUNDED
@given(mutated_documents())
def test_mutated_experiments_give_a_spec_or_a_clean_error(text: str) -> None:
    assert_spec_or_clean_error(text)


@BOUNDED
@given(st.binary(max_size=500))
def test_any_file_bytes_are_named(tmp_path_factory: Any, data: bytes) -> None:
    from engine.loader import load_specs

    path = tmp_path_factory.mktemp("bytes") / "f.yaml"
    path.write_bytes(data)
    try:
        load_specs([path])
    except SpecError as exc:
        assert all(str(p).startswith(str(path)) for p in exc.problems)


@BOUNDED
@given(st.one_of(st.text(max_size=500), st.builds(
    lambda d: yaml.safe_dump(d), st.dictionaries(st.sampled_from(["database", "server", "exposures", "prot"]),
                                                 values, max_size=3))))
def test_any_settings_give_a_config_or_a_clean_error(text: str) -> None:
    try:
        config = parse_config(text, "engine.yaml")
    except ConfigError as exc:
        assert exc.problems and all(str(p).startswith("engine.yaml:") for p in exc.problems)
    else:
        assert isinstance(config, EngineConfig)
