"""Load `experiments/*.yaml` safely into `ExperimentSpec`s, reporting every problem of a file
as `path:line:col: field.path: message`.

YAML is composed with PyYAML's SafeLoader, so the node tree keeps the line and column of
every key and value; validation errors (pydantic locations) are mapped back onto it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from engine.spec import ExperimentSpec, Loc, cross_field_problems


@dataclass(frozen=True)
class SpecProblem:
    path: str
    line: int
    col: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.col}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class SpecError(ValueError):
    """One or more experiment files are invalid; `problems` lists each with its location."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Located:
    """The composed YAML node tree, answering 'where is this field' for a pydantic location."""

    def __init__(self, root: yaml.Node) -> None:
        self.root = root

    def position(self, loc: Loc, at_key: bool) -> tuple[int, int, Loc]:
        """(line, col) of the deepest node on `loc`, and the part of `loc` found in the file.

        Parts not in the file are skipped: pydantic puts the discriminator's tag (e.g.
        `thompson`) into union locations, and a missing field has no node of its own. The
        position is the key's when asked for (unknown fields) or when the value is a block.
        """
        node: yaml.Node = self.root
        key_node: yaml.Node | None = None
        found: Loc = ()
        for part in loc:
            child = self._child(node, part)
            if child is not None:
                key_node, node = child
                found = (*found, part)
        use_key = key_node is not None and (at_key or not isinstance(node, yaml.ScalarNode))
        mark = key_node.start_mark if use_key and key_node is not None else node.start_mark
        return mark.line + 1, mark.column + 1, found

    @staticmethod
    def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    return key, value
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            return None, node.value[part]
        return None


def _duplicate_keys(node: yaml.Node, loc: Loc = ()) -> Iterator[tuple[yaml.Node, Loc]]:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key)
            if name in seen:
                yield key, (*loc, name)
            seen.add(name)
            yield from _duplicate_keys(value, (*loc, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*loc, i))


def _message(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field (check the spelling; see the YAML reference in the README)"
    if error["type"] == "missing":
        return "required field is missing"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def parse_spec(text: str, path: str = "<string>") -> ExperimentSpec:
    """Parse one YAML document into a spec, or raise `SpecError` listing every problem."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise SpecError([SpecProblem(path, 1, 1, "", "the file is empty")])
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise SpecError([SpecProblem(path, line, col, "", f"invalid YAML: {exc.problem}")]) from None
    finally:
        loader.dispose()

    located = _Located(root)
    problems = [
        SpecProblem(path, key.start_mark.line + 1, key.start_mark.column + 1, format_loc(loc), "duplicate key")
        for key, loc in _duplicate_keys(root)
    ]
    if not isinstance(data, dict):
        problems.append(SpecProblem(path, 1, 1, "", "an experiment file must be a mapping of fields"))
        raise SpecError(problems)

    def problem(loc: Loc, message: str, at_key: bool = False) -> SpecProblem:
        line, col, found = located.position(loc, at_key)
        field = format_loc(loc if len(found) == len(loc) else _strip_tags(loc, found))
        return SpecProblem(path, line, col, field, message)

    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A list whose items failed also reports "too short": the item errors say it better.
        failed_items = {tuple(e["loc"][:1]) for e in errors if len(e["loc"]) > 1}
        problems += [
            problem(tuple(e["loc"]), _message(e), at_key=e["type"] == "extra_forbidden")
            for e in errors
            if not (e["type"] == "too_short" and tuple(e["loc"]) in failed_items)
        ]
        raise SpecError(problems) from None
    problems += [problem(loc, msg) for loc, msg in cross_field_problems(spec)]
    if problems:
        raise SpecError(problems)
    return spec


def _strip_tags(loc: Loc, found: Loc) -> Loc:
    """Drop union tags from a location, keeping the parts that exist plus a missing last field."""
    kept = list(found)
    if loc and (not found or loc[-1] != found[-1]):
        kept.append(loc[-1])
    return tuple(kept)


def load_spec(path: Path) -> ExperimentSpec:
    return parse_spec(path.read_text(encoding="utf-8"), str(path))


def experiment_files(paths: Iterable[Path]) -> list[Path]:
    """YAML files named directly, plus those inside named directories (sorted, not recursive)."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml"))
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return files


def load_specs(paths: Iterable[Path]) -> list[ExperimentSpec]:
    """Load every file; raise one `SpecError` with the problems of all files, and of duplicate keys."""
    specs: list[ExperimentSpec] = []
    problems: list[SpecProblem] = []
    first_file: dict[str, str] = {}
    for f in experiment_files(paths):
        try:
            spec = load_spec(f)
        except SpecError as exc:
            problems += exc.problems
            continue
        if spec.key in first_file:
            where = first_file[spec.key]
            problems.append(SpecProblem(str(f), 1, 1, "key", f"experiment {spec.key!r} is also declared in {where}"))
            continue
        first_file[spec.key] = str(f)
        specs.append(spec)
    if problems:
        raise SpecError(problems)
    return specs
