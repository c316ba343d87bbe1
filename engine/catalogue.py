"""A labelled catalogue: descriptions and their topics, read from CSV or YAML for the classifier.

CSV: a header naming `text` and `topics`; topics separated by `;` (`programming;art-training`).
YAML: a list of mappings `{text, topics}`, topics a list (or a `;`-separated string). Every
row is checked on its own and a bad one is reported with its line and skipped, good rows kept:
empty text, no topics, a topic that is not a name, unknown fields, a row that is not a mapping,
text no store can hold (NUL, bytes that are not UTF-8), a text seen on an earlier row. What
makes no row readable (not UTF-8 YAML, broken YAML syntax, a CSV header without `text`) is
one error naming the file and its line.

Reading is bounded: the file's size (`MAX_BYTES`), a description's length (the arms'
`MAX_DESCRIPTION_CHARS`), topics per row; the YAML tree is walked to the depth a row has
(three levels), never expanded through aliases.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from engine.events import EventFileError, RawRow, RowSchema, read_stream
from engine.loader import MERGE_TAG, STR_TAG, _BoundedLoader  # the experiment files' bounded YAML reader
from engine.spec import MAX_DESCRIPTION_CHARS
from engine.text import text_problem

MAX_BYTES = 32 * 1024 * 1024
MAX_TOPICS_PER_ROW = 16
TOPIC = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
FIELDS = ("text", "topics")
CatalogueFormat = Literal["csv", "yaml"]
_FORMATS: dict[str, CatalogueFormat] = {".csv": "csv", ".yaml": "yaml", ".yml": "yaml"}


class CatalogueError(ValueError):
    """A catalogue no row of which can be read; the message names the file (and line)."""


@dataclass(frozen=True)
class CatalogueRow:
    line: int
    text: str
    topics: tuple[str, ...]


@dataclass(frozen=True)
class Catalogue:
    """The usable rows of a file, and (line, reason) for every row skipped."""

    path: str
    rows: tuple[CatalogueRow, ...]
    problems: tuple[tuple[int, str], ...]

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.rows]

    @property
    def labels(self) -> list[tuple[str, ...]]:
        return [r.topics for r in self.rows]


def catalogue_format(path: Path) -> CatalogueFormat:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise CatalogueError(f"{path}: unknown catalogue format {path.suffix or '(no suffix)'!r}; "
                             "name a .csv, .yaml or .yml file")
    return fmt


def read_catalogue(path: Path) -> Catalogue:
    """Every row of the catalogue at `path`, each usable or skipped with its reason."""
    fmt = catalogue_format(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if size > MAX_BYTES:
        raise CatalogueError(f"{path}: larger than {MAX_BYTES:,} bytes")
    raw = _csv_rows(path) if fmt == "csv" else _yaml_rows(path)
    rows: list[CatalogueRow] = []
    problems: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for line, data, error in raw:
        row = _row(line, data) if data is not None else error or "unreadable row"
        if isinstance(row, str):
            problems.append((line, row))
        elif row.text.strip() in seen:
            problems.append((line, f"text: the same text as line {seen[row.text.strip()]}, which is kept"))
        else:
            seen[row.text.strip()] = line
            rows.append(row)
    return Catalogue(str(path), tuple(rows), tuple(problems))


Raw = tuple[int, dict[str, Any], None] | tuple[int, None, str]


def _csv_rows(path: Path) -> Iterator[Raw]:
    try:
        with path.open("rb") as fh:
            for row in read_stream(fh, "csv", RowSchema(FIELDS, FIELDS)):
                yield _raw(row)
    except EventFileError as exc:
        raise CatalogueError(f"{path}:{exc.line}: {exc.reason}") from None


def _raw(row: RawRow) -> Raw:
    return (row.line, None, row.error or "unreadable row") if row.data is None else (row.line, row.data, None)


def _yaml_rows(path: Path) -> Iterator[Raw]:
    """Rows of a YAML list, built from the node tree so that each keeps its line."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CatalogueError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); save it as UTF-8") from None
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # refuses control characters (NUL among them) at once
        root = loader.get_single_node()
        if root is None:
            raise CatalogueError(f"{path}: the file is empty; expected a list of rows {{text, topics}}")
        if not isinstance(root, yaml.SequenceNode):
            raise CatalogueError(f"{path}:{root.start_mark.line + 1}: expected a list of rows {{text, topics}}")
        for node in root.value:
            yield _yaml_row(loader, node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{mark.line + 1}:{mark.column + 1}" if mark else "1:1"
        raise CatalogueError(f"{path}:{where}: invalid YAML: {exc.problem}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise CatalogueError(f"{path}:{line}: invalid YAML: a control character (such as NUL) is not text") from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_row(loader: _BoundedLoader, node: yaml.Node) -> Raw:
    line = node.start_mark.line + 1
    if not isinstance(node, yaml.MappingNode):
        return line, None, "expected a mapping {text, topics}"
    row: dict[str, Any] = {}
    for key, value in node.value:
        if key.tag == MERGE_TAG:
            return line, None, "merge keys (<<) are not read in a catalogue: write the row out"
        if not (isinstance(key, yaml.ScalarNode) and key.tag == STR_TAG):
            return line, None, "keys must be text"
        if key.value in row:
            return line, None, f"{_field(key.value)}: duplicate key"
        try:
            if isinstance(value, yaml.SequenceNode):
                items = value.value[: MAX_TOPICS_PER_ROW + 1]  # past that the row is refused: read no further
                row[key.value] = [_scalar(loader, item) for item in items]
            else:
                row[key.value] = _scalar(loader, value)
        except yaml.MarkedYAMLError as exc:  # `2024-13-01` reads as a date, and month 13 fails
            return line, None, f"{_field(key.value)}: {exc.problem}"
    return line, row, None


class _Nested:
    """A value that is a mapping or a list where text was expected (never walked into)."""

    def __init__(self, node: yaml.Node) -> None:
        self.kind = "a mapping" if isinstance(node, yaml.MappingNode) else "a list"


def _scalar(loader: _BoundedLoader, node: yaml.Node) -> Any:
    return loader.construct_object(node) if isinstance(node, yaml.ScalarNode) else _Nested(node)


def _row(line: int, data: dict[str, Any]) -> CatalogueRow | str:
    """The row, or why it is skipped (the field first)."""
    for name in data:
        if name not in FIELDS:
            return f"{_field(name)}: unknown field (fields: {', '.join(FIELDS)})"
    text = data.get("text")
    if text is None or text == "":
        return "text: missing or empty"
    if not isinstance(text, str):
        return f"text: expected text, got {_kind(text)}"
    if problem := text_problem(text):
        return f"text: {problem}"
    if not text.strip():
        return "text: blank"
    if len(text) > MAX_DESCRIPTION_CHARS:
        return f"text: longer than {MAX_DESCRIPTION_CHARS:,} characters"
    topics = _topics(data.get("topics"))
    if isinstance(topics, str):  # a reason: about one topic ("[1]: ...") or all of them
        return f"topics{topics}" if topics.startswith("[") else f"topics: {topics}"
    return CatalogueRow(line, text, topics)


def _topics(value: Any) -> tuple[str, ...] | str:
    """The row's topics (duplicates dropped, order kept), or why they are not usable."""
    if isinstance(value, str):
        value = [t for t in value.split(";") if t.strip()]
    if value is None or value == []:
        return "missing or empty: give at least one topic"
    if not isinstance(value, list):
        return f"expected a list of topics (or topics separated by ';'), got {_kind(value)}"
    if len(value) > MAX_TOPICS_PER_ROW:
        return f"more than {MAX_TOPICS_PER_ROW} topics"
    topics: list[str] = []
    for i, topic in enumerate(value):
        if not isinstance(topic, str):
            return f"[{i}]: expected a topic name, got {_kind(topic)}"
        name = topic.strip()
        if text_problem(name) or not TOPIC.match(name):
            comma = "; separate topics with ';'" if "," in name else ""
            return (f"[{i}]: {_short(name)} is not a topic name (lowercase letters, digits, '.', '_' or '-', "
                    f"at most 64; e.g. art-training){comma}")
        if name not in topics:
            topics.append(name)
    return tuple(topics)


def _kind(value: Any) -> str:
    if isinstance(value, _Nested):
        return value.kind
    names = {bool: "a boolean", int: "a number", float: "a number", type(None): "null", list: "a list"}
    return names.get(type(value), f"a {type(value).__name__}")


def _field(name: str) -> str:
    """A field as messages name it: ours bare, any other quoted (it is the file's text)."""
    return name if name in FIELDS else _short(name)


def _short(value: str, limit: int = 40) -> str:
    """`repr` of a name from the file, cut: messages quote what they refuse, never megabytes of it."""
    text = repr(value) if text_problem(value) == "" else ascii(value)
    return text if len(text) <= limit else text[:limit] + "…"
