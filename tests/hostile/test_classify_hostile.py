"""Hostile catalogues and command lines for `crosspromo classify` (and `tags`), and hostile arm
descriptions for `validate`.

Row cases: one bad row beside twelve good ones; the command exits 0, names `FILE:LINE:` and
the field, and trains on the twelve good rows (none lost). File cases: nothing in the file can
be read, or too little is usable; the command exits non-zero with an `error:` line naming the
file (and line), after the bad rows are reported. No case prints a traceback.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.spec import MAX_DESCRIPTION_CHARS
from tests.hostile.conftest import assert_names, assert_no_traceback
from tests.samples import BANDIT_YAML

runner = CliRunner()
GOOD = [
    ("Guitar chords for beginners", "music"), ("Piano lessons for adults", "music"),
    ("吉他弹唱入门", "music"), ("钢琴零基础", "music"), ("Choir rehearsal on Thursdays", "music"),
    ("Drum grooves and rhythm", "music"),
    ("Python for beginners", "programming"), ("JavaScript web development", "programming"),
    ("Python 编程入门", "programming"), ("Java 后端开发", "programming"), ("SQL in a weekend", "programming"),
    ("Git for teams", "programming"),
]
GOOD_YAML = "".join(f'- {{text: "{t}", topics: [{topic}]}}\n' for t, topic in GOOD)
GOOD_CSV = "text,topics\n" + "".join(f"{t},{topic}\n" for t, topic in GOOD)
NEXT = len(GOOD) + 1  # the line of a row appended to the YAML file
NEXT_CSV = len(GOOD) + 2  # the CSV file has a header line
TOPICS_17 = ", ".join(f"t{i}" for i in range(17))
LAUGHS = "".join(f"- &a{i} [{', '.join([f'*a{i - 1}'] * 9) if i else 'lol'}]\n" for i in range(10))

# (id, file name, content, what the message must name)
BAD_ROWS: list[tuple[str, str, str | bytes, list[str]]] = [
    ("yaml-empty-text", "c.yaml", GOOD_YAML + '- {text: "", topics: [music]}\n', [f":{NEXT}: text", "empty"]),
    ("yaml-blank-text", "c.yaml", GOOD_YAML + '- {text: "   ", topics: [music]}\n', [f":{NEXT}: text", "blank"]),
    ("yaml-no-text", "c.yaml", GOOD_YAML + "- {topics: [music]}\n", [f":{NEXT}: text", "missing"]),
    ("yaml-null-text", "c.yaml", GOOD_YAML + "- {text: null, topics: [music]}\n", [f":{NEXT}: text", "missing"]),
    ("yaml-number-text", "c.yaml", GOOD_YAML + "- {text: 42, topics: [music]}\n", [f":{NEXT}: text", "a number"]),
    ("yaml-list-text", "c.yaml", GOOD_YAML + "- {text: [a, b], topics: [music]}\n", [f":{NEXT}: text", "a list"]),
    ("yaml-mapping-text", "c.yaml", GOOD_YAML + "- {text: {a: 1}, topics: [music]}\n",
     [f":{NEXT}: text", "a mapping"]),
    ("yaml-bad-date-text", "c.yaml", GOOD_YAML + "- {text: 2024-13-01, topics: [music]}\n",
     [f":{NEXT}: text", "timestamp"]),
    ("yaml-lone-surrogate", "c.yaml", GOOD_YAML + '- {text: "bad \\ud800 text", topics: [music]}\n',
     [f":{NEXT}: text", "UTF-8"]),
    ("yaml-text-too-long", "c.yaml", GOOD_YAML + f'- {{text: "{"x" * (MAX_DESCRIPTION_CHARS + 1)}", topics: [a]}}\n',
     [f":{NEXT}: text", "longer than 4,000"]),
    ("yaml-same-text-again", "c.yaml", GOOD_YAML + '- {text: "Git for teams", topics: [music]}\n',
     [f":{NEXT}: text", "same text as line 12"]),
    ("yaml-no-topics", "c.yaml", GOOD_YAML + '- {text: "Violin"}\n', [f":{NEXT}: topics", "at least one topic"]),
    ("yaml-empty-topics", "c.yaml", GOOD_YAML + '- {text: "Violin", topics: []}\n', [f":{NEXT}: topics"]),
    ("yaml-separators-only", "c.yaml", GOOD_YAML + '- {text: "Violin", topics: ";;"}\n', [f":{NEXT}: topics"]),
    ("yaml-topic-not-a-name", "c.yaml", GOOD_YAML + '- {text: "Violin", topics: [Art Training]}\n',
     [f":{NEXT}: topics[0]", "not a topic name"]),
    ("yaml-topics-with-commas", "c.yaml", GOOD_YAML + '- {text: "Violin", topics: "music, art"}\n',
     [f":{NEXT}: topics[0]", "separate topics with ';'"]),
    ("yaml-topic-a-number", "c.yaml", GOOD_YAML + '- {text: "Violin", topics: [7]}\n',
     [f":{NEXT}: topics[0]", "a number"]),
    ("yaml-topic-a-list", "c.yaml", GOOD_YAML + '- {text: "Violin", topics: [[music]]}\n',
     [f":{NEXT}: topics[0]", "a list"]),
    ("yaml-topics-a-mapping", "c.yaml", GOOD_YAML + '- {text: "Violin", topics: {music: 1}}\n',
     [f":{NEXT}: topics", "a mapping"]),
    ("yaml-too-many-topics", "c.yaml", GOOD_YAML + f'- {{text: "Violin", topics: [{TOPICS_17}]}}\n',
     [f":{NEXT}: topics", "more than 16"]),
    ("yaml-unknown-field", "c.yaml", GOOD_YAML + '- {text: "Violin", topics: [music], tpoics: [x]}\n',
     [f":{NEXT}: 'tpoics'", "unknown field"]),
    ("yaml-duplicate-key", "c.yaml", GOOD_YAML + '- {text: "Violin", text: "Viola", topics: [music]}\n',
     [f":{NEXT}: text", "duplicate"]),
    ("yaml-number-key", "c.yaml", GOOD_YAML + '- {1: "Violin", topics: [music]}\n', [f":{NEXT}:", "keys must be text"]),
    ("yaml-merge-key", "c.yaml", GOOD_YAML + '- {<<: {text: "Violin"}, topics: [music]}\n', [f":{NEXT}:", "merge"]),
    ("yaml-row-a-scalar", "c.yaml", GOOD_YAML + "- just some text\n", [f":{NEXT}:", "expected a mapping"]),
    ("yaml-row-a-list", "c.yaml", GOOD_YAML + "- [Violin, music]\n", [f":{NEXT}:", "expected a mapping"]),
    ("yaml-alias-bomb-rows", "c.yaml", LAUGHS + GOOD_YAML, [":1:", ":10:", "expected a mapping"]),
    ("csv-empty-text", "c.csv", GOOD_CSV + ",music\n", [f":{NEXT_CSV}: text", "empty"]),
    ("csv-no-topics", "c.csv", GOOD_CSV + "Violin,\n", [f":{NEXT_CSV}: topics", "at least one topic"]),
    ("csv-too-many-fields", "c.csv", GOOD_CSV + "Violin,music,extra\n", [f":{NEXT_CSV}:", "3 fields"]),
    ("csv-too-few-fields", "c.csv", GOOD_CSV + "Violin\n", [f":{NEXT_CSV}:", "1 fields"]),
    ("csv-nul-in-text", "c.csv", GOOD_CSV + "Vio\x00lin,music\n", [f":{NEXT_CSV}: text", "NUL"]),
    ("csv-not-utf8", "c.csv", GOOD_CSV.encode() + b"Vio\xfflin,music\n", [f":{NEXT_CSV}:", "UTF-8"]),
    ("csv-topic-not-a-name", "c.csv", GOOD_CSV + "Violin,Music!\n", [f":{NEXT_CSV}: topics[0]", "not a topic name"]),
    ("csv-unclosed-quote-last", "c.csv", GOOD_CSV + '"Violin,music\n', [f":{NEXT_CSV}:"]),
]


def classify(path: Path, *extra: str) -> object:
    return runner.invoke(app, ["classify", "--catalogue", str(path), "--folds", "3", "--format", "json", *extra])


@pytest.mark.parametrize(("name", "content", "places"), [c[1:] for c in BAD_ROWS], ids=[c[0] for c in BAD_ROWS])
def test_a_bad_row_is_reported_by_line_and_skipped_and_the_good_rows_train(
        tmp_path: Path, name: str, content: str | bytes, places: list[str]) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    started = time.perf_counter()
    result = classify(path)
    assert time.perf_counter() - started < 60  # the alias bomb is never expanded
    assert_no_traceback(result.output)  # type: ignore[attr-defined]
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert_names(result.stderr, *(str(path) + p if p.startswith(":") else p for p in places))  # type: ignore[attr-defined]
    data = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert data["rows"] == len(GOOD) and data["skipped_count"] >= 1
    assert set(data["per_topic"]) == {"music", "programming"}


def deep(levels: int) -> str:
    return "[" * levels + "x" + "]" * levels + "\n"


# (id, file name or None for a path that is not there, content, extra args, exit code, what the message names)
BAD_FILES: list[tuple[str, str | None, str | bytes, list[str], int, list[str]]] = [
    ("missing-file", None, "", [], 2, ["--catalogue", "not there"]),
    ("unknown-suffix", "c.txt", GOOD_CSV, [], 1, ["c.txt", "unknown catalogue format", ".csv, .yaml or .yml"]),
    ("yaml-a-mapping", "c.yaml", "text: x\ntopics: [a]\n", [], 1, ["c.yaml:1:", "expected a list of rows"]),
    ("yaml-a-scalar", "c.yaml", "hello\n", [], 1, ["c.yaml:1:", "expected a list of rows"]),
    ("yaml-empty", "c.yaml", "", [], 1, ["c.yaml", "empty"]),
    ("yaml-comments-only", "c.yaml", "# nothing\n", [], 1, ["c.yaml", "empty"]),
    ("yaml-syntax-error", "c.yaml", GOOD_YAML + '- {text: "x", topics: [a\n', [], 1, ["c.yaml:14:", "invalid YAML"]),
    ("yaml-tab-indent", "c.yaml", GOOD_YAML + "- text: x\n\ttopics: [a]\n", [], 1, ["c.yaml:14:", "invalid YAML"]),
    ("yaml-nul", "c.yaml", GOOD_YAML + '- {text: "a\x00b", topics: [a]}\n', [], 1, ["c.yaml:13:", "control character"]),
    ("yaml-not-utf8", "c.yaml", GOOD_YAML.encode() + b'- {text: "\xff", topics: [a]}\n', [], 1,
     ["c.yaml:13:", "not UTF-8"]),
    ("yaml-nested-too-deep", "c.yaml", deep(200), [], 1, ["c.yaml:1:", "nested deeper"]),
    ("csv-no-topics-column", "c.csv", "text\nViolin\n", [], 1, ["c.csv:1:", "no column 'topics'"]),
    ("csv-unknown-column", "c.csv", "text,topics,id\nViolin,music,1\n", [], 1, ["c.csv:1:", "unknown column 'id'"]),
    ("csv-column-twice", "c.csv", "text,topics,text\n", [], 1, ["c.csv:1:", "more than once"]),
    ("csv-header-only", "c.csv", "text,topics\n", [], 1, ["c.csv", "0 usable row(s)"]),
    ("all-rows-bad", "c.csv", "text,topics\n,music\nViolin,\n", [], 1, ["c.csv:2: text", "c.csv:3: topics",
                                                                        "0 usable row(s)"]),
    ("too-few-rows", "c.csv", "text,topics\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(9)), [], 1,
     ["9 usable row(s)", "at least 10"]),
    ("one-topic-only", "c.csv", "text,topics\n" + "".join(f"text {i},music\n" for i in range(12)), [], 1,
     ["one topic 'music'", "at least two topics"]),
    ("folds-beyond-rows", "c.yaml", GOOD_YAML, ["--folds", "7"], 1, ["at least 14", "--folds 7"]),
    ("folds-one", "c.yaml", GOOD_YAML, ["--folds", "1"], 2, ["--folds"]),
    ("folds-huge", "c.yaml", GOOD_YAML, ["--folds", "1000"], 2, ["--folds"]),
    ("folds-not-a-number", "c.yaml", GOOD_YAML, ["--folds", "five"], 2, ["--folds"]),
    ("negative-seed", "c.yaml", GOOD_YAML, ["--seed", "-1"], 2, ["--seed"]),
    ("bad-format", "c.yaml", GOOD_YAML, ["--format", "xml"], 2, ["--format"]),
    ("write-tags-store-is-a-directory", "c.yaml", GOOD_YAML, ["--write-tags", "--db", "sqlite:///{tmp}"], 5,
     ["store"]),
]


@pytest.mark.parametrize(("name", "content", "extra", "code", "places"), [c[1:] for c in BAD_FILES],
                         ids=[c[0] for c in BAD_FILES])
def test_a_catalogue_nothing_can_be_trained_on_is_an_error_naming_the_file(
        tmp_path: Path, name: str | None, content: str | bytes, extra: list[str], code: int,
        places: list[str]) -> None:
    path = tmp_path / (name or "missing.yaml")
    if name is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    args = ["classify", "--catalogue", str(path), *[a.replace("{tmp}", str(tmp_path)) for a in extra]]
    result = runner.invoke(app, args)
    assert_no_traceback(result.output)  # type: ignore[attr-defined]
    assert result.exit_code == code, result.output  # type: ignore[attr-defined]
    assert_names(result.output, *places)  # type: ignore[attr-defined]
    assert result.stdout == ""  # type: ignore[attr-defined]


def test_a_catalogue_larger_than_the_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    with path.open("wb") as fh:
        fh.truncate(33 * 1024 * 1024)  # sparse: nothing is written, nothing should be read
    result = runner.invoke(app, ["classify", "--catalogue", str(path)])
    assert result.exit_code == 1 and "larger than 33,554,432 bytes" in result.output  # type: ignore[attr-defined]


def test_a_catalogue_that_is_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["classify", "--catalogue", str(tmp_path)])
    assert_no_traceback(result.output)  # type: ignore[attr-defined]
    assert result.exit_code == 2 and "--catalogue" in result.output  # type: ignore[attr-defined]


@pytest.mark.parametrize(("args", "code", "places"), [
    (["tags", "nope"], 1, ["unknown experiment 'nope'", "hint:"]),
    (["tags", "--format", "xml"], 2, ["--format"]),
    (["tags", "ch\x00annels"], 2, ["NUL"]),
])
def test_bad_tags_commands(tmp_path: Path, args: list[str], code: int, places: list[str]) -> None:
    result = runner.invoke(app, [*args, "--db", f"sqlite:///{tmp_path}/s.db"])
    assert_no_traceback(result.output)  # type: ignore[attr-defined]
    assert result.exit_code == code, result.output  # type: ignore[attr-defined]
    assert_names(result.output, *places)  # type: ignore[attr-defined]


ARM = "  - {key: by-sms, campaign: c, partner: music, channel: sms}"

# (id, description as written in YAML, what the message must name besides the place)
BAD_DESCRIPTIONS: list[tuple[str, str, str]] = [
    ("blank", '"  "', "blank"),
    ("empty", '""', "blank"),
    ("too-long", "x" * (MAX_DESCRIPTION_CHARS + 1), "at most 4000 characters"),
    ("lone-surrogate", '"\\udc80"', "UTF-8"),
    ("a-list", "[a, b]", "string"),
    ("a-number", "42", "string"),
]


@pytest.mark.parametrize(("value", "message"), [c[1:] for c in BAD_DESCRIPTIONS], ids=[c[0] for c in BAD_DESCRIPTIONS])
def test_a_bad_arm_description_fails_validate_at_its_place(tmp_path: Path, value: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BANDIT_YAML.replace(ARM, ARM[:-1] + f", description: {value}}}"), encoding="utf-8")
    result = runner.invoke(app, ["validate", str(path)])
    assert_no_traceback(result.output)
    assert result.exit_code == 2, result.output
    assert_names(result.output, "bad.yaml:13:", "arms[2].description", message)
