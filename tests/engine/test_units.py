"""Per-unit accounting: users not decisions, conversion windows, several metrics, costs, and
sums that come out the same whatever the arrival order, exactly once across replicas."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.api import Engine
from engine.config import EngineConfig
from engine.events import EventError
from engine.store.ledger import recount_unit
from policies.sufficient import BinaryStats, MeanStats
from tests.samples import write_yaml

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

MULTI_YAML = """\
schema: 1
key: promo
name: Course promo with guardrails
owner: growth@example.com
status: running
kind: ab_test
metrics:
  - {name: purchase, type: binary, role: primary, window: 7d}
  - {name: revenue, type: revenue, role: secondary, window: 7d, net: true, allow_negative: true}
  - {name: unsubscribe, type: binary, role: guardrail, direction: decrease, margin: 0.2, window: 3d}
arms:
  - {key: email, campaign: c, partner: music, channel: email, weight: 0.5, cost: 0.01}
  - {key: sms, campaign: c, partner: music, channel: sms, weight: 0.5}
analysis: {control: email}
"""

# A non-sticky bandit read per user: a unit may meet several arms.
ROAMING_YAML = """\
schema: 1
key: roaming
name: Roaming bandit
owner: growth@example.com
status: running
kind: bandit
policy: {name: epsilon_greedy, epsilon: 1.0}
metric: {name: purchase, type: binary}
analysis: {unit: user}
arms:
  - {key: a, campaign: c, partner: music, channel: email}
  - {key: b, campaign: c, partner: music, channel: push}
"""


@pytest.fixture
def promo(db_url: str, tmp_path: Path) -> Iterator[Engine]:
    exp = tmp_path / "experiments"
    write_yaml(exp, "promo.yaml", MULTI_YAML)
    write_yaml(exp, "roaming.yaml", ROAMING_YAML)
    with Engine.open(db_url, seed=0, config=EngineConfig(channel_costs={"sms": 0.05})) as e:
        e.apply([exp])
        yield e


def exposure(event_id: str, unit: str, arm: str, at: timedelta) -> dict:
    return {"event_id": event_id, "type": "exposure", "experiment": "promo", "unit": unit, "arm": arm,
            "ts": (T0 + at).isoformat()}


def conversion(event_id: str, unit: str, at: timedelta, metric: str | None = None, value: float | None = None) -> dict:
    event = {"event_id": event_id, "experiment": "promo", "unit": unit, "ts": (T0 + at).isoformat()}
    if metric is not None:
        event["metric"] = metric
    if value is not None:
        event["value"] = value
    return event


def test_a_user_deciding_three_times_is_one_unit_with_three_decisions(promo: Engine) -> None:
    arms = {promo.decide("promo", "u1").arm for _ in range(3)}
    assert len(arms) == 1  # an A/B unit is sticky by its hash
    promo.record({"event_id": "c1", "experiment": "promo", "unit": "u1"})
    promo.record({"event_id": "c2", "experiment": "promo", "unit": "u1"})
    _, tally = promo.tally("promo")
    i = promo.experiment("promo").spec.arm_keys.index(arms.pop())
    assert (tally.units[i].units, tally.units[i].decisions, tally.units[i].decisions_sq) == (1, 3, 9)
    assert tally.metric("purchase")[i].conversions == 1  # a binary metric counts a unit once
    report = promo.report("promo").to_dict()
    row = report["arms"][i]
    assert (row["exposures"], row["decisions"], row["conversions"]) == (1, 3, 1)
    assert report["analysis_unit"] == "user"


def test_conversions_count_only_within_the_window_of_the_first_exposure(promo: Engine) -> None:
    promo.ingest([
        exposure("x1", "u1", "email", timedelta(0)),
        exposure("x2", "u1", "email", timedelta(days=5)),  # a later decision does not move the start
        conversion("early", "u1", timedelta(hours=-1)),  # before the first exposure: stored, not counted
        conversion("unsub-late", "u1", timedelta(days=4), metric="unsubscribe"),  # past its 3d window
        conversion("rev-1", "u1", timedelta(days=6), metric="revenue", value=20.0),
        conversion("rev-late", "u1", timedelta(days=8), metric="revenue", value=99.0),  # past 7d
    ])
    _, tally = promo.tally("promo")
    email = tally.metrics
    assert tally.metric("purchase")[0].conversions == 0
    assert tally.metric("unsubscribe")[0].conversions == 0
    assert (email["revenue"][0].conversions, email["revenue"][0].total) == (1, 20.0)
    assert promo.store.counts()["events"] == 6  # every event is kept


def test_revenue_sums_per_unit_and_net_value_subtracts_cost_per_decision(promo: Engine) -> None:
    promo.ingest([
        exposure("x1", "u1", "email", timedelta(0)), exposure("x2", "u1", "email", timedelta(hours=1)),
        exposure("x3", "u2", "email", timedelta(0)),
        exposure("x4", "u3", "sms", timedelta(0)),
        conversion("r1", "u1", timedelta(hours=2), "revenue", 10.0),
        conversion("r2", "u1", timedelta(hours=3), "revenue", 5.0),
        conversion("r3", "u3", timedelta(hours=3), "revenue", 8.0),
        conversion("refund", "u3", timedelta(hours=4), "revenue", -3.0),  # allow_negative: refunds
    ])
    stored, tally = promo.tally("promo")
    revenue = stored.spec.measure("revenue")
    assert revenue is not None
    stats = tally.stats(revenue, promo.costs(stored.spec))
    # email: u1 = 15 - 2 x 0.01, u2 = 0 - 0.01; sms (channel default 0.05): u3 = 5 - 0.05
    expected = [[15 - 0.02, -0.01], [5 - 0.05]]
    for got, values in zip(stats, expected, strict=True):
        assert isinstance(got, MeanStats)
        assert got.n == len(values)
        assert got.total == pytest.approx(sum(values))
        assert got.total_sq == pytest.approx(sum(v * v for v in values))
    report = promo.report("promo").to_dict()
    email, sms = report["arms"]
    assert email["cost"] == 0.01 and sms["cost"] == 0.05
    assert email["net_value_per_unit"] == pytest.approx((15 - 0.03) / 2)
    assert sms["roi"] == pytest.approx((5 - 0.05) / 0.05)
    assert [m["name"] for m in report["metrics"]] == ["purchase", "revenue", "unsubscribe"]
    assert report["metrics"][2]["role"] == "guardrail" and report["metrics"][2]["margin"] == 0.2


@pytest.mark.parametrize(("event", "reason"), [
    ({"metric": "clicks"}, "metric: 'clicks' is not a metric of 'promo'"),
    ({"metric": "revenue"}, "value: required for the revenue metric 'revenue'"),
    ({"metric": "purchase", "value": -1}, "value: must be >= 0 (metric 'purchase' does not declare allow_negative"),
])
def test_events_are_checked_against_their_metric(promo: Engine, event: dict, reason: str) -> None:
    promo.decide("promo", "u1")
    with pytest.raises(EventError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        promo.record({"event_id": "e", "experiment": "promo", "unit": "u1", **event})


def test_a_unit_seen_in_two_arms_counts_in_its_first_and_is_reported(promo: Engine) -> None:
    promo.ingest([
        {"event_id": "a1", "type": "exposure", "experiment": "roaming", "unit": "u1", "arm": "a",
         "ts": T0.isoformat()},
        {"event_id": "b1", "type": "exposure", "experiment": "roaming", "unit": "u1", "arm": "b",
         "ts": (T0 + timedelta(hours=1)).isoformat()},
        {"event_id": "c1", "experiment": "roaming", "unit": "u1", "ts": (T0 + timedelta(hours=2)).isoformat()},
    ])
    _, tally = promo.tally("roaming")
    assert [u.units for u in tally.units] == [1, 0]
    assert [m.conversions for m in tally.metric("purchase")] == [1, 0]
    assert promo.report("roaming").to_dict()["units_in_several_arms"] == 1


def test_an_earlier_exposure_arriving_late_moves_the_unit_and_recounts_it(promo: Engine) -> None:
    promo.ingest([exposure("x-sms", "u1", "sms", timedelta(days=2)),
                  conversion("c1", "u1", timedelta(days=2, hours=1))])
    assert [u.units for u in promo.tally("promo")[1].units] == [0, 1]
    promo.ingest([exposure("x-email", "u1", "email", timedelta(0))])  # the true first exposure
    _, tally = promo.tally("promo")
    assert [u.units for u in tally.units] == [1, 0]
    assert [u.several_arms for u in tally.units] == [1, 0]
    assert [m.conversions for m in tally.metric("purchase")] == [1, 0]  # day 2 is within 7 days of day 0


# -- order independence -----------------------------------------------------------------

UNITS = ("u1", "u2", "u3")
ARMS = ("email", "sms")
METRICS = (None, "revenue", "unsubscribe")


def _events() -> st.SearchStrategy[list[dict]]:
    hours = st.integers(min_value=0, max_value=24 * 10)
    exposures = st.builds(lambda u, a, h: ("exposure", u, a, h), st.sampled_from(UNITS), st.sampled_from(ARMS), hours)
    conversions = st.builds(lambda u, m, h, v: ("conversion", u, m, h, v), st.sampled_from(UNITS),
                            st.sampled_from(METRICS), hours, st.integers(min_value=-5, max_value=50))
    return st.lists(st.one_of(exposures, conversions), min_size=1, max_size=14)


def _as_events(raw: list[tuple]) -> list[dict]:
    out = []
    for i, item in enumerate(raw):
        if item[0] == "exposure":
            out.append(exposure(f"e{i}", item[1], item[2], timedelta(hours=item[3])))
        else:
            _, unit, metric, h, value = item
            out.append(conversion(f"e{i}", unit, timedelta(hours=h), metric,
                                  float(value) if metric == "revenue" else None))
    return out


def _apply_until_settled(engine: Engine, events: list[dict]) -> None:
    """Apply in the given order; a conversion whose exposure has not arrived is retried after
    the rest (as the spool does), until no event is left waiting for an exposure."""
    waiting = events
    for _ in range(len(events) + 1):
        summary = engine.ingest(waiting)
        missing = {line for line, reason in summary.rejected if "no exposure" in reason}
        waiting = [ev for line, ev in enumerate(waiting, start=1) if line in missing]
        if not waiting:
            return
    assert all(ev.get("type") != "exposure" for ev in waiting)  # conversions of units never exposed


def _snapshot(engine: Engine) -> tuple:
    stored, tally = engine.tally("promo")
    costs = engine.costs(stored.spec)
    return (tuple((u.units, u.decisions, u.decisions_sq, u.several_arms) for u in tally.units),
            tuple(tuple(_rounded(s) for s in tally.stats(m, costs)) for m in stored.spec.measures))


def _rounded(stats: BinaryStats | MeanStats) -> tuple:
    if isinstance(stats, BinaryStats):
        return (stats.n, stats.successes)
    return (stats.n, round(stats.total, 6), round(stats.total_sq, 6))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=_events(), seed=st.integers(min_value=0, max_value=2**16))
def test_counts_are_the_same_whatever_the_arrival_order(tmp_path_factory: pytest.TempPathFactory, raw: list[tuple],
                                                        seed: int) -> None:
    events = _as_events(raw)
    shuffled = events[:]
    random.Random(seed).shuffle(shuffled)
    results = []
    for order in (events, shuffled, [[ev] for ev in shuffled]):
        tmp = tmp_path_factory.mktemp("order")
        write_yaml(tmp / "experiments", "promo.yaml", MULTI_YAML)
        with Engine.open(f"sqlite:///{tmp / 's.db'}", config=EngineConfig(channel_costs={"sms": 0.05})) as e:
            e.apply([tmp / "experiments"])
            if order and isinstance(order[0], list):
                for one in order:  # one event per transaction
                    _apply_until_settled(e, one)
                _apply_until_settled(e, [ev for ev in shuffled if ev.get("type") != "exposure"])
            else:
                _apply_until_settled(e, order)  # type: ignore[arg-type]
            results.append(_snapshot(e))
            _check_equals_recount(e)
    assert results[0] == results[1] == results[2]


def _check_equals_recount(engine: Engine) -> None:
    """Each unit's stored state equals a recount from its raw rows."""
    from sqlalchemy import select

    from engine.db import read
    from engine.tables import UNIT_VALUES, UNITS

    spec = engine.experiment("promo").spec
    with read(engine.store.sa) as conn:
        units = {r.unit: r for r in conn.execute(select(UNITS).where(UNITS.c.experiment == "promo"))}
        values = {(r.unit, r.metric): r for r in conn.execute(select(UNIT_VALUES).where(
            UNIT_VALUES.c.experiment == "promo"))}
        for unit, row in units.items():
            fresh = recount_unit(conn, spec, 1, unit)
            assert fresh is not None
            state, counted = fresh
            assert (state.arm, state.decisions, state.several_arms) == (row.arm, row.decisions, row.several_arms)
            for metric, v in counted.items():
                assert values[(unit, metric)].value == pytest.approx(v.value)


# -- exactly once across replicas ----------------------------------------------------------

def test_two_replicas_ingesting_overlapping_batches_count_each_unit_once(db_url: str, tmp_path: Path) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("replicas share a PostgreSQL server")
    exp = tmp_path / "experiments"
    write_yaml(exp, "promo.yaml", MULTI_YAML)
    config = EngineConfig(channel_costs={"sms": 0.05})
    with Engine.open(db_url, config=config) as a, Engine.open(db_url, config=config) as b:
        a.apply([exp])
        units = [f"u{i}" for i in range(300)]
        exposures = [exposure(f"x{u}", u, ARMS[i % 2], timedelta(0)) for i, u in enumerate(units)]
        a.ingest(exposures)
        events = [conversion(f"c{u}-{k}", u, timedelta(hours=k), "revenue", 1.0) for u in units for k in range(3)]
        events += [conversion(f"p{u}", u, timedelta(hours=1)) for u in units]
        errors: list[BaseException] = []

        def post(engine: Engine, part: list[dict]) -> None:
            try:
                engine.ingest(part)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        # Each replica posts every event (in its own order): every event arrives twice, at once.
        threads = [threading.Thread(target=post, args=(e, random.Random(s).sample(events, len(events))))
                   for s, e in enumerate((a, b, a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        _, tally = a.tally("promo")
        assert [u.units for u in tally.units] == [150, 150]
        assert [m.conversions for m in tally.metric("purchase")] == [150, 150]
        assert [m.total for m in tally.metric("revenue")] == [450.0, 450.0]
        assert [m.total_sq for m in tally.metric("revenue")] == [150 * 9.0, 150 * 9.0]
