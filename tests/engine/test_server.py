from __future__ import annotations

import fcntl
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import OperationalError

from engine.api import Engine
from engine.config import EngineConfig
from engine.server import ApiKeys, create_app
from tests.samples import AB_YAML, BANDIT_YAML, write_yaml

ADMIN, DECIDE = {"Authorization": "Bearer admin-secret"}, {"Authorization": "Bearer decide-secret"}


@pytest.fixture
def client(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    stopped = AB_YAML.replace("key: landing", "key: retired").replace(
        "status: running", "status: stopped\nwinner: curated")
    paths = [write_yaml(tmp_path, "l.yaml", AB_YAML), write_yaml(tmp_path, "b.yaml", BANDIT_YAML),
             write_yaml(tmp_path, "r.yaml", stopped)]
    engine = Engine.open(db_url, seed=0)
    engine.apply(paths)
    app = create_app(engine, ApiKeys(admin="admin-secret", decide="decide-secret"), max_body_bytes=64 * 1024)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_decide_record_report(client: TestClient) -> None:
    r = client.post("/v1/experiments/landing/decisions", json={"unit": "u1"}, headers=DECIDE)
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["reason"] == "SPLIT" and d["arm"] in ("control", "curated") and d["propensity"] == 0.5
    events = [{"event_id": "e1", "experiment": "landing", "decision_id": d["decision_id"]},
              {"event_id": "e1", "experiment": "landing", "decision_id": d["decision_id"]},
              {"event_id": "e2", "experiment": "landing", "unit": "u1", "value": -1},
              {"event_id": "e3", "experiment": "ghost", "unit": "u1"}]
    r = client.post("/v1/events", json={"events": events}, headers=DECIDE)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["accepted"], answer["duplicates"]) == (1, 1)
    assert [x["index"] for x in answer["rejected"]] == [2, 3]
    assert ">= 0" in answer["rejected"][0]["error"] and "unknown experiment" in answer["rejected"][1]["error"]
    report = client.get("/v1/experiments/landing/report", headers=ADMIN).json()
    assert sum(a["exposures"] for a in report["arms"]) == 1 and sum(a["conversions"] for a in report["arms"]) == 1
    listing = client.get("/v1/experiments", headers=ADMIN).json()
    assert {e["key"] for e in listing} == {"landing", "channels", "retired"}


def test_batch_decisions(client: TestClient) -> None:
    units = [{"unit": f"u{i}", "context": {"opted_in": ["email", "sms"]}} for i in range(100)]
    r = client.post("/v1/experiments/channels/decisions:batch", json={"units": units}, headers=DECIDE)
    assert r.status_code == 200, r.text
    decisions = r.json()["decisions"]
    assert len(decisions) == 100 and {d["channel"] for d in decisions} <= {"email", "sms"}
    assert all(d["reason"] == "BANDIT" and 0 < d["propensity"] <= 1 for d in decisions)


def test_stopped_experiment_answers_200_with_the_winner_and_logs_nothing(client: TestClient) -> None:
    r = client.post("/v1/experiments/retired/decisions", json={"unit": "u1"}, headers=DECIDE)
    assert r.status_code == 200 and r.json()["reason"] == "STOPPED" and r.json()["arm"] == "curated"
    report = client.get("/v1/experiments/retired/report", headers=ADMIN).json()
    assert sum(a["exposures"] for a in report["arms"]) == 0


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "reason"), [
    ("post", "/v1/experiments/landing/decisions", {}, {"unit": "u"}, 401, "missing API key"),
    ("post", "/v1/experiments/landing/decisions", {"Authorization": "Bearer nope"}, {"unit": "u"}, 401, "invalid"),
    ("post", "/v1/experiments/landing/decisions", {"Authorization": "Basic decide-secret"}, {"unit": "u"}, 401, ""),
    ("get", "/v1/experiments/landing/report", DECIDE, None, 403, "decide"),
    ("get", "/v1/experiments", DECIDE, None, 403, "decide"),
    ("post", "/v1/experiments/ghost/decisions", DECIDE, {"unit": "u"}, 404, "unknown experiment"),
    ("get", "/v1/experiments/ghost/report", ADMIN, None, 404, "unknown experiment"),
    ("post", "/v1/experiments/landing/decisions", DECIDE, {"unit": ""}, 422, "unit"),
    ("post", "/v1/experiments/landing/decisions", DECIDE, {"unit": "u", "colour": 1}, 422, "colour"),
    ("post", "/v1/experiments/landing/decisions", DECIDE, [1, 2], 422, "body"),
    ("post", "/v1/events", DECIDE, {"events": []}, 422, "events"),
    ("post", "/v1/experiments/channels/decisions", DECIDE, {"unit": "u", "context": {"opted_in": 5}}, 422, "context"),
    ("post", "/v1/experiments/channels/decisions", DECIDE, {"unit": "u", "context": {"opted_in": None}}, 422,
     "context"),
    ("post", "/v1/experiments/landing/decisions:batch", DECIDE, {"units": [{"unit": 5}]}, 422, "unit"),
])
def test_refusals_have_status_and_reason(client: TestClient, method: str, path: str, headers: dict,
                                         body: object, status: int, reason: str) -> None:
    r = client.request(method, path, headers=headers, json=body)
    assert r.status_code == status, r.text
    assert reason in r.json()["error"]


def test_nan_infinity_and_oversized_bodies_are_refused(client: TestClient) -> None:
    for text in ('{"unit": "u", "context": {"x": NaN}}', '{"unit": "u", "context": {"x": Infinity}}', "{bad"):
        r = client.post("/v1/experiments/landing/decisions", content=text, headers=DECIDE)
        assert r.status_code == 422 and "not valid JSON" in r.json()["error"]
    big = json.dumps({"events": [{"event_id": "x" * 100, "experiment": "landing", "unit": "u"}] * 1000})
    r = client.post("/v1/events", content=big, headers=DECIDE)
    assert r.status_code == 413 and "over" in r.json()["error"]


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert client.get("/docs").status_code == 200 and client.get("/openapi.json").status_code == 200


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/v1/experiments/landing/decisions", "/v1/experiments/channels/decisions:batch",
                             "/v1/events", "/v1/experiments/zzz/decisions"]),
       body=json_values | st.fixed_dictionaries({"events": st.lists(json_values, max_size=3)})
       | st.fixed_dictionaries({"unit": json_values, "context": json_values}))
def test_no_body_ever_gets_a_5xx(client: TestClient, path: str, body: object) -> None:
    r = client.post(path, json=body, headers=DECIDE)
    assert r.status_code < 500, (r.status_code, r.text)


# -- the error boundary, readiness and the event loop ------------------------------------------

def unreachable(*_: object, **__: object) -> None:
    raise OperationalError("SELECT ...", None, Exception("unable to open database file"))


def test_store_unreachable_on_report_answers_503_with_retry_after(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = client.app.state.engine
    monkeypatch.setattr(engine.store, "arm_aggregates", unreachable)
    r = client.get("/v1/experiments/landing/report", headers=ADMIN)
    assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
    assert r.json()["error"] == "the store is unavailable" and "SELECT" not in r.text


def test_unexpected_exception_answers_503_with_an_id_that_matches_the_logged_traceback(
        client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def bug(*_: object) -> None:
        raise RuntimeError("the secret row")

    monkeypatch.setattr(client.app.state.engine, "decide", bug)
    with caplog.at_level(logging.ERROR, logger="crosspromo.server"):
        r = client.post("/v1/experiments/landing/decisions", json={"unit": "u1"}, headers=DECIDE)
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["error"] == "internal error" and set(body) == {"error", "id"} and "secret" not in r.text
    [record] = [rec for rec in caplog.records if body["id"] in rec.getMessage()]
    message = record.getMessage()
    assert "Traceback (most recent call last)" in message and "RuntimeError" in message


def test_engine_value_errors_answer_422_with_the_reason(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise ValueError("unit: must not contain NUL")

    monkeypatch.setattr(client.app.state.engine, "decide", refuse)
    r = client.post("/v1/experiments/landing/decisions", json={"unit": "u\u0000"}, headers=DECIDE)
    assert r.status_code == 422 and r.json()["error"] == "unit: must not contain NUL"


def test_404_lists_the_experiments_to_admins_only(client: TestClient) -> None:
    decide = client.post("/v1/experiments/ghost/decisions", json={"unit": "u"}, headers=DECIDE).json()
    assert decide["error"] == "unknown experiment 'ghost'" and "landing" not in json.dumps(decide)
    admin = client.get("/v1/experiments/ghost/report", headers=ADMIN).json()
    assert "landing" in admin["hint"] and "channels" in admin["hint"]


@pytest.fixture
def sqlite_client(sqlite_url: str, tmp_path: Path) -> Iterator[TestClient]:
    """A service on a SQLite file whose buffer flushes from the decide path past 5 exposures."""
    engine = Engine.open(sqlite_url, seed=0, config=EngineConfig(exposure_max_buffered=5))
    engine.apply([write_yaml(tmp_path, "l.yaml", AB_YAML)])
    app = create_app(engine, ApiKeys(admin="admin-secret", decide="decide-secret"))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("fault", ["deleted", "replaced"])
def test_a_deleted_or_replaced_sqlite_file_is_not_ready_and_takes_no_writes(
        sqlite_client: TestClient, sqlite_url: str, fault: str) -> None:
    assert sqlite_client.get("/readyz").status_code == 200
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    for f in path.parent.glob(f"{path.name}*"):
        f.unlink()
    if fault == "replaced":
        path.write_bytes(b"")
    r = sqlite_client.get("/readyz")
    assert r.status_code == 503 and f"was {fault}" in r.json()["reason"], r.text
    event = {"event_id": "e1", "experiment": "landing", "unit": "u1"}
    r = sqlite_client.post("/v1/events", json={"events": [event]}, headers=DECIDE)
    assert r.status_code == 503 and r.headers["retry-after"] and "restore the file" in r.json()["hint"], r.text
    # No empty store was opened in the deleted one's place.
    assert path.exists() == (fault == "replaced") and (fault == "deleted" or path.stat().st_size == 0)


def test_healthz_answers_while_a_decision_waits_for_the_sqlite_write_lock(
        sqlite_client: TestClient, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = sqlite_client.app.state.engine.store
    writing = threading.Event()
    log_exposures = store.log_exposures

    def announce(batch: list) -> int:
        writing.set()
        return log_exposures(batch)

    monkeypatch.setattr(store, "log_exposures", announce)
    batch: list[int] = []
    units = {"units": [{"unit": f"u{i}"} for i in range(50)]}  # past max_buffered: the decision flushes
    decide = threading.Thread(target=lambda: batch.append(sqlite_client.post(
        "/v1/experiments/landing/decisions:batch", json=units, headers=DECIDE).status_code))
    health: list[int] = []
    probe = threading.Thread(target=lambda: health.append(sqlite_client.get("/healthz").status_code), daemon=True)
    with open(f"{sqlite_url.removeprefix('sqlite:///')}.write-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as another process writing would
        try:
            decide.start()
            assert writing.wait(30), "the batch never reached the store"
            probe.start()
            probe.join(30)  # a deadlock guard, not a speed limit
            assert health == [200] and batch == [], "healthz froze behind the blocked write"
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    decide.join(30)
    assert batch == [200]


def test_openapi_declares_every_request_body(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    bodies = {path: op["requestBody"]["content"]["application/json"]["schema"]
              for path, ops in spec["paths"].items() for method, op in ops.items() if method == "post"}
    assert bodies == {"/v1/experiments/{key}/decisions": {"$ref": "#/components/schemas/DecideRequest"},
                      "/v1/experiments/{key}/decisions:batch": {"$ref": "#/components/schemas/BatchDecideRequest"},
                      "/v1/events": {"$ref": "#/components/schemas/EventsRequest"},
                      "/v1/graph/edges": {"$ref": "#/components/schemas/EdgesRequest"}}
    schemas = spec["components"]["schemas"]
    assert schemas["DecideRequest"]["required"] == ["unit"]
    assert schemas["BatchDecideRequest"]["properties"]["units"]["maxItems"] == 10_000
    assert schemas["EventsRequest"]["properties"]["events"]["items"]["required"] == ["event_id", "experiment"]
    assert schemas["EdgesRequest"]["properties"]["edges"]["items"]["required"] == ["source", "target", "kind"]
def test_an_event_whose_ts_overflows_utc_is_rejected_alone(client: TestClient) -> None:
    """9999-12-31T23:59:59-01:00 is past year 9999 in UTC: it once failed the whole batch with a 500."""
    events = [{"event_id": "x1", "type": "exposure", "experiment": "landing", "unit": "u1", "arm": "control"},
              {"event_id": "x2", "type": "exposure", "experiment": "landing", "unit": "u2", "arm": "control",
               "ts": "9999-12-31T23:59:59-01:00"},
              {"event_id": "x3", "type": "exposure", "experiment": "landing", "unit": "u3", "arm": "curated",
               "decision_id": "bad\u0000id"},
              {"event_id": "x4", "type": "exposure", "experiment": "landing", "unit": "u4", "arm": "curated"}]
    r = client.post("/v1/events", json={"events": events}, headers=DECIDE)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["accepted"] == 2
    assert [(x["index"], x["error"].split(":")[0]) for x in answer["rejected"]] == [(1, "ts"), (2, "decision_id")]
