"""`crosspromo demo`: the whole loop on a fresh SQLite file with a simulated population.

The population (configs/demo.yaml) is seeded: each user opts into channels with the listed
probabilities and belongs to a latent segment (`segments:`) whose attributes are passed as
context; every running experiment is asked for a decision, and an exposed user converts
with the true rate of the arm served, modulated by the user's segment for the experiments
the segments apply to (revenue: a lognormal order value with the listed mean, sigma 0.5).
Conversions are reported back in batches, as a service would.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from engine.api import Engine
from engine.classify import tag_from_catalogue
from engine.config import load_config
from engine.db import sqlite_header
from engine.measures import MetricType
from engine.report import Report, build_report
from engine.spec import ExperimentSpec, Status
from engine.store import Store
from policies.simulation.population import Population, PopulationModel, SegmentProfile, draw_population

# Stamped in the SQLite header of every demo store (`PRAGMA application_id`, "cprd"): `demo`
# replaces an existing --out file only if it carries this stamp, unless forced.
DEMO_APPLICATION_ID = 0x63707264
REVENUE_SIGMA = 0.5
FEEDBACK_EVERY = 1000  # users between two batches of reported conversions
USERS_PER_SECOND = 1000.0  # simulated arrivals: weights and models refit after the same users on every run


@dataclass(frozen=True)
class ArmTruth:
    """An arm's true behaviour: its primary conversion rate (and mean order value), and the
    rates of other binary metrics (`{rate: 0.03, unsubscribe: 0.01}` in configs/demo.yaml)."""

    rate: float
    mean_value: float = 1.0
    metric_rates: tuple[tuple[str, float], ...] = ()


class SimulatedClock:
    """The engine's clock in the demo: seconds of simulated time, set as users arrive, so
    refits and flushes depend on the seed alone, never on how fast the machine runs."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class DemoResult:
    db_path: Path
    users: int
    decisions: int
    conversions: int
    reports: list[Report]


def load_truth(path: Path) -> dict[str, Any]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or "experiments" not in raw:
        raise ValueError(f"{path}: expected seed, users, channels_opt_in and experiments")
    return raw


def _arm_truth(value: Any) -> ArmTruth:
    if isinstance(value, dict):
        others = tuple((str(k), float(v)) for k, v in value.items() if k not in ("rate", "mean_value"))
        return ArmTruth(float(value["rate"]), float(value.get("mean_value", 1.0)), others)
    return ArmTruth(float(value))


@dataclass(frozen=True)
class DemoSegments:
    """The drawn users' segments and contexts, and the true rates they induce per experiment."""

    population: Population
    contexts: list[dict[str, str]]
    rates: dict[str, np.ndarray]  # experiment -> (segments x arms) true rates


def draw_segments(raw: dict[str, Any], specs: list[ExperimentSpec], truth: dict[str, dict[str, ArmTruth]],
                  users: int, rng: np.random.Generator) -> DemoSegments:
    """Draw users from the `segments:` block of configs/demo.yaml (policies/population.py)."""
    groups = raw["groups"]
    attributes = sorted({a for g in groups for a in g["context"]})
    levels = {a: sorted({str(g["context"][a]) for g in groups if a in g["context"]}) for a in attributes}
    profiles = tuple(
        SegmentProfile(str(g["name"]), float(g["share"]),
                       tuple(levels[a].index(str(g["context"].get(a, levels[a][0]))) for a in attributes),
                       str(g["campaign"]), str(g["channel"]))
        for g in groups
    )
    applies = [s for s in specs if s.key in raw.get("applies_to", [])]
    if not applies:
        raise ValueError("segments.applies_to must name at least one running experiment")
    models = {
        s.key: PopulationModel(
            tuple(a.campaign for a in s.arms), tuple(a.channel.value for a in s.arms),
            tuple(truth[s.key][a].rate for a in s.arm_keys), profiles, tuple(len(levels[a]) for a in attributes),
            product_lift=float(raw.get("product_lift", 2.0)), channel_lift=float(raw.get("channel_lift", 1.5)),
            noise=float(raw.get("noise", 0.1)))
        for s in applies
    }
    population = draw_population(next(iter(models.values())), users, rng)
    contexts = [{a: levels[a][code] for a, code in zip(attributes, row, strict=True)}
                for row in population.attributes.tolist()]
    return DemoSegments(population, contexts, {k: m.rates for k, m in models.items()})


def is_demo_store(path: Path) -> bool:
    """Whether `path` is a SQLite file stamped as a demo store (read from its header only)."""
    header = sqlite_header(path)
    return header is not None and int.from_bytes(header[68:72], "big") == DEMO_APPLICATION_ID


def check_out(path: Path, force: bool) -> None:
    """Refuse `path` as the demo's store unless it is free, a previous demo store, or `force`:
    anything else there (a populated store, any other file) is not the demo's to replace."""
    if path.is_dir():
        raise ValueError(f"--out {path}: is a directory; name the demo's SQLite file")
    if not path.parent.is_dir():
        raise ValueError(f"--out {path}: directory {path.parent} does not exist")
    if path.exists() and not force and not is_demo_store(path):
        raise ValueError(f"--out {path}: exists and is not a demo store; refusing to replace it "
                         "(choose another --out, or pass --force to replace it)")


def _fresh(path: Path) -> None:
    """Remove the previous demo store at `path` (see `check_out`) and stamp a new, empty one."""
    for suffix in ("", "-wal", "-shm", ".write-lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with sqlite3.connect(path) as stamp:
        stamp.execute(f"PRAGMA application_id = {DEMO_APPLICATION_ID}")
    stamp.close()


def run_demo(db_path: Path, config_path: Path, experiments_dir: Path, *, users: int | None = None,
             seed: int | None = None, force: bool = False,
             notice: Callable[[str], None] = lambda _: None) -> DemoResult:
    check_out(db_path, force)
    truth = load_truth(config_path)
    seed = int(truth.get("seed", 0)) if seed is None else seed
    users = int(truth.get("users", 50_000)) if users is None else users
    rng = np.random.default_rng(seed)
    _fresh(db_path)
    notice(f"demo database: {db_path.resolve()}")
    opt_in = {str(k): float(v) for k, v in truth.get("channels_opt_in", {}).items()}

    clock = SimulatedClock()
    with Engine(Store(f"sqlite:///{db_path}"), load_config(), np.random.default_rng(seed), clock=clock) as engine:
        engine.apply([experiments_dir])
        if truth.get("catalogue"):  # tag the arms that declare a description but no tags
            notice(tag_from_catalogue(engine.store, config_path.parent / str(truth["catalogue"])))
        running = [s.spec for s in engine.experiments() if s.spec.status is Status.RUNNING]
        rates = {}
        for spec in running:
            declared = truth["experiments"].get(spec.key)
            if declared is None:
                raise ValueError(f"{config_path}: no true rates for experiment {spec.key!r}")
            rates[spec.key] = {arm: _arm_truth(declared[arm]) for arm in spec.arm_keys}
        notice(f"simulating {users:,} users through {len(running)} experiments (seed {seed})")
        segments = (draw_segments(truth["segments"], running, rates, users, rng.spawn(1)[0])
                    if truth.get("segments") else None)

        channels = list(opt_in)
        decisions = conversions = 0
        pending: list[dict[str, Any]] = []
        for u in range(users):
            clock.now = u / USERS_PER_SECOND
            unit = f"user-{u:07d}"
            opted = [c for c, p in zip(channels, rng.random(len(channels)), strict=True) if p < opt_in[c]]
            context: dict[str, Any] = {"opted_in": opted}
            if segments is not None:
                context.update(segments.contexts[u])
            for spec in running:
                d = engine.decide(spec.key, unit, context)
                if not d.in_experiment or d.arm is None:
                    continue
                decisions += 1
                arm = rates[spec.key][d.arm]
                rate = arm.rate
                if segments is not None and spec.key in segments.rates:
                    rate = segments.rates[spec.key][segments.population.segments[u], spec.arm_keys.index(d.arm)]
                for metric, metric_rate in arm.metric_rates:  # e.g. unsubscribes, a guardrail
                    if rng.random() < metric_rate:
                        pending.append({"event_id": f"{d.decision_id}:{metric}", "experiment": spec.key,
                                        "decision_id": d.decision_id, "metric": metric})
                if rng.random() >= rate:
                    continue
                event: dict[str, Any] = {"event_id": f"{d.decision_id}:conv", "type": "conversion",
                                         "experiment": spec.key, "decision_id": d.decision_id}
                if spec.primary.type is MetricType.REVENUE:
                    mu = math.log(arm.mean_value) - REVENUE_SIGMA**2 / 2
                    event["value"] = round(float(rng.lognormal(mu, REVENUE_SIGMA)), 2)
                pending.append(event)
            if (u + 1) % FEEDBACK_EVERY == 0 or u + 1 == users:
                conversions += engine.ingest(pending).accepted
                pending = []
        notice(f"{decisions:,} exposures, {conversions:,} conversions recorded")
        reports = [build_report(engine, spec.key) for spec in running]
    return DemoResult(db_path, users, decisions, conversions, reports)
