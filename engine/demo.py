"""`crosspromo demo`: the whole loop on a fresh SQLite file with a simulated population.

The population (configs/demo.yaml) is seeded: each user opts into channels with the listed
probabilities; every running experiment is asked for a decision, and an exposed user
converts with the true rate of the arm served (revenue: a lognormal order value with the
listed mean, sigma 0.5). Conversions are reported back in batches, as a service would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from engine.api import Engine
from engine.report import Report, build_report
from engine.spec import MetricType, Status

REVENUE_SIGMA = 0.5
FEEDBACK_EVERY = 1000  # users between two batches of reported conversions


@dataclass(frozen=True)
class ArmTruth:
    rate: float
    mean_value: float = 1.0


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
        return ArmTruth(float(value["rate"]), float(value.get("mean_value", 1.0)))
    return ArmTruth(float(value))


def _fresh(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def run_demo(db_path: Path, config_path: Path, experiments_dir: Path, *, users: int | None = None,
             seed: int | None = None, notice: Callable[[str], None] = lambda _: None) -> DemoResult:
    truth = load_truth(config_path)
    seed = int(truth.get("seed", 0)) if seed is None else seed
    users = int(truth.get("users", 50_000)) if users is None else users
    rng = np.random.default_rng(seed)
    _fresh(db_path)
    notice(f"demo database: {db_path.resolve()}")
    opt_in = {str(k): float(v) for k, v in truth.get("channels_opt_in", {}).items()}

    with Engine.open(f"sqlite:///{db_path}", seed=seed) as engine:
        engine.apply([experiments_dir])
        running = [s.spec for s in engine.experiments() if s.spec.status is Status.RUNNING]
        rates = {}
        for spec in running:
            declared = truth["experiments"].get(spec.key)
            if declared is None:
                raise ValueError(f"{config_path}: no true rates for experiment {spec.key!r}")
            rates[spec.key] = {arm: _arm_truth(declared[arm]) for arm in spec.arm_keys}
        notice(f"simulating {users:,} users through {len(running)} experiments (seed {seed})")

        channels = list(opt_in)
        decisions = conversions = 0
        pending: list[dict[str, Any]] = []
        for u in range(users):
            unit = f"user-{u:07d}"
            opted = [c for c, p in zip(channels, rng.random(len(channels)), strict=True) if p < opt_in[c]]
            context = {"opted_in": opted}
            for spec in running:
                d = engine.decide(spec.key, unit, context)
                if not d.in_experiment or d.arm is None:
                    continue
                decisions += 1
                arm = rates[spec.key][d.arm]
                if rng.random() >= arm.rate:
                    continue
                event: dict[str, Any] = {"event_id": f"{d.decision_id}:conv", "type": "conversion",
                                         "experiment": spec.key, "decision_id": d.decision_id}
                if spec.metric.type is MetricType.REVENUE:
                    mu = math.log(arm.mean_value) - REVENUE_SIGMA**2 / 2
                    event["value"] = round(float(rng.lognormal(mu, REVENUE_SIGMA)), 2)
                pending.append(event)
            if (u + 1) % FEEDBACK_EVERY == 0 or u + 1 == users:
                conversions += engine.ingest(pending).accepted
                pending = []
        notice(f"{decisions:,} exposures, {conversions:,} conversions recorded")
        reports = [build_report(engine, spec.key) for spec in running]
    return DemoResult(db_path, users, decisions, conversions, reports)
