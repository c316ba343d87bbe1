"""The service end to end: real uvicorn processes, SQLite and PostgreSQL, replicas and faults."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from engine.api import Engine
from engine.client import AsyncClient, Client, ServiceError
from tests.conftest import POSTGRES_URL, _fresh_postgres
from tests.samples import AB_YAML, BANDIT_YAML, write_yaml
from tests.service_support import ADMIN_KEY, DECIDE_KEY, Proxy, Replica

STICKY = BANDIT_YAML.replace("eligibility:", "traffic: {sticky: true}\neligibility:")


def apply(db_url: str, tmp_path: Path) -> None:
    with Engine.open(db_url) as e:
        e.apply([write_yaml(tmp_path / "exp", "l.yaml", AB_YAML), write_yaml(tmp_path / "exp", "b.yaml", STICKY)])


@pytest.fixture
def pg_url() -> str:
    if not POSTGRES_URL:
        pytest.skip("no PostgreSQL server: set CROSSPROMO_TEST_POSTGRES_URL (.ci/postgres.sh starts one)")
    return _fresh_postgres(POSTGRES_URL)


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for r in started:
        r.stop()


def totals(client: Client, key: str = "landing") -> tuple[int, int]:
    report = client.report(key)
    return sum(a["exposures"] for a in report["arms"]), sum(a["conversions"] for a in report["arms"])


def wait_for(check, timeout: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.2)


def conversions(decisions: list[dict]) -> list[dict]:
    return [{"event_id": f"c-{d['decision_id']}", "experiment": d["experiment"], "decision_id": d["decision_id"]}
            for d in decisions if d["in_experiment"]]


def test_end_to_end_over_uvicorn(db_url: str, tmp_path: Path, replicas: list[Replica]) -> None:
    apply(db_url, tmp_path)
    replicas.append(Replica(db_url, tmp_path / "r1").start())
    url = replicas[0].url
    with Client(url, DECIDE_KEY) as service, Client(url, ADMIN_KEY) as admin:
        single = [service.decide("landing", f"u{i}") for i in range(100)]
        batch = service.decide_many("landing", [f"v{i}" for i in range(400)])
        assert {d["reason"] for d in single + batch} == {"SPLIT"}
        assert service.decide("landing", "u7")["arm"] == single[7]["arm"]
        events = conversions(single + batch)[::2]
        first = service.record(events)
        assert (first["accepted"], first["duplicates"], first["rejected"]) == (250, 0, [])
        assert service.record(events)["duplicates"] == 250
        with pytest.raises(ServiceError) as info:
            service.report("landing")
        assert info.value.status == 403

        async def async_round_trip() -> dict:
            async with AsyncClient(url, DECIDE_KEY) as c:
                d = await c.decide("landing", "async-unit")
                return await c.record({"event_id": "async-1", "experiment": "landing", "decision_id": d["decision_id"]})

        assert asyncio.run(async_round_trip())["accepted"] == 1
        wait_for(lambda: totals(admin) == (501, 251))  # u7 was decided twice: one unit
    assert httpx.get(f"{url}/v1/experiments").status_code == 401
    assert httpx.post(f"{url}/v1/experiments/ghost/decisions", json={"unit": "u"},
                      headers={"Authorization": f"Bearer {DECIDE_KEY}"}).status_code == 404


def test_two_replicas_on_postgres_agree_and_count_exactly(pg_url: str, tmp_path: Path,
                                                          replicas: list[Replica]) -> None:
    apply(pg_url, tmp_path)
    a = Replica(pg_url, tmp_path / "a", seed=1).start()
    b = Replica(pg_url, tmp_path / "b", seed=2).start()
    replicas += [a, b]
    ca, cb = Client(a.url, DECIDE_KEY), Client(b.url, DECIDE_KEY)
    with ThreadPoolExecutor(16) as pool:
        # Concurrent first decisions for one unit, one on each replica: one arm.
        pairs = [(pool.submit(ca.decide, "channels", f"s{i}"), pool.submit(cb.decide, "channels", f"s{i}"))
                 for i in range(60)]
        arms = [(x.result()["arm"], y.result()["arm"]) for x, y in pairs]
        assert all(x == y for x, y in arms) and len({x for x, _ in arms}) > 1

        decisions = ca.decide_many("landing", [f"u{i}" for i in range(2000)])
        events = conversions(decisions)
        # Conversions racing their exposure to the other replica wait in its spool, not lost.
        raced = cb.record(events[:200])
        assert raced["accepted"] + raced["spooled"] == 200 and raced["rejected"] == []
        with Client(a.url, ADMIN_KEY) as admin:
            wait_for(lambda: totals(admin)[0] == 2000)
        # Concurrent posts of disjoint batches to both replicas: exact totals.
        parts = [events[200:][i::8] for i in range(8)]
        answers = list(pool.map(lambda p: (ca if p[0] % 2 else cb).record(p[1]), enumerate(parts)))
        assert sum(x["accepted"] for x in answers) == 1800
        # One batch replayed three times at once: counted once.
        replay = conversions(cb.decide_many("landing", [f"w{i}" for i in range(300)]))
        with Client(a.url, ADMIN_KEY) as admin:
            wait_for(lambda: totals(admin)[0] == 2300)
        answers = list(pool.map(lambda c: c.record(replay), (ca, cb, ca)))
        assert sum(x["accepted"] for x in answers) == 300
        assert sum(x["duplicates"] for x in answers) == 600
    with Client(a.url, ADMIN_KEY) as admin:
        wait_for(lambda: totals(admin) == (2300, 2300))


def test_database_outage_keeps_decisions_flowing_and_loses_no_event(pg_url: str, tmp_path: Path,
                                                                     replicas: list[Replica]) -> None:
    apply(pg_url, tmp_path)
    upstream = make_url(pg_url)
    proxy = Proxy(upstream.host or "127.0.0.1", upstream.port or 5432)
    replica = Replica(upstream.set(port=proxy.port).render_as_string(hide_password=False), tmp_path / "r").start()
    replicas.append(replica)
    statuses: Counter[int] = Counter()
    reasons: Counter[str] = Counter()
    made: list[dict] = []
    stop = threading.Event()

    def load() -> None:
        with Client(replica.url, DECIDE_KEY, retries=0, timeout=10) as c:
            i = 0
            while not stop.is_set():
                units = [f"u{i}-{k}" for k in range(20)]
                i += 1
                r = c._http.post("/v1/experiments/landing/decisions:batch",
                                 json={"units": [{"unit": u} for u in units]})
                statuses[r.status_code] += 1
                if r.status_code != 200:
                    continue
                batch = r.json()["decisions"]
                made.extend(batch)
                reasons.update(d["reason"] for d in batch)
                r = c._http.post("/v1/events", json={"events": conversions(batch)[::3]})
                statuses[r.status_code] += 1
                time.sleep(0.01)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(3)
        proxy.down()
        time.sleep(30)
        proxy.up()
        time.sleep(5)
    finally:
        stop.set()
        worker.join()
    assert not [s for s in statuses if s >= 500], statuses
    assert reasons["STALE"] > 0 and reasons["SPLIT"] > 0, reasons
    assert statuses[202] > 0, statuses  # events spooled during the outage
    exposures = sum(1 for d in made if d["in_experiment"])
    converted = len({e["event_id"] for e in _posted(made)})
    with Client(replica.url, ADMIN_KEY) as admin:
        wait_for(lambda: totals(admin) == (exposures, converted), timeout=60)


def _posted(made: list[dict]) -> list[dict]:
    """The conversions the load loop posted: every third of each batch of 20 decisions."""
    return [e for start in range(0, len(made), 20) for e in conversions(made[start:start + 20])[::3]]


def test_replica_killed_mid_batch_then_retried_counts_exactly(db_url: str, tmp_path: Path,
                                                              replicas: list[Replica]) -> None:
    apply(db_url, tmp_path)
    replica = Replica(db_url, tmp_path / "r").start()
    replicas.append(replica)
    with Client(replica.url, DECIDE_KEY) as c, Client(replica.url, ADMIN_KEY) as admin:
        decisions = c.decide_many("landing", [f"u{i}" for i in range(5000)])
        wait_for(lambda: totals(admin) == (5000, 0))
    events = conversions(decisions)
    sent = threading.Thread(target=lambda: _post_ignoring_errors(replica.url, events))
    sent.start()
    with Client(replica.url, ADMIN_KEY, retries=0) as admin:
        wait_for(lambda: totals(admin)[1] > 0, timeout=60)  # the batch is being applied
    replica.kill()
    sent.join()
    replica.start()
    with Client(replica.url, DECIDE_KEY) as c, Client(replica.url, ADMIN_KEY) as admin:
        answer = c.record(events)  # the client's retry
        assert answer["accepted"] + answer["duplicates"] == 5000 and answer["rejected"] == []
        assert answer["duplicates"] > 0
        assert totals(admin) == (5000, 5000)


def _post_ignoring_errors(url: str, events: list[dict]) -> None:
    try:
        with Client(url, DECIDE_KEY, retries=0, timeout=60) as c:
            c.record(events)
    except ServiceError:
        pass  # the replica was killed under it
