from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.exc import OperationalError

from engine.api import Engine
from engine.config import load_config
from engine.decision import Reason
from engine.spool import Spool
from engine.store import Store
from tests.samples import AB_YAML, BANDIT_YAML, REVENUE_YAML, write_yaml

STICKY = BANDIT_YAML.replace("eligibility:", "traffic: {sticky: true}\neligibility:")


def test_sticky_bandit_units_keep_their_first_arm_across_engines(db_url: str, tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "b.yaml", STICKY)
    with Engine.open(db_url, seed=1) as first, Engine.open(db_url, seed=2) as second:
        first.apply([path])
        barrier = threading.Barrier(2)
        arms: dict[str, list[str]] = {"a": [], "b": []}

        def decide(engine: Engine, name: str) -> None:
            barrier.wait()
            for i in range(200):
                arms[name].append(engine.decide("channels", f"unit-{i}").arm)

        threads = [threading.Thread(target=decide, args=(e, n)) for e, n in ((first, "a"), (second, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert arms["a"] == arms["b"]
        assert len(set(arms["a"])) > 1
        assert [first.decide("channels", f"unit-{i}").arm for i in range(200)] == arms["a"]


def _bandit_with(policy: str, tmp_path: Path) -> Path:
    cadence = "update: {every_outcomes: 100, every_seconds: 600}"
    text = BANDIT_YAML.replace("policy: {name: thompson, update: {every_outcomes: 50, every_seconds: 60}}",
                               f"policy: {{name: thompson, {policy}, {cadence}}}")
    return write_yaml(tmp_path, "b.yaml", text)


def test_recent_sums_by_age_bucket(sqlite_url: str, tmp_path: Path) -> None:
    with Engine.open(sqlite_url, seed=0) as e:
        e.apply([_bandit_with("window: 300", tmp_path)])
        decisions = e.decide_many("channels", [f"u{i}" for i in range(500)])
        for d in decisions[-150:]:
            e.record({"event_id": f"c-{d.decision_id}", "experiment": "channels", "decision_id": d.decision_id})
        sums = e.store.recent_sums("channels", 1, ("by-email", "by-push", "by-sms"), limit=300, bucket=100)
        assert sums.shape == (3, 3, 4)
        assert sums[:, :, 0].sum() == 300 and sums[:, 0, 0].sum() == 100
        assert sums[:, 0, 1].sum() == 100 and sums[:, 1, 1].sum() == 50 and sums[:, 2, 1].sum() == 0


@pytest.mark.parametrize("policy", ["window: 400", "discount: 0.5"])
def test_forgetful_bandits_follow_a_drifting_best_arm(sqlite_url: str, tmp_path: Path, policy: str) -> None:
    rng = np.random.default_rng(7)
    with Engine.open(sqlite_url, seed=0) as e:
        e.apply([_bandit_with(policy, tmp_path)])
        for phase_rates in ({"by-email": 0.30, "by-push": 0.05, "by-sms": 0.05},
                            {"by-email": 0.05, "by-push": 0.05, "by-sms": 0.30}):
            for i in range(2000):
                d = e.decide("channels", f"u{i}")
                if rng.random() < phase_rates[d.arm]:
                    e.record({"event_id": f"c-{d.decision_id}", "experiment": "channels", "decision_id": d.decision_id})
        weights = dict(zip(("by-email", "by-push", "by-sms"), e.weights("channels"), strict=True))
        assert weights["by-sms"] > 0.9, weights


class _Outage:
    """Makes every store call fail as if the database server were down."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.down = False
        store = engine.store
        for name in ("log_exposures", "apply_events", "experiments", "arm_aggregates", "ping", "claim_assignment"):
            real = getattr(store, name)

            def failing(*args: object, _real=real, **kwargs: object) -> object:
                if self.down:
                    raise OperationalError("SELECT 1", {}, Exception("connection refused"))
                return _real(*args, **kwargs)

            monkeypatch.setattr(store, name, failing)


def test_outage_serves_stale_decisions_and_spools_writes(db_url: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool" / "replica.jsonl")
    with Engine.open(db_url, seed=0, spool=spool) as e:
        e.apply([write_yaml(tmp_path, "l.yaml", AB_YAML), write_yaml(tmp_path, "b.yaml", BANDIT_YAML)])
        e.start_background(interval=0.05)
        outage = _Outage(e, monkeypatch)
        before = [e.decide("landing", f"u{i}") for i in range(50)]
        e.maintain()
        outage.down = True
        during = [e.decide("landing", f"v{i}") for i in range(50)]
        e.maintain()
        during += [e.decide("landing", f"w{i}") for i in range(50)] + [e.decide("channels", "x")]
        assert e.stale and {d.reason for d in during[50:]} == {Reason.STALE}
        summary = e.ingest([{"event_id": f"c-{d.decision_id}", "experiment": "landing", "decision_id": d.decision_id}
                            for d in before + during[:-1]] + [{"event_id": "bad", "experiment": "nope", "unit": "u"}])
        assert (summary.accepted, summary.spooled, len(summary.rejected)) == (0, 150, 1)
        e.maintain()
        assert spool.size() > 0
        outage.down = False
        e.maintain()
        assert not e.stale and spool.size() == 0
        _, aggs = e.aggregates("landing")
        assert sum(a.exposures for a in aggs) == 150 and sum(a.conversions for a in aggs) == 150
        # The client retries the same batch: nothing is counted twice.
        again = e.ingest([{"event_id": f"c-{d.decision_id}", "experiment": "landing", "decision_id": d.decision_id}
                          for d in before])
        assert (again.accepted, again.duplicates) == (0, 50)


def test_spool_survives_a_torn_last_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl")
    spool.append([{"kind": "event", "n": 1}, {"kind": "event", "n": 2}])
    with spool.path.open("a") as fh:
        fh.write('{"kind": "ev')
    seen: list[dict] = []
    assert spool.drain(lambda records: seen.extend(records) or []) == 2 and [r["n"] for r in seen] == [1, 2]
    assert spool.size() == 0


def test_spool_is_bounded(tmp_path: Path) -> None:
    from engine.spool import SpoolFullError

    spool = Spool(tmp_path / "s.jsonl", max_bytes=100)
    spool.append([{"x": 1}])
    with pytest.raises(SpoolFullError):
        spool.append([{"x": "y" * 200}])


def test_a_new_replica_adopts_the_spool_of_a_dead_one(tmp_path: Path) -> None:
    import subprocess
    import sys

    from engine.config import EngineConfig
    from engine.server import replica_spool

    config = EngineConfig(spool_dir=tmp_path / "spool")
    # A replica that spooled two records and died (its process, and so its lock, is gone).
    dead = config.spool_dir / "dead.jsonl"
    code = (f"from pathlib import Path; from engine.spool import Spool; s = Spool(Path(r'{dead}'));"
            "s.take_ownership(); s.append([{'kind': 'event', 'n': 1}, {'kind': 'event', 'n': 2}])")
    subprocess.run([sys.executable, "-c", code], check=True)
    held = Spool(config.spool_dir / "alive.jsonl")
    assert held.take_ownership()  # a live replica's spool is left alone
    held.append([{"kind": "event", "n": 3}])

    mine = replica_spool(config)
    adopted: list[dict] = []
    mine.drain(lambda records: adopted.extend(records) or [])
    assert [r["n"] for r in adopted] == [1, 2]
    assert not dead.exists()
    assert (config.spool_dir / "alive.jsonl").exists()


def test_an_append_after_a_torn_line_stays_readable(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl")
    spool.append([{"kind": "event", "n": 1}])
    with spool.path.open("a") as fh:
        fh.write('{"kind": "ev')  # a crash mid-append
    spool.append([{"kind": "event", "n": 2}])
    spool.append([{"kind": "event", "n": 3}])
    seen: list[dict] = []
    assert spool.drain(lambda records: seen.extend(records) or []) == 3
    assert [r["n"] for r in seen] == [1, 2, 3]


def test_a_full_spool_keeps_exposures_in_memory(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.spool import SpoolFullError

    spool = Spool(tmp_path / "spool.jsonl", max_bytes=10)
    with Engine.open(db_url, seed=0, spool=spool) as e:
        e.apply([write_yaml(tmp_path, "l.yaml", AB_YAML)])
        e.experiment("landing")  # snapshot taken while the store answers
        outage = _Outage(e, monkeypatch)
        outage.down = True
        e.decide_many("landing", [f"u{i}" for i in range(20)])
        with pytest.raises(SpoolFullError):
            e.flush()
        outage.down = False
        assert e.flush() == 20


def test_a_full_buffer_makes_decisions_wait_for_the_write(sqlite_url: str, tmp_path: Path) -> None:
    # A background writer that never gets to run: the decide path writes once the bound is hit.
    config = dataclasses.replace(load_config(), exposure_max_buffered=100)
    with Engine(Store(sqlite_url), config, np.random.default_rng(0)) as e:
        e.apply([write_yaml(tmp_path, "l.yaml", AB_YAML)])
        e.start_background(interval=3600)
        for i in range(250):
            e.decide("landing", f"u{i}")
            assert len(e.writer.buffer) < 100
        assert e.store.counts()["decisions"] >= 150


def test_during_an_outage_events_the_store_would_refuse_are_refused_not_spooled(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool" / "replica.jsonl")
    with Engine.open(sqlite_url, seed=0, spool=spool) as e:
        e.apply([write_yaml(tmp_path, "r.yaml", REVENUE_YAML)])
        e.experiment("bundle")  # in the snapshot before the outage
        _Outage(e, monkeypatch).down = True
        summary = e.ingest([{"event_id": "c1", "experiment": "bundle", "unit": "u1"},
                            {"event_id": "c2", "experiment": "bundle", "unit": "u1", "value": 5}])
        assert summary.rejected == [(1, "value: required for the revenue metric 'revenue'")] and summary.spooled == 1
