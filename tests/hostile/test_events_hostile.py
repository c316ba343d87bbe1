"""Hostile events: JSONL, CSV and stdin fed to `crosspromo ingest` as a user would.

Each row puts one kind of bad input between good rows (two before, two after) and asserts the
exit code, that the message names the line (and the field), that no traceback is printed, and
that every good row is stored. Property tests check that no bytes and no JSON value make the
event parser raise anything but `EventError`.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from engine.cli import app
from engine.events import COLUMNS, Event, EventError, EventFileError, parse_event, read_stream
from tests.hostile.conftest import assert_names, assert_no_traceback
from tests.samples import AB_YAML, REPO, REVENUE_YAML, write_yaml

runner = CliRunner()
GOOD_IDS = frozenset({"good-a", "good-b", "good-c", "good-d"})


def _json(**event: Any) -> bytes:
    return json.dumps(event).encode()


GOOD_JSONL = [
    _json(event_id="good-a", type="exposure", experiment="landing", unit="g1", arm="control"),
    _json(event_id="good-b", experiment="landing", unit="u1"),
    _json(event_id="good-c", type="exposure", experiment="landing", unit="g2", arm="curated"),
    _json(event_id="good-d", experiment="landing", unit="u2"),
]
CSV_HEADER = b"event_id,type,experiment,unit,decision_id,arm,value,ts"
GOOD_CSV = [b"good-a,exposure,landing,g1,,control,,", b"good-b,conversion,landing,u1,,,,",
            b"good-c,exposure,landing,g2,,curated,,", b"good-d,conversion,landing,u2,,,,"]


def conv(**fields: Any) -> bytes:
    """A conversion line of `landing` for unit u3 (exposed), with `fields` changed."""
    return _json(**{"event_id": "bad", "experiment": "landing", "unit": "u3", **fields})


def raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class Case:
    """`bad` goes on line 3 of a JSONL file, line 4 of a CSV one (after the header); `@D@` in it is
    the decision id of unit u3, `@ARM@` the arm it was not served."""

    id: str
    fmt: str  # jsonl, csv, or stdin-jsonl / stdin-csv (fed to `ingest -`)
    bad: bytes
    names: tuple[str, ...] = ()
    exit: int = 0
    rejected: int = 1
    duplicates: int = 0
    stored: frozenset[str] = GOOD_IDS
    args: tuple[str, ...] = ()
    whole: Any = None  # a function of the file's bytes, for cases about the whole file
    suffix: str = ""

    @property
    def line(self) -> int:
        return 4 if self.fmt.endswith("csv") else 3


NUL, SURROGATE = "a\u0000b", "a\\ud800b"  # the surrogate as a JSON escape: valid JSON, not storable text
DEEP = 100_000

JSONL_CASES = [
    Case("invalid-json", "jsonl", b'{"event_id": "bad", ', ("malformed JSON",)),
    Case("json-array-line", "jsonl", b'[1, 2, 3]', ("JSON object", "array")),
    Case("json-string-line", "jsonl", b'"hello"', ("JSON object", "string")),
    Case("json-number-line", "jsonl", b'42', ("JSON object", "number")),
    Case("json-null-line", "jsonl", b'null', ("JSON object", "null")),
    Case("json-true-line", "jsonl", b'true', ("JSON object", "boolean")),
    Case("nan-value", "jsonl", b'{"event_id": "bad", "experiment": "landing", "unit": "u3", "value": NaN}', ("NaN",)),
    Case("infinity-value", "jsonl", b'{"event_id": "bad", "experiment": "landing", "unit": "u3", "value": Infinity}',
         ("Infinity",)),
    Case("minus-infinity-value", "jsonl",
         b'{"event_id": "bad", "experiment": "landing", "unit": "u3", "value": -Infinity}', ("-Infinity",)),
    Case("1e999-value", "jsonl", b'{"event_id": "bad", "experiment": "landing", "unit": "u3", "value": 1e999}',
         ("value", "finite")),
    Case("negative-value", "jsonl", conv(value=-1), ("value", ">= 0")),
    Case("bool-value", "jsonl", conv(value=True), ("value", "boolean")),
    Case("huge-int-value", "jsonl", conv(value=10**40), ("value", "<= 1e+12")),
    Case("5000-digit-int-value", "jsonl", b'{"event_id": "bad", "experiment": "landing", "unit": "u3", "value": '
         + b"9" * 5000 + b"}", ("value",)),
    Case("string-for-number", "jsonl", conv(value="abc"), ("value", "number")),
    Case("object-for-number", "jsonl", conv(value={"n": 1}), ("value", "number")),
    Case("number-for-event-id", "jsonl", conv(event_id=5), ("event_id",)),
    Case("list-for-experiment", "jsonl", conv(experiment=["landing"]), ("experiment",)),
    Case("missing-event-id", "jsonl", _json(experiment="landing", unit="u3"), ("event_id: required",)),
    Case("empty-event-id", "jsonl", conv(event_id=""), ("event_id",)),
    Case("long-event-id", "jsonl", conv(event_id="e" * 300), ("event_id", "256")),
    Case("long-experiment", "jsonl", conv(experiment="x" * 200), ("experiment", "128")),
    Case("long-unit", "jsonl", conv(unit="u" * 300), ("unit", "256")),
    Case("long-arm", "jsonl", conv(arm="a" * 200), ("arm", "128")),
    Case("unknown-field", "jsonl", conv(colour="red"), ("'colour'", "unknown field")),
    Case("unknown-experiment", "jsonl", conv(experiment="ghost"), ("experiment", "unknown experiment")),
    Case("unknown-metric", "jsonl", conv(metric="clicks"), ("metric: 'clicks' is not a metric of 'landing'",
                                                            "metrics: purchase")),
    Case("number-for-metric", "jsonl", conv(metric=7), ("metric",)),
    Case("long-metric", "jsonl", conv(metric="m" * 200), ("metric", "128")),
    Case("nul-in-metric", "jsonl", conv(metric="pur\u0000chase"), ("metric",)),
    Case("negative-value-binary-metric", "jsonl", conv(value=-2.5, metric="purchase"),
         ("value: must be >= 0", "does not declare allow_negative")),
    Case("revenue-without-value", "jsonl", _json(event_id="bad", experiment="bundle", unit="r1"),
         ("value: required for the revenue metric 'revenue'",)),
    Case("unknown-arm", "jsonl", _json(event_id="bad", type="exposure", experiment="landing", unit="g9", arm="nope"),
         ("arm", "'nope'")),
    Case("bad-type", "jsonl", conv(type="click"), ("type",)),
    Case("ts-not-a-date", "jsonl", conv(ts="yesterday"), ("ts",)),
    Case("ts-month-13", "jsonl", conv(ts="2026-13-01T00:00:00Z"), ("ts",)),
    Case("ts-overflows-utc", "jsonl", conv(ts="9999-12-31T23:59:59-01:00"), ("ts", "9999-12-31")),
    Case("ts-underflows-utc", "jsonl", conv(ts="0001-01-01T00:00:00+01:00"), ("ts", "1970-01-01")),
    Case("ts-before-1970", "jsonl", conv(ts="1969-07-20T20:17:00Z"), ("ts", "1970-01-01")),
    Case("ts-boolean", "jsonl", conv(ts=True), ("ts",)),
    *[Case(f"nul-in-{name}", "jsonl", conv(**{"type": "exposure", "unit": "g9", "arm": "control", name: NUL}),
           (name, "NUL")) for name in ("event_id", "experiment", "unit", "decision_id", "arm")],
    *[Case(f"lone-surrogate-in-{name}", "jsonl",
           conv(**{"type": "exposure", "unit": "g9", "arm": "control", name: "@S@"}).replace(
               b"@S@", SURROGATE.encode()),
           (name, "lone surrogate")) for name in ("event_id", "experiment", "unit", "decision_id", "arm")],
    Case("invalid-utf8-line", "jsonl", b"\xff\xfe garbage", ("not valid UTF-8",)),
    Case("invalid-utf8-in-a-string", "jsonl", conv(unit="@").replace(b"@", b"\xc3\x28"), ("not valid UTF-8",)),
    Case("trailing-garbage", "jsonl", conv() + b" xyz", ("malformed JSON",)),
    Case("two-objects-on-a-line", "jsonl", conv() + conv(event_id="bad2"), ("malformed JSON",)),
    Case("deep-nesting-line", "jsonl", b"[" * DEEP + b"]" * DEEP, ("malformed JSON",)),
    Case("deep-nesting-in-a-field", "jsonl", conv(unit="@").replace(b'"@"', b"[" * DEEP + b"]" * DEEP),
         ("malformed JSON",)),
    Case("10mb-line", "jsonl", conv(unit="u" * 10_000_000), ("longer than",)),
    Case("500kb-field", "jsonl", conv(event_id="e" * 500_000), ("event_id", "256")),
    Case("unknown-decision", "jsonl", conv(unit=None, decision_id="no-such-decision"),
         ("decision_id", "no-such-decision")),
    Case("unit-never-exposed", "jsonl", conv(unit="stranger"), ("unit", "stranger")),
    Case("revenue-without-value", "jsonl", _json(event_id="bad", experiment="bundle", unit="r1"),
         ("value", "revenue")),
    Case("exposure-without-arm", "jsonl", _json(event_id="bad", type="exposure", experiment="landing", unit="g9"),
         ("arm", "required")),
    Case("exposure-without-unit", "jsonl", _json(event_id="bad", type="exposure", experiment="landing", arm="control"),
         ("unit", "required")),
    Case("conversion-without-unit-or-decision", "jsonl", _json(event_id="bad", experiment="landing"),
         ("decision_id or unit",)),
    Case("arm-not-served", "jsonl", conv(unit=None, decision_id="@D@", arm="@ARM@"), ("arm", "served")),
    Case("exposure-reuses-a-decision", "jsonl", _json(event_id="bad", type="exposure", experiment="landing",
                                                       unit="g9", arm="control", decision_id="@D@"),
         ("decision_id", "already logged")),
    Case("duplicate-event-id-in-file", "jsonl", GOOD_JSONL[0], (), rejected=0, duplicates=1),
    Case("blank-and-whitespace-lines", "jsonl", b"\n   \n\t", (), rejected=0),
    Case("bom-and-crlf", "jsonl", b"", (), rejected=0, whole=lambda b: b"\xef\xbb\xbf" + b.replace(b"\n", b"\r\n")),
    Case("txt-suffix-sniffed", "jsonl", conv(value=-1), ("value",), suffix=".txt"),
]

CSV_CASES = [
    Case("csv-spreadsheet-bom-crlf", "csv", b"", (), rejected=0,
         whole=lambda b: b"\xef\xbb\xbf" + b.replace(b"\n", b"\r\n") + b"\r\n"),
    Case("csv-row-of-commas", "csv", b",,,,,,,", (), rejected=0),
    Case("csv-blank-lines", "csv", b"\n\n", (), rejected=0),
    Case("csv-too-few-fields", "csv", b"bad,conversion,landing", ("3 fields", "8")),
    Case("csv-too-many-fields", "csv", b"bad,conversion,landing,u3,,,,,extra", ("9 fields", "8")),
    Case("csv-invalid-utf8", "csv", b"bad,conversion,landing,u\xff3,,,,", ("not valid UTF-8",)),
    Case("csv-nul-in-unit", "csv", b"bad,conversion,landing,u\x003,,,,", ("unit", "NUL")),
    Case("csv-nan-value", "csv", b"bad,conversion,landing,u3,,,NaN,", ("value", "finite")),
    Case("csv-negative-value", "csv", b"bad,conversion,landing,u3,,,-5,", ("value", ">= 0")),
    Case("csv-text-value", "csv", b"bad,conversion,landing,u3,,,abc,", ("value", "number")),
    Case("csv-bad-ts", "csv", b"bad,conversion,landing,u3,,,,not-a-date", ("ts",)),
    Case("csv-ts-overflows-utc", "csv", b"bad,conversion,landing,u3,,,,9999-12-31T23:59:59-01:00", ("ts",)),
    Case("csv-unknown-experiment", "csv", b"bad,conversion,ghost,u3,,,,", ("experiment", "unknown")),
    Case("csv-empty-event-id", "csv", b",conversion,landing,u3,,,,", ("event_id",)),
    Case("csv-bad-type", "csv", b"bad,click,landing,u3,,,,", ("type",)),
    Case("csv-field-over-csv-limit", "csv", b"bad,conversion,landing," + b"u" * 200_000 + b",,,,",
         ("malformed CSV",)),
    Case("csv-10mb-line", "csv", b"bad,conversion,landing," + b"u" * 10_000_000 + b",,,,", ("longer than",)),
    Case("csv-header-only", "csv", b"", ("0 accepted",), rejected=0, stored=frozenset(),
         whole=lambda b: CSV_HEADER + b"\r\n"),
    Case("csv-empty-file", "csv", b"", ("0 accepted",), rejected=0, stored=frozenset(), whole=lambda b: b""),
    Case("csv-duplicate-header", "csv", b"", (":1:", "'unit'", "more than once"), exit=1, rejected=0,
         stored=frozenset(), whole=lambda b: b.replace(b",decision_id,", b",unit,", 1)),
    Case("csv-unknown-column", "csv", b"", (":1:", "unknown column 'colour'"), exit=1, rejected=0,
         stored=frozenset(), whole=lambda b: b.replace(b",ts\n", b",colour\n", 1)),
    Case("csv-no-event-id-column", "csv", b"", (":1:", "'event_id'"), exit=1, rejected=0, stored=frozenset(),
         whole=lambda b: b"experiment,unit\nlanding,u1\n"),
    Case("csv-value-in-unnamed-column", "csv", b"bad,conversion,landing,u3,,,,,oops", ("column 9",),
         whole=lambda b: b.replace(b",\n", b",,\n").replace(b",ts\n", b",ts,\n", 1)),
]

STDIN_CASES = [
    Case("stdin-jsonl-bad-line", "stdin-jsonl", conv(value=-1), ("<stdin>:3", "value")),
    Case("stdin-csv-sniffed", "stdin-csv", b"bad,conversion,ghost,u3,,,,", ("<stdin>:4", "experiment")),
    Case("stdin-csv-input-format", "stdin-csv", b"bad,conversion,landing,u3,,,-1,", ("<stdin>:4", "value"),
         args=("--input-format", "csv")),
    Case("stdin-jsonl-bom-sniffed", "stdin-jsonl", conv(ts="9999-12-31T23:59:59-01:00"), ("<stdin>:3", "ts"),
         whole=lambda b: b"\xef\xbb\xbf" + b),
    Case("stdin-empty", "stdin-jsonl", b"", ("0 accepted",), rejected=0, stored=frozenset(), whole=lambda b: b""),
    Case("stdin-invalid-utf8", "stdin-jsonl", b"\x80\x81", ("<stdin>:3", "not valid UTF-8")),
    Case("stdin-deep-nesting", "stdin-jsonl", b"{" * DEEP, ("<stdin>:3", "malformed JSON")),
]

EXIT_CASES = [
    Case("strict-with-one-bad-row", "jsonl", conv(value=-1), ("value", "--strict"), exit=1, args=("--strict",)),
    Case("strict-all-good", "jsonl", GOOD_JSONL[0], (), rejected=0, duplicates=1, args=("--strict",)),
]


@dataclass
class Template:
    """A store with `landing` and `bundle` applied and units u1..u3 (landing) and r1 (bundle) decided."""

    db: Path
    decision: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    root = tmp_path_factory.mktemp("template")
    write_yaml(root / "experiments", "landing.yaml", AB_YAML)
    write_yaml(root / "experiments", "bundle.yaml", REVENUE_YAML)
    db = root / "store.db"
    url = f"sqlite:///{db}"
    assert runner.invoke(app, ["apply", str(root / "experiments"), "--db", url]).exit_code == 0
    t = Template(db)
    for experiment, unit in [("landing", "u1"), ("landing", "u2"), ("landing", "u3"), ("bundle", "r1")]:
        result = runner.invoke(app, ["decide", experiment, "--unit", unit, "--db", url, "--format", "json"])
        assert result.exit_code == 0, result.output
        t.decision[unit] = json.loads(result.stdout)
    return t


@pytest.fixture
def store(template: Template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A copy of the template store, in a working directory of its own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CROSSPROMO_DATABASE_URL", raising=False)
    for part in template.db.parent.glob(template.db.name + "*"):
        shutil.copy(part, tmp_path / part.name)
    return f"sqlite:///{tmp_path / template.db.name}"


def stored_event_ids(url: str) -> set[str]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return {row[0] for row in conn.execute("SELECT event_id FROM events")}


def build(case: Case, template: Template) -> bytes:
    u3 = template.decision["u3"]
    bad = case.bad.replace(b"@D@", u3["decision_id"].encode()).replace(
        b"@ARM@", b"curated" if u3["arm"] == "control" else b"control")
    lines = ([CSV_HEADER, *GOOD_CSV[:2], bad, *GOOD_CSV[2:]] if case.fmt.endswith("csv")
             else [*GOOD_JSONL[:2], bad, *GOOD_JSONL[2:]])
    data = b"\n".join(lines) + b"\n"
    return case.whole(data) if case.whole else data


def ingest(case: Case, data: bytes, url: str) -> tuple[Any, str]:
    """Run `crosspromo ingest` on the case's file (or stdin); returns the result and the name errors use."""
    if case.fmt.startswith("stdin"):
        return runner.invoke(app, ["ingest", "-", "--db", url, *case.args], input=data), "<stdin>"
    path = Path(f"events{case.suffix or ('.csv' if case.fmt == 'csv' else '.jsonl')}")
    path.write_bytes(data)
    return runner.invoke(app, ["ingest", str(path), "--db", url, *case.args]), path.name


ALL_CASES = JSONL_CASES + CSV_CASES + STDIN_CASES + EXIT_CASES


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_hostile_event_input(case: Case, template: Template, store: str) -> None:
    result, name = ingest(case, build(case, template), store)
    output = result.output
    assert result.exit_code == case.exit, output
    assert_no_traceback(output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if case.rejected:
        assert_names(output, f"{name}:{case.line}:", f"{case.rejected} rejected")
    assert_names(output, *case.names)
    if case.exit == 0:
        assert f"{len(case.stored)} accepted, {case.duplicates} duplicates, {case.rejected} rejected" in output
    assert stored_event_ids(store) == set(case.stored)


def test_a_second_run_counts_every_row_once(template: Template, store: str) -> None:
    data = build(Case("again", "jsonl", conv(value=-1)), template)
    first, _ = ingest(Case("again", "jsonl", b""), data, store)
    again, _ = ingest(Case("again", "jsonl", b""), data, store)
    assert "4 accepted, 0 duplicates, 1 rejected" in first.output
    assert "0 accepted, 4 duplicates, 1 rejected" in again.output and again.exit_code == 0
    assert stored_event_ids(store) == GOOD_IDS


def test_every_row_rejected_exits_1(store: str) -> None:
    Path("bad.jsonl").write_bytes(conv(value=-1) + b"\n" + b"not json\n")
    result = runner.invoke(app, ["ingest", "bad.jsonl", "--db", store])
    assert result.exit_code == 1
    assert_names(result.output, "bad.jsonl:1: value", "bad.jsonl:2: malformed JSON", "nothing accepted")
    assert_no_traceback(result.output)


def test_rejects_go_to_a_file_as_jsonl(template: Template, store: str) -> None:
    Path("ev.jsonl").write_bytes(build(Case("r", "jsonl", conv(ts="9999-12-31T23:59:59-01:00")), template))
    result = runner.invoke(app, ["ingest", "ev.jsonl", "--db", store, "--rejects", "rejects.jsonl",
                                 "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "ev.jsonl:3" not in result.stderr
    [reject] = [json.loads(line) for line in Path("rejects.jsonl").read_text().splitlines()]
    assert reject["line"] == 3 and reject["error"].startswith("ts: ")
    assert json.loads(result.stdout)["rejected_count"] == 1
    assert stored_event_ids(store) == GOOD_IDS


def test_a_rejects_file_that_cannot_be_written_names_the_option(template: Template, store: str) -> None:
    Path("ev.jsonl").write_bytes(build(Case("r", "jsonl", conv(value=-1)), template))
    result = runner.invoke(app, ["ingest", "ev.jsonl", "--db", store, "--rejects", "no/such/dir/r.jsonl"])
    assert result.exit_code == 1
    assert_names(result.output, "--rejects", "no/such/dir/r.jsonl")
    assert_no_traceback(result.output)


def test_rejections_stream_in_line_order_and_the_summary_keeps_only_the_first(template: Template, store: str
                                                                              ) -> None:
    """1M bad rows once took 340 MB: the summary now keeps 100 and counts the rest."""
    from engine.api import Engine

    lines = [GOOD_JSONL[0]] + [conv(event_id=f"bad{i}", value=-1) if i % 2 else b"oops" for i in range(1200)]
    Path("many.jsonl").write_bytes(b"\n".join([*lines, GOOD_JSONL[3]]) + b"\n")
    seen: list[int] = []
    with Engine.open(store) as engine:
        summary = engine.ingest_file(Path("many.jsonl"), on_reject=lambda line, _: seen.append(line))
    assert seen == list(range(2, 1202))
    assert summary.rejected_count == 1200 and len(summary.rejected) == 100 and summary.rejected[0][0] == 2
    assert summary.to_dict()["rejected_count"] == 1200 and summary.accepted == 2


def test_a_real_pipe_through_dev_stdin(template: Template, store: str) -> None:
    """`cat ev.jsonl | crosspromo ingest /dev/stdin` once counted the lines and read nothing."""
    data = build(Case("pipe", "jsonl", conv(value=-1)), template)
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "ingest", "/dev/stdin", "--db", store],
                          input=data, capture_output=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"4 accepted, 0 duplicates, 1 rejected" in proc.stdout
    assert b"/dev/stdin:3: value" in proc.stderr
    assert stored_event_ids(store) == GOOD_IDS


@pytest.mark.parametrize("event", [{"unit": "u\u0000"}, {"arm": "\ud800"}], ids=["nul", "lone-surrogate"])
def test_record_refuses_unstorable_text_naming_the_field(store: str, event: dict[str, str]) -> None:
    payload = json.dumps({"event_id": "r1", "experiment": "landing", "unit": "u1", **event})
    result = runner.invoke(app, ["record", payload, "--db", store])
    assert result.exit_code == 1
    assert_names(result.output, f"{next(iter(event))}: ")
    assert_no_traceback(result.output)


# -- properties: any input gives an event or a clean EventError ------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
EVENT_LIKE = st.dictionaries(st.sampled_from(sorted(COLUMNS) + ["extra"]),
                             JSON_VALUES | st.sampled_from(["", "landing", "exposure", "9999-12-31T23:59:59-01:00"]),
                             max_size=9)


def parsed_or_clean_error(raw_event: Any) -> None:
    try:
        assert isinstance(parse_event(raw_event), Event)
    except EventError as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES | EVENT_LIKE)
def test_parse_event_gives_an_event_or_an_event_error(value: Any) -> None:
    parsed_or_clean_error(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.lists(st.sampled_from(
    [b"{", b"}", b"[", b'"', b",", b"\n", b"\r\n", b"\xef\xbb\xbf", b"\xff", b"\x00", b"event_id", b"NaN", b":",
     b"experiment", b"landing", b"1e999", b"\\ud800"]), max_size=40).map(b"".join),
       st.sampled_from([None, "jsonl", "csv"]))
def test_readers_give_rows_or_line_errors_for_any_bytes(data: bytes, fmt: Any) -> None:
    try:
        for row in read_stream(io.BytesIO(data), fmt):
            assert row.line >= 1 and (row.error is None) == (row.data is not None)
            if row.data is not None:
                parsed_or_clean_error(row.data)
    except EventFileError as exc:  # a CSV header that names no usable columns
        assert exc.line >= 1
