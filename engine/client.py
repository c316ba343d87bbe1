"""Python clients of the decision service, sync and async, with timeouts and safe retries.

    from engine.client import Client
    with Client("http://127.0.0.1:8080", api_key=os.environ["CROSSPROMO_DECIDE_KEY"]) as cp:
        d = cp.decide("art-training-crosspromo", "user-42", {"opted_in": ["email", "push"]})
        cp.record({"event_id": "evt-1", "experiment": d["experiment"], "decision_id": d["decision_id"]})

Retries (connection errors, timeouts, 429 and 502/503/504, with exponential backoff) are safe
for events because the service counts an `event_id` once. A retried decision whose first
answer was lost may log one extra exposure; its arm is the same for A/B tests and sticky bandits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

RETRY_STATUSES = frozenset({429, 502, 503, 504})


class ServiceError(RuntimeError):
    """The service refused the request (4xx) or stayed unavailable through every retry."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    body: Any = None


def _decide(experiment: str, unit: str, context: Mapping[str, Any] | None) -> _Call:
    return _Call("POST", f"/v1/experiments/{experiment}/decisions", {"unit": unit, "context": dict(context or {})})


def _decide_many(experiment: str, units: Sequence[str], contexts: Sequence[Mapping[str, Any] | None] | None) -> _Call:
    ctxs = contexts if contexts is not None else [None] * len(units)
    items = [{"unit": u, "context": dict(c or {})} for u, c in zip(units, ctxs, strict=True)]
    return _Call("POST", f"/v1/experiments/{experiment}/decisions:batch", {"units": items})


def _record(events: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> _Call:
    batch = [events] if isinstance(events, Mapping) else list(events)
    return _Call("POST", "/v1/events", {"events": batch})


def _result(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise ServiceError(response.status_code, message)
    return response.json()


def _final(error: Exception | None, response: httpx.Response | None) -> Any:
    """The answer of the last attempt: its JSON, or the error that ended the retries."""
    if response is None:
        raise ServiceError(None, f"service unreachable: {error}") from error
    return _result(response)


class _Base:
    def __init__(self, base_url: str, api_key: str | None, timeout: float, retries: int, backoff: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def _delay(self, attempt: int) -> float:
        return self.backoff * 2**attempt

    def _give_up(self, attempt: int, error: Exception | None, response: httpx.Response | None) -> bool:
        """True when this outcome is final: a success, a 4xx that is not 429, or no retry left."""
        retryable = error is not None or (response is not None and response.status_code in RETRY_STATUSES)
        return not retryable or attempt >= self.retries


class Client(_Base):
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 2.0, retries: int = 3,
                 backoff: float = 0.1, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout, retries, backoff)
        self._http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def decide(self, experiment: str, unit: str, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._send(_decide(experiment, unit, context))

    def decide_many(self, experiment: str, units: Sequence[str],
                    contexts: Sequence[Mapping[str, Any] | None] | None = None) -> list[dict[str, Any]]:
        return self._send(_decide_many(experiment, units, contexts))["decisions"]

    def record(self, events: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Send one event or a batch; answers `{accepted, duplicates, spooled, rejected}`."""
        return self._send(_record(events))

    def report(self, experiment: str) -> dict[str, Any]:
        return self._send(_Call("GET", f"/v1/experiments/{experiment}/report"))

    def _send(self, call: _Call) -> Any:
        for attempt in range(self.retries + 1):
            error: Exception | None = None
            response = None
            try:
                response = self._http.request(call.method, call.path, json=call.body)
            except httpx.TransportError as exc:
                error = exc
            if self._give_up(attempt, error, response):
                return _final(error, response)
            time.sleep(self._delay(attempt))
        raise AssertionError("unreachable")


class AsyncClient(_Base):
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 2.0, retries: int = 3,
                 backoff: float = 0.1, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout, retries, backoff)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=timeout,
                                       transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def decide(self, experiment: str, unit: str, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return await self._send(_decide(experiment, unit, context))

    async def decide_many(self, experiment: str, units: Sequence[str],
                          contexts: Sequence[Mapping[str, Any] | None] | None = None) -> list[dict[str, Any]]:
        return (await self._send(_decide_many(experiment, units, contexts)))["decisions"]

    async def record(self, events: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return await self._send(_record(events))

    async def report(self, experiment: str) -> dict[str, Any]:
        return await self._send(_Call("GET", f"/v1/experiments/{experiment}/report"))

    async def _send(self, call: _Call) -> Any:
        for attempt in range(self.retries + 1):
            error: Exception | None = None
            response = None
            try:
                response = await self._http.request(call.method, call.path, json=call.body)
            except httpx.TransportError as exc:
                error = exc
            if self._give_up(attempt, error, response):
                return _final(error, response)
            await asyncio.sleep(self._delay(attempt))
        raise AssertionError("unreachable")
