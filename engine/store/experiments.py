"""Stored experiments: versioned declarations and the plan that applying new ones makes.

A change that would move units between arms of a running A/B test (or strand a sticky
bandit's units) is refused unless a new phase is declared.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Literal

from sqlalchemy import Connection, select

from engine.db import insert_if_absent
from engine.events import utcnow
from engine.spec import Arm, ExperimentSpec, Kind, Status
from engine.tables import ARM_STATS, EXPERIMENTS, VERSIONS

Action = Literal["create", "update", "unchanged", "refused"]



@dataclass(frozen=True)
class StoredExperiment:
    spec: ExperimentSpec
    version: int

    @cached_property
    def arms(self) -> dict[str, Arm]:
        return {a.key: a for a in self.spec.arms}

    @property
    def phase(self) -> int:
        return self.spec.traffic.phase



@dataclass(frozen=True)
class PlanItem:
    key: str
    action: Action
    version: int | None
    changes: tuple[str, ...] = ()
    reason: str = ""
    hint: str = ""



@lru_cache(maxsize=256)
def parse_spec(spec_json: str) -> ExperimentSpec:
    return ExperimentSpec.model_validate_json(spec_json)


def specs_of_versions(conn: Connection, versions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], ExperimentSpec]:
    """The declarations that given (key, version) pairs were decided under."""
    v = VERSIONS.c
    out = {}
    for key, version in sorted(set(versions)):
        spec_json = conn.execute(select(v.spec_json).where(v.key == key, v.version == version)).scalar_one_or_none()
        if spec_json is not None:
            out[(key, version)] = parse_spec(spec_json)
    return out


def load_experiments(conn: Connection) -> dict[str, StoredExperiment]:
    out = {}
    for spec_json, version in conn.execute(select(EXPERIMENTS.c.spec_json, EXPERIMENTS.c.version)).all():
        spec = parse_spec(spec_json)
        out[spec.key] = StoredExperiment(spec, version)
    return out


def plan_experiment(conn: Connection, spec: ExperimentSpec) -> PlanItem:
    row = conn.execute(
        select(EXPERIMENTS.c.spec_json, EXPERIMENTS.c.version).where(EXPERIMENTS.c.key == spec.key)
    ).first()
    if row is None:
        return PlanItem(spec.key, "create", 1, ("new experiment",))
    old = ExperimentSpec.model_validate_json(row.spec_json)
    if old == spec:
        return PlanItem(spec.key, "unchanged", row.version)
    unsafe = _unsafe_change(old, spec)
    changes = tuple(_changes(old, spec))
    if unsafe:
        return PlanItem(
            spec.key, "refused", row.version, changes, unsafe,
            f"declare traffic.phase: {old.traffic.phase + 1} to start a new phase "
            "(its analysis starts from zero), or stop the experiment first",
        )
    return PlanItem(spec.key, "update", row.version + 1, changes)


def write_experiment(conn: Connection, spec: ExperimentSpec, version: int, is_new: bool) -> None:
    """Store `spec` as `version`, keep it in the version history, and create its arms' counters."""
    now = utcnow()
    spec_json = spec.model_dump_json(by_alias=True)
    values = dict(version=version, phase=spec.traffic.phase, status=spec.status.value,
                  kind=spec.kind.value, spec_json=spec_json, updated_at=now)
    if is_new:
        conn.execute(EXPERIMENTS.insert().values(key=spec.key, **values))
    else:
        conn.execute(EXPERIMENTS.update().where(EXPERIMENTS.c.key == spec.key).values(**values))
    conn.execute(VERSIONS.insert().values(key=spec.key, version=version, spec_json=spec_json, applied_at=now))
    for arm in spec.arm_keys:
        insert_if_absent(conn, ARM_STATS, dict(experiment=spec.key, phase=spec.traffic.phase, arm=arm,
                                               exposures=0, conversions=0, total=0.0, total_sq=0.0))


def _changes(old: ExperimentSpec, new: ExperimentSpec) -> list[str]:
    before, after = old.to_json_dict(), new.to_json_dict()
    return [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in after if before.get(k) != after.get(k)]



def _unsafe_change(old: ExperimentSpec, new: ExperimentSpec) -> str:
    """Why applying `new` over a running A/B test (or sticky bandit) would move units between
    arms ('' if it would not)."""
    if old.status is not Status.RUNNING:
        return ""
    if old.kind is Kind.BANDIT:
        sticky_arm_removed = old.traffic.sticky and not set(old.arm_keys) <= set(new.arm_keys)
        if sticky_arm_removed and new.traffic.phase == old.traffic.phase:
            return "removing an arm of a running sticky bandit strands the units that hold it"
        return ""
    if new.traffic.phase > old.traffic.phase:
        return ""
    if new.traffic.phase < old.traffic.phase:
        return f"traffic.phase cannot go back from {old.traffic.phase} to {new.traffic.phase}"
    if new.kind is not old.kind:
        return "changing kind reassigns every unit"
    if new.arm_keys != old.arm_keys:
        return "changing the arms of a running A/B test reshuffles its units"
    if new.weights != old.weights:
        return "changing the weights of a running A/B test reshuffles its units"
    if new.seed != old.seed:
        return "changing traffic.seed reshuffles every unit"
    if new.traffic.coverage < old.traffic.coverage:
        return "lowering coverage removes units that were already exposed"
    if new.analysis_unit is not old.analysis_unit:
        return "changing analysis.unit of a running experiment mixes users and decisions in one analysis"
    if new.primary.name != old.primary.name:
        return "changing the primary metric of a running A/B test moves the goal posts; start a new phase"
    before = {m.name: (m.type, m.window) for m in old.measures}
    for m in new.measures:
        if m.name in before and before[m.name] != (m.type, m.window):
            return f"changing the type or window of metric {m.name!r} mixes two measurements in one analysis"
    return ""
