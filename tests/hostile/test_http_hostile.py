"""Hostile HTTP input: bodies, headers, paths and methods a careless or malicious client sends.

Each row is one kind. It asserts the status (a 4xx naming the field, the index or the header;
never a 5xx, as the store is up), that no traceback reaches the client, and for event batches
that the good events sent beside a bad one are stored and counted exactly once.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from engine.api import Engine
from engine.server import MAX_BATCH, ApiKeys, create_app
from tests.hostile.conftest import assert_names, assert_no_traceback
from tests.samples import AB_YAML, BANDIT_YAML, write_yaml

ADMIN, DECIDE = "Bearer hostile-admin", "Bearer hostile-decide"
DECIDE_PATH, BATCH_PATH, EVENTS_PATH = ("/v1/experiments/landing/decisions", "/v1/experiments/landing/decisions:batch",
                                        "/v1/events")
REPORT_PATH = "/v1/experiments/landing/report"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    engine = Engine.open(f"sqlite:///{tmp_path / 'hostile.db'}", seed=0)
    engine.apply([write_yaml(tmp_path, "l.yaml", AB_YAML), write_yaml(tmp_path, "b.yaml", BANDIT_YAML)])
    app = create_app(engine, ApiKeys(admin="hostile-admin", decide="hostile-decide"), max_body_bytes=1024 * 1024)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def raw(value: Any) -> bytes:
    return json.dumps(value).encode()


def nested(depth: int) -> bytes:
    return b'{"unit": "u", "context": ' + b'{"a": ' * depth + b"1" + b"}" * (depth + 1)


JSON = {"Content-Type": "application/json"}

# (id, method, path, headers beside the decide key, body bytes or None, status, places the message names)
BODIES = [
    ("not-json", "POST", DECIDE_PATH, {}, b"hello", 422, ["not valid JSON"]),
    ("truncated-json", "POST", DECIDE_PATH, {}, b'{"unit": "u"', 422, ["not valid JSON"]),
    ("nan", "POST", DECIDE_PATH, {}, b'{"unit": "u", "context": {"x": NaN}}', 422, ["not valid JSON"]),
    ("infinity", "POST", DECIDE_PATH, {}, b'{"unit": "u", "context": {"x": -Infinity}}', 422, ["not valid JSON"]),
    ("1e999", "POST", DECIDE_PATH, {}, b'{"unit": "u", "context": {"x": 1e999}}', 422, ["not valid JSON"]),
    ("unit-int-over-64-bits", "POST", DECIDE_PATH, {}, b'{"unit": 123456789012345678901234567890}', 422, ["unit"]),
    ("unit-wrong-type", "POST", DECIDE_PATH, {}, raw({"unit": ["u"]}), 422, ["unit"]),
    ("unit-null", "POST", DECIDE_PATH, {}, raw({"unit": None}), 422, ["unit"]),
    ("context-wrong-type", "POST", DECIDE_PATH, {}, raw({"unit": "u", "context": [1, 2]}), 422, ["context"]),
    ("context-nested-1000", "POST", DECIDE_PATH, {}, nested(1000), 422, ["context", "nested deeper than"]),
    ("body-nested-100k", "POST", DECIDE_PATH, {}, b"[" * 100_000 + b"]" * 100_000, 422, ["not valid JSON"]),
    ("empty-body", "POST", DECIDE_PATH, {}, b"", 422, ["not valid JSON"]),
    ("body-is-a-list", "POST", DECIDE_PATH, {}, raw([{"unit": "u"}]), 422, ["body"]),
    ("body-is-a-string", "POST", DECIDE_PATH, {}, raw("u"), 422, ["body"]),
    ("missing-unit", "POST", DECIDE_PATH, {}, raw({"context": {}}), 422, ["unit", "Field required"]),
    ("extra-field", "POST", DECIDE_PATH, {}, raw({"unit": "u", "colour": "red"}), 422, ["colour"]),
    ("invalid-utf8", "POST", DECIDE_PATH, {}, b'{"unit": "u\xff\xfe"}', 422, ["UTF-8"]),
    ("lone-surrogate", "POST", DECIDE_PATH, {}, b'{"unit": "\\ud800"}', 422, ["not valid JSON"]),
    ("empty-unit", "POST", DECIDE_PATH, {}, raw({"unit": ""}), 422, ["unit"]),
    ("over-long-unit", "POST", DECIDE_PATH, {}, raw({"unit": "u" * 257}), 422, ["unit", "256"]),
    ("body-over-limit", "POST", EVENTS_PATH, {}, b" " * (1024 * 1024 + 1), 413, ["over"]),
    ("batch-of-0", "POST", BATCH_PATH, {}, raw({"units": []}), 422, ["units"]),
    ("batch-too-many", "POST", BATCH_PATH, {}, raw({"units": [{"unit": "u"}] * (MAX_BATCH + 1)}), 422,
     ["units", "10000"]),
    ("batch-one-bad-unit", "POST", BATCH_PATH, {}, raw({"units": [{"unit": "a"}, {"unit": "b"}, {"unit": 3}]}), 422,
     ["units.2.unit"]),
    ("batch-units-not-a-list", "POST", BATCH_PATH, {}, raw({"units": {"unit": "u"}}), 422, ["units"]),
    ("events-empty", "POST", EVENTS_PATH, {}, raw({"events": []}), 422, ["events"]),
    ("events-not-a-list", "POST", EVENTS_PATH, {}, raw({"events": {"event_id": "e"}}), 422, ["events"]),
    ("events-too-many", "POST", EVENTS_PATH, {}, raw({"events": [{}] * (MAX_BATCH + 1)}), 422, ["events", "10000"]),
]
HEADERS = [
    ("no-auth", "POST", DECIDE_PATH, {"Authorization": ""}, raw({"unit": "u"}), 401, ["missing API key"]),
    ("bad-scheme", "POST", DECIDE_PATH, {"Authorization": "Basic aG9zdGlsZQ=="}, raw({"unit": "u"}), 401,
     ["missing API key", "Bearer"]),
    ("empty-bearer", "POST", DECIDE_PATH, {"Authorization": "Bearer "}, raw({"unit": "u"}), 401, ["missing API key"]),
    ("wrong-key", "POST", DECIDE_PATH, {"Authorization": "Bearer guess"}, raw({"unit": "u"}), 401,
     ["invalid API key"]),
    ("non-ascii-key", "POST", DECIDE_PATH, {"Authorization": b"Bearer \xff\xfe"}, raw({"unit": "u"}), 401,
     ["invalid API key"]),
    ("huge-auth-header", "POST", DECIDE_PATH, {"Authorization": "Bearer " + "k" * 100_000}, raw({"unit": "u"}), 401,
     ["invalid API key"]),
    ("decide-key-on-report", "GET", REPORT_PATH, {}, None, 403, ["decide", "admin key"]),
    ("decide-key-on-listing", "GET", "/v1/experiments", {}, None, 403, ["decide", "admin key"]),
    ("text-content-type", "POST", DECIDE_PATH, {"Content-Type": "text/plain"}, raw({"unit": "u"}), 415,
     ["Content-Type", "text/plain"]),
    ("form-content-type", "POST", DECIDE_PATH, {"Content-Type": "application/x-www-form-urlencoded"}, b"unit=u", 415,
     ["Content-Type"]),
    ("content-length-too-small", "POST", DECIDE_PATH, {"Content-Length": "5"}, raw({"unit": "u"}), 400,
     ["Content-Length"]),
    ("content-length-not-a-number", "POST", DECIDE_PATH, {"Content-Length": "ten"}, raw({"unit": "u"}), 400,
     ["Content-Length"]),
    ("content-length-over-limit", "POST", DECIDE_PATH, {"Content-Length": str(10**12)}, raw({"unit": "u"}), 413,
     ["over"]),
    ("gzip-garbage", "POST", DECIDE_PATH, {"Content-Encoding": "gzip"}, b"\x1f\x8bnot gzip at all", 415,
     ["Content-Encoding", "gzip"]),
    ("gzip-valid", "POST", DECIDE_PATH, {"Content-Encoding": "gzip"}, gzip.compress(raw({"unit": "u"})), 415,
     ["Content-Encoding"]),
]
PATHS = [
    ("unknown-experiment", "POST", "/v1/experiments/ghost/decisions", {}, raw({"unit": "u"}), 404, ["ghost"]),
    ("unknown-experiment-batch", "POST", "/v1/experiments/ghost/decisions:batch", {}, raw({"units": [{"unit": "u"}]}),
     404, ["ghost"]),
    ("odd-characters-key", "POST", "/v1/experiments/%00%27%22%3B%20drop/decisions", {}, raw({"unit": "u"}), 404,
     ["unknown experiment", "drop"]),
    ("unicode-key", "POST", "/v1/experiments/%C3%A9t%C3%A9/decisions", {}, raw({"unit": "u"}), 404, ["été"]),
    ("very-long-key", "POST", "/v1/experiments/" + "k" * 10_000 + "/decisions", {}, raw({"unit": "u"}), 404,
     ["unknown experiment"]),
    ("traversal", "GET", "/v1/experiments/..%2F..%2Fetc%2Fpasswd/report", {"Authorization": ADMIN}, None, 404,
     ["Not Found"]),
    ("unknown-route", "GET", "/v1/everything", {}, None, 404, ["Not Found"]),
    ("report-by-unknown-attribute", "GET", REPORT_PATH + "?by=nope", {"Authorization": ADMIN}, None, 422,
     ["by 'nope'", "no unit of 'landing'", "use channel"]),
    ("report-by-nul", "GET", REPORT_PATH + "?by=a%00b", {"Authorization": ADMIN}, None, 422, ["no unit"]),
]
METHODS = [
    ("get-on-decisions", "GET", DECIDE_PATH, {}, None, 405, ["Method Not Allowed"]),
    ("get-on-batch", "GET", BATCH_PATH, {}, None, 405, ["Method Not Allowed"]),
    ("put-on-events", "PUT", EVENTS_PATH, {}, raw({"events": [{}]}), 405, ["Method Not Allowed"]),
    ("delete-report", "DELETE", REPORT_PATH, {"Authorization": ADMIN}, None, 405, ["Method Not Allowed"]),
    ("post-on-healthz", "POST", "/healthz", {}, b"{}", 405, ["Method Not Allowed"]),
]
CASES = BODIES + HEADERS + PATHS + METHODS


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "places"),
                         [pytest.param(*row[1:], id=row[0]) for row in CASES])
def test_hostile_request_is_refused_with_the_reason(client: TestClient, method: str, path: str,
                                                    headers: dict[str, Any], body: bytes | None, status: int,
                                                    places: list[str]) -> None:
    sent = {"Authorization": DECIDE, **JSON, **headers}
    r = client.request(method, path, content=body, headers={k: v for k, v in sent.items() if v != ""})
    assert r.status_code == status, r.text
    assert_no_traceback(r.text)
    assert_names(r.json()["error"] + r.json().get("hint", ""), *places)


def test_a_decide_key_404_does_not_list_the_experiments(client: TestClient) -> None:
    r = client.post("/v1/experiments/ghost/decisions", json={"unit": "u"}, headers={"Authorization": DECIDE})
    assert r.status_code == 404 and "landing" not in r.text and "channels" not in r.text


def good(event_id: str, unit: str) -> dict[str, Any]:
    return {"event_id": event_id, "experiment": "landing", "unit": unit, "value": 1}


# (id, the bad event, places its rejection names)
BAD_EVENTS = [
    ("not-an-object", "click", ["JSON object"]),
    ("null", None, ["JSON object"]),
    ("missing-event-id", {"experiment": "landing", "unit": "u1"}, ["event_id"]),
    ("event-id-too-long", {**good("x" * 257, "u1")}, ["event_id"]),
    ("value-not-a-number", {**good("v", "u1"), "value": "lots"}, ["value"]),
    ("value-boolean", {**good("v", "u1"), "value": True}, ["value"]),
    ("value-negative", {**good("v", "u1"), "value": -1}, ["value"]),
    ("value-int-over-64-bits", {**good("v", "u1"), "value": 123456789012345678901234567890}, ["value"]),
    ("unknown-type", {**good("v", "u1"), "type": "click"}, ["type"]),
    ("unknown-experiment", {**good("v", "u1"), "experiment": "ghost"}, ["unknown experiment"]),
    ("unknown-arm", {**good("v", "u1"), "arm": "nope"}, ["arm"]),
    ("unit-never-exposed", good("v", "stranger"), ["unit", "stranger"]),
    ("unknown-decision", {"event_id": "v", "experiment": "landing", "decision_id": "nope"}, ["decision_id"]),
    ("extra-field", {**good("v", "u1"), "colour": "red"}, ["colour"]),
    ("bad-timestamp", {**good("v", "u1"), "ts": "yesterday"}, ["ts"]),
]


@pytest.mark.parametrize(("bad", "places"), [pytest.param(b, p, id=i) for i, b, p in BAD_EVENTS])
def test_good_events_beside_a_bad_one_are_kept_and_counted_once(client: TestClient, bad: Any,
                                                                 places: list[str]) -> None:
    decide = {"Authorization": DECIDE}
    for unit in ("u1", "u2"):
        assert client.post(DECIDE_PATH, json={"unit": unit}, headers=decide).status_code == 200
    batch = [good("g1", "u1"), bad, good("g2", "u2"), good("g1", "u1")]  # the last repeats the first
    r = client.post(EVENTS_PATH, json={"events": batch}, headers=decide)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [x["index"] for x in answer["rejected"]] == [1], answer
    assert_names(answer["rejected"][0]["error"], *places)
    assert (answer["accepted"], answer["duplicates"]) == (2, 1)
    again = client.post(EVENTS_PATH, json={"events": batch}, headers=decide).json()  # a client's retry
    assert (again["accepted"], again["duplicates"]) == (0, 3)
    report = client.get(REPORT_PATH, headers={"Authorization": ADMIN}).json()
    assert sum(a["conversions"] for a in report["arms"]) == 2 and sum(a["exposures"] for a in report["arms"]) == 2
