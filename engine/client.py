"""Python clients of the decision service, sync and async, with timeouts and safe retries.

    from engine.client import Client
    with Client("http://127.0.0.1:8080", api_key=os.environ["CROSSPROMO_DECIDE_KEY"]) as cp:
        d = cp.decide("art-training-crosspromo", "user-42", {"opted_in": ["email", "push"]})
        cp.record({"event_id": "evt-1", "experiment": d["experiment"], "decision_id": d["decision_id"]})

Retries (connection errors, timeouts, 429, 502, 504, and 503 with `Retry-After`: a 503 without
one answers a fault of the service's own) wait as the service's `Retry-After`
says, else by exponential backoff with full jitter (so clients that failed together do not
return together), and stop after `retries` retries or `give_up_after` seconds. They are safe
for events because the service counts an `event_id` once. A retried decision whose first
answer was lost may log one extra exposure; its arm is the same for A/B tests and sticky bandits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_result, stop_after_attempt, stop_before_delay
from tenacity.wait import wait_random_exponential

RETRY_STATUSES = frozenset({429, 502, 503, 504})
Outcome = tuple[httpx.Response | None, Exception | None]  # one attempt: its answer, or the error instead


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


def _final(outcome: Outcome) -> Any:
    """The answer of the last attempt: its JSON, or the error that ended the retries."""
    response, error = outcome
    if response is None:
        raise ServiceError(None, f"service unreachable: {error}") from error
    return _result(response)


def retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """The seconds the service asked to wait (`Retry-After`: seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _retryable(outcome: Outcome) -> bool:
    """Connection errors, timeouts and the statuses of a busy or restarting service. A 503 only
    with `Retry-After`: without one it is the service's answer to a fault of its own, after
    which a retried decision could be logged twice."""
    response, error = outcome
    if error is not None:
        return True
    if response is None or response.status_code not in RETRY_STATUSES:
        return False
    return response.status_code != 503 or "retry-after" in response.headers


class _Base:
    def __init__(self, base_url: str, api_key: str | None, timeout: float, retries: int, backoff: float,
                 max_wait: float, give_up_after: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.retries = retries
        self.max_wait = max_wait
        self.give_up_after = give_up_after
        self._backoff = wait_random_exponential(multiplier=backoff, max=max_wait)

    def wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: the service's `Retry-After` (capped at `max_wait`),
        else a uniform draw in [0, backoff * 2**(attempt - 1)] (full jitter)."""
        assert state.outcome is not None
        response, _ = state.outcome.result()
        asked = retry_after(response) if response is not None else None
        return min(asked, self.max_wait) if asked is not None else self._backoff(state)

    def _policy(self) -> dict[str, Any]:
        return {
            "retry": retry_if_result(_retryable), "wait": self.wait,
            "stop": stop_after_attempt(self.retries + 1) | stop_before_delay(self.give_up_after),
            "retry_error_callback": lambda state: state.outcome.result(),  # the last outcome, retryable or not
        }


class Client(_Base):
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 2.0, retries: int = 3,
                 backoff: float = 0.1, max_wait: float = 10.0, give_up_after: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout, retries, backoff, max_wait, give_up_after)
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
        return _final(Retrying(**self._policy())(self._attempt, call))

    def _attempt(self, call: _Call) -> Outcome:
        try:
            return self._http.request(call.method, call.path, json=call.body), None
        except httpx.TransportError as exc:
            return None, exc


class AsyncClient(_Base):
    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 2.0, retries: int = 3,
                 backoff: float = 0.1, max_wait: float = 10.0, give_up_after: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout, retries, backoff, max_wait, give_up_after)
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
        return _final(await AsyncRetrying(**self._policy())(self._attempt, call))

    async def _attempt(self, call: _Call) -> Outcome:
        try:
            return await self._http.request(call.method, call.path, json=call.body), None
        except httpx.TransportError as exc:
            return None, exc
