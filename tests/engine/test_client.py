from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import httpx
import pytest

from engine.client import AsyncClient, Client, ServiceError, retry_after

DECISION = {"experiment": "landing", "arm": "control", "decision_id": "d1", "in_experiment": True}


def flaky(failures: list[int | type[Exception]], final: httpx.Response) -> tuple[list[httpx.Request], object]:
    """A handler answering each queued status (or raising each queued error) once, then `final`."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if failures:
            failure = failures.pop(0)
            if isinstance(failure, int):  # a busy service says when to come back
                return httpx.Response(failure, json={"error": "busy"}, headers={"Retry-After": "0"})
            raise failure("boom", request=request)
        return final

    return seen, handle


def test_retries_503_429_and_transport_errors_then_succeeds() -> None:
    seen, handle = flaky([503, 429, httpx.ConnectError], httpx.Response(200, json=DECISION))
    with Client("http://svc", "key", backoff=0, transport=httpx.MockTransport(handle)) as c:
        assert c.decide("landing", "u1", {"opted_in": ["email"]}) == DECISION
    assert len(seen) == 4
    assert seen[0].headers["authorization"] == "Bearer key"
    assert json.loads(seen[0].content) == {"unit": "u1", "context": {"opted_in": ["email"]}}


def test_client_errors_are_not_retried_and_carry_the_reason() -> None:
    seen, handle = flaky([], httpx.Response(422, json={"error": "unit: too short"}))
    with Client("http://svc", "key", backoff=0, transport=httpx.MockTransport(handle)) as c, \
            pytest.raises(ServiceError, match="422: unit: too short") as info:
        c.decide("landing", "")
    assert info.value.status == 422 and len(seen) == 1


def test_gives_up_after_the_retries() -> None:
    seen, handle = flaky([httpx.ConnectError] * 10, httpx.Response(200, json={}))
    with Client("http://svc", retries=2, backoff=0, transport=httpx.MockTransport(handle)) as c, \
            pytest.raises(ServiceError, match="unreachable"):
        c.record({"event_id": "e", "experiment": "landing", "unit": "u"})
    assert len(seen) == 3


def test_async_client_retries_and_batches() -> None:
    seen, handle = flaky([502], httpx.Response(200, json={"accepted": 2, "duplicates": 0, "rejected": []}))

    async def run() -> dict:
        async with AsyncClient("http://svc", "key", backoff=0, transport=httpx.MockTransport(handle)) as c:
            return await c.record([{"event_id": "a"}, {"event_id": "b"}])

    assert asyncio.run(run())["accepted"] == 2
    assert len(seen) == 2 and json.loads(seen[1].content) == {"events": [{"event_id": "a"}, {"event_id": "b"}]}


def answers(*responses: httpx.Response) -> tuple[list[httpx.Request], httpx.MockTransport]:
    """A transport answering `responses` in order, the last one from then on."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responses[min(len(seen), len(responses)) - 1]

    return seen, httpx.MockTransport(handle)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits between attempts, recorded instead of slept (sync and async clients)."""
    waited: list[float] = []
    real_async_sleep = asyncio.sleep

    async def async_sleep(seconds: float) -> None:
        waited.append(seconds)
        await real_async_sleep(0)

    monkeypatch.setattr(time, "sleep", waited.append)
    monkeypatch.setattr(asyncio, "sleep", async_sleep)
    return waited


def busy(status: int, after: str | None) -> httpx.Response:
    return httpx.Response(status, json={"error": "busy"}, headers={"Retry-After": after} if after else {})


def test_retry_after_is_honoured_on_503_and_429(sleeps: list[float]) -> None:
    seen, transport = answers(busy(503, "2"), busy(429, "1"), httpx.Response(200, json=DECISION))
    with Client("http://svc", "key", transport=transport) as c:
        assert c.decide("landing", "u1") == DECISION
    assert len(seen) == 3 and sleeps == [2.0, 1.0]


def test_async_client_honours_retry_after(sleeps: list[float]) -> None:
    seen, transport = answers(busy(503, "3"), httpx.Response(200, json=DECISION))

    async def run() -> dict:
        async with AsyncClient("http://svc", "key", transport=transport) as c:
            return await c.decide("landing", "u1")

    assert asyncio.run(run()) == DECISION and len(seen) == 2 and sleeps == [3.0]


def test_retry_after_is_capped_and_the_time_budget_ends_the_retries(
        sleeps: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "monotonic", lambda: 1000.0 + sum(sleeps))  # time passes only by waiting
    seen, transport = answers(busy(503, "3600"))
    with Client("http://svc", transport=transport, max_wait=4, give_up_after=10, retries=10) as c, \
            pytest.raises(ServiceError, match="503: busy"):
        c.decide("landing", "u1")
    assert sleeps == [4.0, 4.0] and len(seen) == 3  # a third wait would end past the 10 s budget


def test_backoff_without_retry_after_is_exponential_with_full_jitter(sleeps: list[float]) -> None:
    seen, transport = answers(busy(502, None))
    with Client("http://svc", transport=transport, retries=12, backoff=1, max_wait=1e6, give_up_after=1e9) as c, \
            pytest.raises(ServiceError, match="502"):
        c.decide("landing", "u1")
    caps = [2.0**n for n in range(12)]
    assert len(seen) == 13 and all(0 <= s <= cap for s, cap in zip(sleeps, caps, strict=True))
    assert sleeps != caps  # jittered, not the plain doubling every client would share


def test_a_503_without_retry_after_is_not_retried(sleeps: list[float]) -> None:
    """The service's answer to a fault of its own (an internal error with an id) may come after
    the decision was logged: a retry would log the unit twice."""
    seen, transport = answers(httpx.Response(503, json={"error": "internal error", "id": "abc"}),
                              httpx.Response(200, json=DECISION))
    with Client("http://svc", "key", transport=transport) as c, pytest.raises(ServiceError, match="503"):
        c.decide("landing", "u1")
    assert len(seen) == 1 and sleeps == []


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after(busy(503, "Tue, 01 Jan 2030 12:00:30 GMT"), now) == 30.0
    assert retry_after(busy(503, "Tue, 01 Jan 2030 11:00:00 GMT"), now) == 0.0
    assert retry_after(busy(503, "soon"), now) is None and retry_after(busy(503, None), now) is None
