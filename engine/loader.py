"""Load `experiments/*.yaml` (and other YAML settings) safely into validated models, reporting
every problem of a file as `path:line:col: field.path: message`.

YAML is composed with PyYAML's SafeLoader, so the node tree keeps the line and column of
every key and value; validation errors (pydantic locations) are mapped back onto it.

A file is untrusted input, so every step is bounded and linear in the file's size: the file's
bytes (`MAX_BYTES`), its nesting (`MAX_DEPTH`, checked while composing, since PyYAML composes
recursively) and the nodes it stands for once aliases are expanded (`MAX_NODES`: an alias
repeats a subtree without repeating its text, the "billion laughs"). Walks over the node tree
visit each node once, never once per alias. Only JSON values pass (no dates, sets, binary,
NaN, or integers beyond 64 bits), so what is stored reads back equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from engine.payload import Loc, json_problems
from engine.spec import ExperimentSpec, cross_field_problems

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_NODES = 100_000
MAX_PROBLEMS = 20  # per file; the rest are counted

M = TypeVar("M", bound=BaseModel)
MERGE_TAG = "tag:yaml.org,2002:merge"
STR_TAG = "tag:yaml.org,2002:str"


@dataclass(frozen=True)
class SpecProblem:
    """One problem of a file; `line` and `col` are None when the file could not be read."""

    path: str
    line: int | None
    col: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}:{self.col}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class SpecError(ValueError):
    """One or more experiment files are invalid; `problems` lists each with its location, and
    `valid` the experiments of the other files (they are checked all the same)."""

    def __init__(self, problems: list[SpecProblem], valid: list[ExperimentSpec] | None = None) -> None:
        self.problems = problems
        self.valid = valid or []
        super().__init__("\n".join(str(p) for p in problems))


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses nesting past `MAX_DEPTH` while composing (before Python's stack
    runs out), and turns a constructor's stray exception (`2024-13-01` is read as a date, and
    month 13 raises ValueError) into a marked YAML error."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        nests = isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent)
        if nests and self.depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self.depth += nests
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= nests

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, OverflowError, TypeError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this {node.tag.rsplit(':', 1)[-1]} value: {exc}", node.start_mark) from None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse recursive aliases, and trees that aliases expand past `MAX_NODES` nodes or
    `MAX_DEPTH` levels. Each distinct node is sized once (iteratively), so this is linear."""
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            children = _children(node)
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            height[id(node)] = 1 + max((height[id(c)] for c in children), default=0)
            open_nodes.discard(id(node))
            if size[id(node)] > MAX_NODES:
                raise _marked(node, f"aliases expand this to more than {MAX_NODES:,} values")
            if height[id(node)] > MAX_DEPTH + 1:
                raise _marked(node, f"aliases nest this deeper than {MAX_DEPTH} levels")
        elif id(node) in open_nodes:
            raise _marked(node, "recursive alias: this anchor contains an alias of itself")
        elif id(node) not in size:
            open_nodes.add(id(node))
            stack.append((node, True))
            stack += ((c, False) for c in _children(node))


def _marked(node: yaml.Node, problem: str) -> yaml.MarkedYAMLError:
    return yaml.composer.ComposerError(None, None, problem, node.start_mark)


def _key_problems(root: yaml.Node) -> Iterator[tuple[yaml.Node, Loc, str]]:
    """Keys declared twice in one mapping (merge keys `<<` aside: overriding them is their
    point), and keys that are not text (`yes:` is a boolean, `1:` a number). A node reached
    again through an alias was checked the first time."""
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, Loc]] = [(root, ())]
    while stack:
        node, loc = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            names: set[str] = set()
            for key, value in node.value:
                if key.tag == MERGE_TAG:
                    continue
                if not isinstance(key, yaml.ScalarNode) or key.tag != STR_TAG:
                    text = key.value if isinstance(key, yaml.ScalarNode) else "it"
                    yield key, loc, f"keys must be text: quote {text!r}"
                    continue
                if key.value in names:
                    yield key, (*loc, key.value), "duplicate key"
                names.add(key.value)
                stack.append((value, (*loc, key.value)))
        elif isinstance(node, yaml.SequenceNode):
            stack += (((item, (*loc, i)) for i, item in enumerate(node.value)))


class _Located:
    """The composed YAML node tree, answering 'where is this field' for a pydantic location.
    Each mapping is indexed on first use, so locating many problems stays linear."""

    def __init__(self, root: yaml.Node) -> None:
        self.root = root
        self._index: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] = {}

    def position(self, loc: Loc, at_key: bool) -> tuple[int, int, Loc]:
        """(line, col) of the deepest node of `loc` in the file, and `loc` without the tags
        pydantic puts into union locations (`policy.thompson.prior`: the `name: thompson`
        of the policy). A missing field has no node of its own: its mapping is named. The
        position is the key's when asked for (unknown fields) or when the value is a block.
        """
        node: yaml.Node = self.root
        key_node: yaml.Node | None = None
        field: list[str | int] = []
        for i, part in enumerate(loc):
            child = self._child(node, part)
            if child is not None:
                key_node, node = child
                field.append(part)
            elif not self._is_tag(node, part):
                field += loc[i:]
                break
        use_key = key_node is not None and (at_key or not isinstance(node, yaml.ScalarNode))
        mark = key_node.start_mark if use_key and key_node is not None else node.start_mark
        return mark.line + 1, mark.column + 1, tuple(field)

    def _is_tag(self, node: yaml.Node, part: str | int) -> bool:
        """Whether `part` is the value of a discriminator (such as `name`) of this mapping."""
        return isinstance(node, yaml.MappingNode) and any(
            isinstance(v, yaml.ScalarNode) and v.value == part for _, v in self._pairs(node).values())

    def _pairs(self, node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if id(node) not in self._index:
            # The last of equal keys, as in the constructed mapping (merged keys come first).
            self._index[id(node)] = {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}
        return self._index[id(node)]

    def _child(self, node: yaml.Node, part: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
        if isinstance(node, yaml.MappingNode):
            return self._pairs(node).get(str(part))  # a number key (`1: x`) is located by its text
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            return None, node.value[part]
        return None


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field (check the spelling; see the YAML reference in the README)"
    if error["type"] == "missing":
        return "required field is missing"
    if error["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return "expected a mapping of fields"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of character `index` of `text`."""
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1


def _compose(text: str, path: str, empty_ok: bool) -> tuple[yaml.Node, Any]:
    """The node tree and the data of one YAML document, within the limits; SpecError else."""
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # refuses control characters at once
        root = loader.get_single_node()
        if root is None:
            if empty_ok:
                return yaml.compose("{}", Loader=yaml.SafeLoader), {}
            raise SpecError([SpecProblem(path, 1, 1, "", "the file is empty")])
        _check_expansion(root)
        keys = [SpecProblem(path, key.start_mark.line + 1, key.start_mark.column + 1, format_loc(loc), message)
                for key, loc, message in _key_problems(root)]
        if keys:
            raise SpecError(_capped(sorted(keys, key=lambda p: (p.line or 0, p.col or 0))))
        return root, loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        context = f" ({exc.context})" if exc.context else ""
        raise SpecError([SpecProblem(path, line, col, "", f"invalid YAML: {exc.problem}{context}")]) from None
    except yaml.reader.ReaderError as exc:
        line, col = _position(text, exc.position)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        message = f"invalid YAML: character #x{code:04x} is not allowed (control characters are not text)"
        raise SpecError([SpecProblem(path, line, col, "", message)]) from None
    finally:
        if loader is not None:
            loader.dispose()


def parse_model(text: str, path: str, model: type[M], *, empty_ok: bool = False,
                rules: Callable[[M], Iterable[tuple[Loc, str]]] | None = None) -> M:
    """Parse one YAML document into `model`, or raise `SpecError` listing every problem (at most
    `MAX_PROBLEMS`, then a count). `empty_ok` lets an empty document stand for all defaults;
    `rules` yields the problems that relate fields to each other, each with its location."""
    if len(text) > MAX_BYTES:
        raise SpecError([SpecProblem(path, None, None, "", f"larger than {MAX_BYTES:,} bytes")])
    root, data = _compose(text, path, empty_ok)
    if not isinstance(data, dict):
        raise SpecError([SpecProblem(path, 1, 1, "", "expected a mapping of fields")])
    located = _Located(root)

    def problem(loc: Loc, message: str, at_key: bool = False) -> SpecProblem:
        line, col, field = located.position(loc, at_key)
        return SpecProblem(path, line, col, format_loc(field), message)

    problems = [problem(loc, message) for loc, message in json_problems(data)]
    not_json = {p.field for p in problems}

    def already_named(p: SpecProblem) -> bool:
        """Whether the field, or one holding it, was refused as not JSON (pydantic says it again)."""
        cuts = [i for i, c in enumerate(p.field) if c in ".["]
        return any(p.field[:i] in not_json for i in (*cuts, len(p.field)))
    try:
        instance = model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A list whose items failed also reports "too short": the item errors say it better.
        failed_items = {tuple(e["loc"][:1]) for e in errors if len(e["loc"]) > 1}
        located_errors = (
            problem((*e["loc"], *e.get("ctx", {}).get("at", ())), _message(e), at_key=e["type"] == "extra_forbidden")
            for e in errors
            if not (e["type"] == "too_short" and tuple(e["loc"]) in failed_items)
        )
        problems += [p for p in located_errors if not already_named(p)]
        raise SpecError(_capped(problems)) from None
    if rules is not None:
        problems += [problem(loc, msg) for loc, msg in rules(instance)]
    if problems:
        raise SpecError(_capped(problems))
    return instance


def _capped(problems: list[SpecProblem]) -> list[SpecProblem]:
    """The first `MAX_PROBLEMS`, then one line counting the rest at the place of the next one."""
    if len(problems) <= MAX_PROBLEMS:
        return problems
    nxt = problems[MAX_PROBLEMS]
    more = SpecProblem(nxt.path, nxt.line, nxt.col, "", f"and {len(problems) - MAX_PROBLEMS:,} more problem(s)")
    return [*problems[:MAX_PROBLEMS], more]


def parse_spec(text: str, path: str = "<string>") -> ExperimentSpec:
    """Parse one YAML document into a spec, or raise `SpecError` listing every problem."""
    return parse_model(text, path, ExperimentSpec, rules=cross_field_problems)


def read_yaml_text(path: Path) -> str:
    """The text of a YAML file, or `SpecError` naming the file (and the place of a byte that is
    not UTF-8). A UTF-8 byte order mark is dropped."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SpecError([SpecProblem(str(path), None, None, "", f"cannot read: {exc.strerror or exc}")]) from None
    if len(data) > MAX_BYTES:
        raise SpecError([SpecProblem(str(path), None, None, "", f"larger than {MAX_BYTES:,} bytes")])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8-sig")
        line, col = _position(before, len(before))
        problem = f"not UTF-8 text (byte {data[exc.start]:#04x}); save the file as UTF-8"
        raise SpecError([SpecProblem(str(path), line, col, "", problem)]) from None


def load_spec(path: Path) -> ExperimentSpec:
    return parse_spec(read_yaml_text(path), str(path))


def experiment_files(paths: Iterable[Path]) -> list[Path]:
    """YAML files named directly, plus those inside named directories (sorted, not recursive)."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            try:
                files += sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml"))
            except OSError as exc:
                raise SpecError([SpecProblem(str(p), None, None, "", f"cannot list: {exc.strerror or exc}")]) from None
        elif p.exists() or p.is_symlink():
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
        raise SpecError(problems, specs)
    return specs
