"""Hostile social-graph input: JSONL, CSV and stdin fed to `crosspromo ingest-graph`, and
batches posted to `POST /v1/graph/edges`.

Each file case puts one kind of bad row between good ones (two before, two after) and asserts
the exit code, that the message names the line (and the field), that no traceback is printed,
and that every good edge is stored. Each HTTP case asserts the status (a 4xx naming the field or
index, never a 5xx) and, for a batch with a bad edge, that the good ones are stored once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from engine.api import Engine
from engine.cli import EXIT_STORE, app
from engine.graph import EdgeError, parse_edge
from engine.server import MAX_BATCH, ApiKeys, create_app
from tests.hostile.conftest import assert_names, assert_no_traceback

runner = CliRunner()
GOOD = {("a", "b", "share"), ("b", "c", "follow"), ("c", "d", "referral"), ("a", "d", "follow")}


def _json(**edge: Any) -> bytes:
    return json.dumps(edge).encode()


GOOD_JSONL = [_json(source="a", target="b", kind="share"), _json(source="b", target="c", kind="follow", weight=2),
              _json(source="d", target="c", kind="referral"), _json(source="a", target="d", kind="follow")]
CSV_HEADER = b"source,target,kind,weight"
GOOD_CSV = [b"a,b,share,1", b"b,c,follow,2", b"d,c,referral,", b"a,d,follow,0.5"]


def edge(**fields: Any) -> bytes:
    return _json(**{"source": "x", "target": "y", "kind": "share", **fields})


@dataclass(frozen=True)
class Case:
    """`bad` goes on line 3 of a JSONL file, line 4 of a CSV one (after the header)."""

    id: str
    fmt: str  # jsonl, csv, or stdin-jsonl / stdin-csv
    bad: bytes
    names: tuple[str, ...] = ()
    exit: int = 0
    rejected: int = 1
    duplicates: int = 0
    stored: frozenset[tuple[str, str, str]] = frozenset(GOOD)
    header: bytes | None = None  # a CSV header in place of the good one (file-level cases)

    @property
    def line(self) -> int:
        return 4 if self.fmt.endswith("csv") else 3


NUL, SURROGATE = "a\u0000b", "a\\ud800b"
JSONL_CASES = [
    Case("invalid-json", "jsonl", b'{"source": "x", ', ("malformed JSON",)),
    Case("json-array-line", "jsonl", b"[1, 2]", ("JSON object", "array")),
    Case("json-null-line", "jsonl", b"null", ("JSON object", "null")),
    Case("nan-weight", "jsonl", b'{"source": "x", "target": "y", "kind": "share", "weight": NaN}', ("NaN",)),
    Case("infinity-weight", "jsonl", b'{"source": "x", "target": "y", "kind": "share", "weight": Infinity}',
         ("Infinity",)),
    Case("minus-infinity-weight", "jsonl", b'{"source": "x", "target": "y", "kind": "share", "weight": -Infinity}',
         ("Infinity",)),
    Case("1e999-weight", "jsonl", b'{"source": "x", "target": "y", "kind": "share", "weight": 1e999}',
         ("weight", "finite")),
    Case("zero-weight", "jsonl", edge(weight=0), ("weight", "> 0")),
    Case("negative-weight", "jsonl", edge(weight=-1), ("weight", "> 0")),
    Case("bool-weight", "jsonl", edge(weight=True), ("weight", "boolean")),
    Case("string-weight", "jsonl", edge(weight="heavy"), ("weight", "number")),
    Case("object-weight", "jsonl", edge(weight={"w": 1}), ("weight", "number")),
    Case("huge-int-weight", "jsonl", edge(weight=10**40), ("weight", "<=")),
    Case("self-loop", "jsonl", edge(target="x"), ("target", "two different units")),
    Case("missing-source", "jsonl", _json(target="y", kind="share"), ("source: required",)),
    Case("missing-target", "jsonl", _json(source="x", kind="share"), ("target: required",)),
    Case("missing-kind", "jsonl", _json(source="x", target="y"), ("kind: required",)),
    Case("unknown-kind", "jsonl", edge(kind="like"), ("kind", "follow", "share", "referral")),
    Case("kind-wrong-case", "jsonl", edge(kind="Follow"), ("kind",)),
    Case("empty-source", "jsonl", edge(source=""), ("source",)),
    Case("long-target", "jsonl", edge(target="t" * 257), ("target", "256")),
    Case("number-for-source", "jsonl", edge(source=5), ("source",)),
    Case("list-for-target", "jsonl", edge(target=["y"]), ("target",)),
    Case("nul-in-source", "jsonl", edge(source=NUL), ("source", "NUL")),
    Case("lone-surrogate-in-target", "jsonl", edge(target="@S@").replace(b"@S@", SURROGATE.encode()),
         ("target", "lone surrogate")),
    Case("unknown-field", "jsonl", edge(colour="red"), ("'colour'", "unknown field")),
    Case("invalid-utf8-line", "jsonl", b"\xff\xfe garbage", ("not valid UTF-8",)),
    Case("deep-nesting", "jsonl", b"[" * 100_000 + b"]" * 100_000, ("malformed JSON",)),
    Case("10mb-line", "jsonl", edge(source="s" * 10_000_000), ("longer than",)),
    Case("duplicate-of-a-good-edge", "jsonl", GOOD_JSONL[0], (), rejected=0, duplicates=1),
    Case("reversed-duplicate-of-an-undirected-edge", "jsonl", _json(source="b", target="a", kind="share"), (),
         rejected=0, duplicates=1),
]
CSV_CASES = [
    Case("csv-too-few-fields", "csv", b"x,y", ("2 fields", "4")),
    Case("csv-too-many-fields", "csv", b"x,y,share,1,extra", ("5 fields", "4")),
    Case("csv-nan-weight", "csv", b"x,y,share,NaN", ("weight", "finite")),
    Case("csv-text-weight", "csv", b"x,y,share,heavy", ("weight", "number")),
    Case("csv-unknown-kind", "csv", b"x,y,friend,1", ("kind",)),
    Case("csv-self-loop", "csv", b"x,x,follow,1", ("two different units",)),
    Case("csv-empty-source", "csv", b",y,share,1", ("source",)),
    Case("csv-invalid-utf8", "csv", b"x\xff,y,share,1", ("not valid UTF-8",)),
    Case("csv-row-of-commas", "csv", b",,,", (), rejected=0),
    Case("csv-unknown-column", "csv", b"", (":1:", "unknown column 'colour'"), exit=1, rejected=0,
         stored=frozenset(), header=b"source,target,colour,weight"),
    Case("csv-no-kind-column", "csv", b"", (":1:", "'kind'"), exit=1, rejected=0, stored=frozenset(),
         header=b"source,target,weight,"),
    Case("csv-duplicate-column", "csv", b"", (":1:", "more than once"), exit=1, rejected=0, stored=frozenset(),
         header=b"source,target,kind,source"),
]
STDIN_CASES = [
    Case("stdin-jsonl-bad-line", "stdin-jsonl", edge(weight=-1), ("<stdin>:3", "weight")),
    Case("stdin-csv-sniffed", "stdin-csv", b"x,y,like,1", ("<stdin>:4", "kind")),
]
ALL_CASES = JSONL_CASES + CSV_CASES + STDIN_CASES


def build(case: Case) -> bytes:
    if case.fmt.endswith("csv"):
        lines = [case.header or CSV_HEADER, *GOOD_CSV[:2], case.bad, *GOOD_CSV[2:]]
    else:
        lines = [*GOOD_JSONL[:2], case.bad, *GOOD_JSONL[2:]]
    return b"\n".join(lines) + b"\n"


def stored_edges(db: Path) -> set[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        return set(conn.execute("SELECT source, target, kind FROM graph_edges"))


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_hostile_graph_file(case: Case, tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    data = build(case)
    if case.fmt.startswith("stdin"):
        result, name = runner.invoke(app, ["ingest-graph", "-", "--db", f"sqlite:///{db}"], input=data), "<stdin>"
    else:
        path = tmp_path / f"edges.{case.fmt}"
        path.write_bytes(data)
        result, name = runner.invoke(app, ["ingest-graph", str(path), "--db", f"sqlite:///{db}"]), path.name
    output = result.output
    assert result.exit_code == case.exit, output
    assert_no_traceback(output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if case.rejected:
        assert_names(output, f"{name}:{case.line}:", f"{case.rejected} rejected")
    assert_names(output, *case.names)
    if case.exit == 0:
        summary = f"{len(case.stored)} accepted, 0 updated, {case.duplicates} duplicates, {case.rejected} rejected"
        assert summary in output
    assert stored_edges(db) == set(case.stored)


def test_a_file_of_only_bad_rows_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(edge(weight=0) + b"\nnot json\n")
    result = runner.invoke(app, ["ingest-graph", str(path), "--db", f"sqlite:///{tmp_path / 'g.db'}"])
    assert result.exit_code == 1
    assert_names(result.output, "bad.jsonl:1: weight", "bad.jsonl:2: malformed JSON", "nothing accepted")
    assert_no_traceback(result.output)


def test_a_missing_file_and_a_directory_are_refused_naming_them(tmp_path: Path) -> None:
    for target, what in ((tmp_path / "nope.csv", "not there"), (tmp_path, "a directory")):
        result = runner.invoke(app, ["ingest-graph", str(target), "--db", f"sqlite:///{tmp_path / 'g.db'}"])
        assert result.exit_code == 2 and what in result.output
        assert_no_traceback(result.output)


def test_an_unreachable_store_exits_5_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(GOOD_JSONL[0] + b"\n")
    result = runner.invoke(app, ["ingest-graph", str(path), "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none"])
    assert result.exit_code == EXIT_STORE, result.output
    assert_names(result.output, "unreachable")
    assert_no_traceback(result.output)


# -- HTTP ------------------------------------------------------------------------------------

ADMIN, DECIDE = "Bearer graph-admin", "Bearer graph-decide"
PATH = "/v1/graph/edges"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    engine = Engine.open(f"sqlite:///{tmp_path / 'hostile.db'}", seed=0)
    app_ = create_app(engine, ApiKeys(admin="graph-admin", decide="graph-decide"), max_body_bytes=1024 * 1024)
    with TestClient(app_, raise_server_exceptions=False) as c:
        yield c


def raw(value: Any) -> bytes:
    return json.dumps(value).encode()


GOOD_EDGE = {"source": "a", "target": "b", "kind": "share"}
REQUESTS = [
    ("no-key", {"Authorization": ""}, raw({"edges": [GOOD_EDGE]}), 401, ["missing API key"]),
    ("decide-key", {"Authorization": DECIDE}, raw({"edges": [GOOD_EDGE]}), 403, ["admin key"]),
    ("not-json", {}, b"edges", 422, ["not valid JSON"]),
    ("nan-weight", {}, b'{"edges": [{"source": "a", "target": "b", "kind": "share", "weight": NaN}]}', 422,
     ["not valid JSON"]),
    ("body-is-a-list", {}, raw([GOOD_EDGE]), 422, ["body"]),
    ("no-edges-field", {}, raw({"edge": [GOOD_EDGE]}), 422, ["edges"]),
    ("edges-empty", {}, raw({"edges": []}), 422, ["edges"]),
    ("edges-not-a-list", {}, raw({"edges": GOOD_EDGE}), 422, ["edges"]),
    ("edges-too-many", {}, raw({"edges": [GOOD_EDGE] * (MAX_BATCH + 1)}), 422, ["edges", str(MAX_BATCH)]),
    ("extra-field", {}, raw({"edges": [GOOD_EDGE], "colour": 1}), 422, ["colour"]),
    ("body-over-limit", {}, b" " * (1024 * 1024 + 1), 413, ["over"]),
    ("content-length-over-limit", {"Content-Length": str(10**12)}, raw({"edges": [GOOD_EDGE]}), 413, ["over"]),
    ("text-content-type", {"Content-Type": "text/csv"}, b"source,target,kind\na,b,share\n", 415, ["Content-Type"]),
]


@pytest.mark.parametrize(("headers", "body", "status", "places"), [pytest.param(*r[1:], id=r[0]) for r in REQUESTS])
def test_hostile_edge_request_is_refused_with_the_reason(client: TestClient, headers: dict[str, str], body: bytes,
                                                        status: int, places: list[str]) -> None:
    sent = {"Authorization": ADMIN, "Content-Type": "application/json", **headers}
    r = client.post(PATH, content=body, headers={k: v for k, v in sent.items() if v != ""})
    assert r.status_code == status, r.text
    assert_no_traceback(r.text)
    assert_names(r.json()["error"] + r.json().get("hint", ""), *places)


BAD_EDGES = [
    ("not-an-object", "a->b", ["JSON object"]),
    ("null", None, ["JSON object"]),
    ("self-loop", {"source": "a", "target": "a", "kind": "share"}, ["two different units"]),
    ("unknown-kind", {**GOOD_EDGE, "kind": "like"}, ["kind"]),
    ("zero-weight", {**GOOD_EDGE, "source": "z", "weight": 0}, ["weight"]),
    ("weight-int-over-64-bits", {**GOOD_EDGE, "weight": 123456789012345678901234567890}, ["weight"]),
    ("weight-boolean", {**GOOD_EDGE, "weight": False}, ["weight"]),
    ("missing-target", {"source": "a", "kind": "share"}, ["target"]),
    ("long-source", {**GOOD_EDGE, "source": "s" * 300}, ["source", "256"]),
    ("nul-in-target", {**GOOD_EDGE, "target": NUL}, ["target", "NUL"]),
    ("extra-field", {**GOOD_EDGE, "since": "2024"}, ["since"]),
]


@pytest.mark.parametrize(("bad", "places"), [pytest.param(b, p, id=i) for i, b, p in BAD_EDGES])
def test_good_edges_beside_a_bad_one_are_kept_once(client: TestClient, bad: Any, places: list[str]) -> None:
    batch = [GOOD_EDGE, bad, {"source": "c", "target": "b", "kind": "follow", "weight": 2},
             {"source": "b", "target": "a", "kind": "share"}]  # the last is the first, reversed
    r = client.post(PATH, json={"edges": batch}, headers={"Authorization": ADMIN})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [x["index"] for x in answer["rejected"]] == [1], answer
    assert_names(answer["rejected"][0]["error"], *places)
    assert (answer["accepted"], answer["updated"], answer["duplicates"]) == (2, 0, 1)
    again = client.post(PATH, json={"edges": batch}, headers={"Authorization": ADMIN}).json()  # a client's retry
    assert (again["accepted"], again["updated"], again["duplicates"]) == (0, 0, 3)
    engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
    assert engine.store.edge_counts() == {"follow": 1, "share": 1, "referral": 0}


# -- property: any value gives an edge or a clean EdgeError -------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
EDGE_LIKE = st.dictionaries(st.sampled_from(["source", "target", "kind", "weight", "extra"]),
                            JSON_VALUES | st.sampled_from(["a", "b", "follow", "share", "referral", "", "1e999"]),
                            max_size=5)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES | EDGE_LIKE)
def test_parse_edge_gives_an_edge_or_an_edge_error(value: Any) -> None:
    try:
        stored = parse_edge(value)
    except EdgeError as exc:
        assert str(exc)
    else:
        assert stored.source != stored.target and stored.weight > 0
