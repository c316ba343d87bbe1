from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from engine.client import AsyncClient, Client, ServiceError

DECISION = {"experiment": "landing", "arm": "control", "decision_id": "d1", "in_experiment": True}


def flaky(failures: list[int | type[Exception]], final: httpx.Response) -> tuple[list[httpx.Request], object]:
    """A handler answering each queued status (or raising each queued error) once, then `final`."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if failures:
            failure = failures.pop(0)
            if isinstance(failure, int):
                return httpx.Response(failure, json={"error": "busy"})
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
