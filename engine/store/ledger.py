"""Per-unit accounting: the randomisation unit is the analysis unit.

Why this module is one piece (about 480 lines): every sum a unit takes part in moves in the
same few places (first exposure, conversion, recount, rebuild), and those must change together,
term for term (a sum kept by increments must equal a recount); split, they would drift apart.

Per-user experiments (`analysis.unit: user`): a unit's first exposure in the phase fixes its
arm and the start of its conversion windows. Its later decisions in that arm count as decisions
(what it cost), not as units; a decision in another arm marks it as seen in several arms. A
conversion counts when `start <= ts <= start + window`: once for a binary metric, summed for a
revenue one. Per-decision experiments: each decision is a unit of its own, keyed by its id.

Each unit's state is a row (`units`, `unit_values`), and the per-arm sums (`unit_stats`,
`metric_stats`) change by the differences of unit values, in the transaction that writes the
raw rows: exactly once, and equal to a recount. The unit's row is read `FOR UPDATE`, so
replicas on PostgreSQL take turns per unit. Arrival order does not matter: a conversion is
stored with its time and judged against the unit's start, and an exposure earlier than the
start recounts the unit from its raw rows (`_recount`).

CUPED (`analysis.covariate`): a unit's covariate x is read from the context of its first
exposure and kept on its row; the per-arm sums of x, x^2 and x times decisions (`unit_stats`)
and of x times each metric's value (`metric_stats.covariate_cross`) move with the unit as the
other sums do. A unit without a value counts with x = 0 and is not in `covariate_units`.

Bandit arms are also read through the units' propensities (`policies.stats.bandit_inference`):
a unit's propensity is that of its first decision (per-decision units: their own), kept on its
`units` row, and the sums of w = 1/p, w^2 (`unit_stats`) and w Y, w^2 Y, w^2 Y^2 (`metric_stats`)
follow the unit's value by the same differences. A unit without a propensity (an imported
exposure) is left out of them, and `ipw_units` tells the report so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Connection, Select, bindparam, delete, select, update

from engine.covariate import covariate_value
from engine.db import bulk_insert, member_of
from engine.spec import AnalysisUnit, ExperimentSpec
from engine.store.aggregates import Increments
from engine.tables import DECISIONS, EVENTS, METRIC_STATS, UNIT_STATS, UNIT_VALUES, UNITS
from policies.stats.bandit_inference import propensity_increments

UnitKey = tuple[str, int, str]  # experiment, phase, unit
ValueKey = tuple[str, int, str, str]  # experiment, phase, metric, unit


class Conversion(NamedTuple):
    """A conversion as the ledger needs it: the decision it was attributed to, and its metric."""

    spec: ExperimentSpec
    phase: int
    unit: str
    decision_id: str
    decision_ts: datetime
    arm: str
    metric: str
    value: float | None
    ts: datetime
    propensity: float | None = None
    """The decision's (what a per-decision unit is weighted by)."""


@dataclass
class _Unit:
    arm: str
    first_ts: datetime
    decisions: int
    several_arms: bool
    stored: bool = True
    changed: bool = False
    covariate: float | None = None
    propensity: float | None = None

    def covariate_sums(self, sign: int) -> dict[str, float]:
        """The unit's part of the arm's covariate sums (`unit_stats`), times `sign`."""
        x = self.covariate
        if x is None:
            return {}
        return {"covariate_units": sign, "covariate_total": sign * x, "covariate_total_sq": sign * x * x,
                "covariate_decisions": sign * x * self.decisions}


@dataclass
class _Value:
    converted: bool = False
    value: float = 0.0
    stored: bool = False
    changed: bool = False


def per_user(spec: ExperimentSpec) -> bool:
    return spec.analysis_unit is AnalysisUnit.USER


def unit_covariate(spec: ExperimentSpec, context_json: str | None) -> float | None:
    """The covariate of a unit whose first decision logged `context_json` (None: the spec
    declares none, the context lacks it, or holds no number: rows logged before it was declared)."""
    name = spec.analysis.covariate
    if name is None or not context_json or not per_user(spec):
        return None
    try:
        context = json.loads(context_json)
        return covariate_value(name, context) if isinstance(context, dict) else None
    except ValueError:
        return None


def _net_metrics(spec: ExperimentSpec) -> tuple[str, ...]:
    return tuple(m.name for m in spec.measures if m.net)


def _seconds(later: datetime, earlier: datetime) -> float:
    return (_naive(later) - _naive(earlier)).total_seconds()


def _unit_weights(propensity: float | None, sign: int = 1) -> dict[str, float]:
    """A unit's `unit_stats` increments of the propensity sums (none without a usable propensity)."""
    if propensity is None or not propensity > 0:
        return {}
    w = 1.0 / propensity
    return {"ipw_units": sign, "weight": sign * w, "weight_sq": sign * w * w}


def _value_weights(propensity: float | None, before: float, after: float) -> dict[str, float]:
    """`metric_stats` increments of the propensity sums when a unit's value goes from `before` to `after`."""
    if propensity is None or not propensity > 0:
        return {}
    new, old = propensity_increments(propensity, after), propensity_increments(propensity, before)
    return {k: new[k] - old[k] for k in ("weight_y", "weight_sq_y", "weight_sq_y_sq")}


def _naive(ts: datetime) -> datetime:
    """UTC without tzinfo: SQLite gives stored times back naive, events arrive aware."""
    return ts.replace(tzinfo=None)


@lru_cache(maxsize=4)
def _units_in(dialect: str) -> Select[Any]:
    u = UNITS.c
    return (select(u.unit, u.arm, u.first_ts, u.decisions, u.several_arms, u.covariate, u.propensity)
            .where(u.experiment == bindparam("experiment"), u.phase == bindparam("phase"),
                   member_of(u.unit, "units", dialect))
            .order_by(u.unit).with_for_update())


@lru_cache(maxsize=4)
def _values_in(dialect: str) -> Select[Any]:
    v = UNIT_VALUES.c
    return (select(v.metric, v.unit, v.converted, v.value)
            .where(v.experiment == bindparam("experiment"), v.phase == bindparam("phase"),
                   member_of(v.unit, "units", dialect)))


_UPDATE_UNIT = (
    update(UNITS).where(UNITS.c.experiment == bindparam("k_experiment"), UNITS.c.phase == bindparam("k_phase"),
                        UNITS.c.unit == bindparam("k_unit"))
    .values(arm=bindparam("arm"), first_ts=bindparam("first_ts"), decisions=bindparam("decisions"),
            several_arms=bindparam("several_arms"), covariate=bindparam("covariate"),
            propensity=bindparam("propensity"))
)
_UPDATE_VALUE = (
    update(UNIT_VALUES).where(
        UNIT_VALUES.c.experiment == bindparam("k_experiment"), UNIT_VALUES.c.phase == bindparam("k_phase"),
        UNIT_VALUES.c.metric == bindparam("k_metric"), UNIT_VALUES.c.unit == bindparam("k_unit"))
    .values(converted=bindparam("converted"), value=bindparam("value"))
)


_UNIT_COLUMNS = ("experiment", "phase", "unit", "arm", "first_ts", "decisions", "several_arms", "covariate",
                 "propensity")
_UNIT_COVARIATE_SUMS = ("covariate_units", "covariate_total", "covariate_total_sq", "covariate_decisions")


def _unit_update(experiment: str, phase: int, unit: str, s: _Unit) -> dict[str, Any]:
    return {"k_experiment": experiment, "k_phase": phase, "k_unit": unit, "arm": s.arm, "first_ts": s.first_ts,
            "decisions": s.decisions, "several_arms": s.several_arms, "covariate": s.covariate,
            "propensity": s.propensity}


class Ledger:
    """The per-unit accounting of one transaction: queue exposures and conversions, then `settle`."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._exposures: list[tuple[ExperimentSpec, int, str, str, datetime, float | None, float | None]] = []
        self._conversions: list[Conversion] = []
        self._specs: dict[str, ExperimentSpec] = {}
        self.unit_stats = Increments(UNIT_STATS, ("experiment", "phase", "arm"),
                                     ("units", "decisions", "decisions_sq", "several_arms", "ipw_units", "weight",
                                      "weight_sq", *_UNIT_COVARIATE_SUMS))
        self.metric_stats = Increments(METRIC_STATS, ("experiment", "phase", "metric", "arm"),
                                       ("conversions", "total", "total_sq", "total_decisions", "weight_y",
                                        "weight_sq_y", "weight_sq_y_sq", "covariate_cross"))

    def expose(self, spec: ExperimentSpec, phase: int, unit: str, arm: str, ts: datetime,
               propensity: float | None, covariate: float | None = None) -> None:
        """A newly logged decision (never one logged before: callers pass only new rows), with
        its logged propensity and the covariate of its context (`unit_covariate`)."""
        if per_user(spec):
            self._exposures.append((spec, phase, unit, arm, ts, propensity, covariate))
        else:
            self.unit_stats.add((spec.key, phase, arm), units=1, decisions=1, decisions_sq=1,
                                **_unit_weights(propensity))

    def convert(self, conversion: Conversion) -> None:
        self._conversions.append(conversion)

    def settle(self) -> None:
        """Apply the queued rows to the unit states and the sums. Call after the raw rows are
        written: a recount reads them."""
        units = self._read_units()
        values = self._read_values(units)
        recount: set[UnitKey] = set()
        for spec, phase, unit, arm, ts, propensity, covariate in sorted(self._exposures, key=lambda e: _naive(e[4])):
            self._expose(units, values, recount, spec, phase, unit, arm, ts, propensity, covariate)
        for c in self._conversions:
            self._convert(units, values, recount, c)
        self._write_units(units)
        self._write_values(values)
        for key in sorted(recount):
            self._recount(key, units.get(key), values)
        self.unit_stats.apply(self.conn)
        self.metric_stats.apply(self.conn)

    # -- reading states --------------------------------------------------------------

    def _unit_keys(self) -> dict[tuple[str, int], set[str]]:
        wanted: dict[tuple[str, int], set[str]] = {}
        for spec, phase, unit, *_ in self._exposures:
            wanted.setdefault((spec.key, phase), set()).add(unit)
            self._specs[spec.key] = spec
        for c in self._conversions:
            self._specs[c.spec.key] = c.spec
            wanted.setdefault((c.spec.key, c.phase), set()).add(c.unit if per_user(c.spec) else c.decision_id)
        return wanted

    def _read_units(self) -> dict[UnitKey, _Unit]:
        states: dict[UnitKey, _Unit] = {}
        self._wanted = self._unit_keys()
        for (key, phase), names in sorted(self._wanted.items()):
            if not per_user(self._specs[key]):
                continue
            rows = self.conn.execute(_units_in(self.conn.dialect.name),
                                     {"experiment": key, "phase": phase, "units": sorted(names)})
            for unit, arm, first_ts, decisions, several, covariate, propensity in rows:
                states[(key, phase, unit)] = _Unit(arm, first_ts, decisions, bool(several), covariate=covariate,
                                                   propensity=propensity)
        return states

    def _read_values(self, units: dict[UnitKey, _Unit]) -> dict[ValueKey, _Value]:
        values: dict[ValueKey, _Value] = {}
        for (key, phase), names in sorted(self._wanted.items()):
            rows = self.conn.execute(_values_in(self.conn.dialect.name),
                                     {"experiment": key, "phase": phase, "units": sorted(names)})
            for metric, unit, converted, value in rows:
                values[(key, phase, metric, unit)] = _Value(bool(converted), value, stored=True)
        return values

    # -- applying --------------------------------------------------------------------

    def _expose(self, units: dict[UnitKey, _Unit], values: dict[ValueKey, _Value], recount: set[UnitKey],
                spec: ExperimentSpec, phase: int, unit: str, arm: str, ts: datetime, propensity: float | None,
                covariate: float | None) -> None:
        key = (spec.key, phase, unit)
        state = units.get(key)
        if key in recount:
            return
        if state is None:
            units[key] = fresh = _Unit(arm, ts, 1, False, stored=False, changed=True, covariate=covariate,
                                       propensity=propensity)
            self.unit_stats.add((spec.key, phase, arm), units=1, decisions=1, decisions_sq=1,
                                **fresh.covariate_sums(1), **_unit_weights(propensity))
        elif _naive(ts) < _naive(state.first_ts) or (_naive(ts) == _naive(state.first_ts) and arm != state.arm):
            # An earlier first exposure, or one at the same instant in another arm (the recount breaks
            # the tie by decision id, whatever the arrival order): arm and windows may change.
            recount.add(key)
        elif arm == state.arm:
            k = state.decisions
            state.decisions, state.changed = k + 1, True
            self.unit_stats.add((spec.key, phase, arm), decisions=1, decisions_sq=2 * k + 1,
                                covariate_decisions=state.covariate or 0.0)
            for metric in _net_metrics(spec):
                if (v := values.get((spec.key, phase, metric, unit))) is not None:
                    self.metric_stats.add((spec.key, phase, metric, arm), total_decisions=v.value)
        elif not state.several_arms:
            state.several_arms, state.changed = True, True
            self.unit_stats.add((spec.key, phase, state.arm), several_arms=1)

    def _convert(self, units: dict[UnitKey, _Unit], values: dict[ValueKey, _Value], recount: set[UnitKey],
                 c: Conversion) -> None:
        spec = c.spec
        if per_user(spec):
            key = (spec.key, c.phase, c.unit)
            state = units.get(key)
            if key in recount or state is None:
                recount.add(key)  # no state yet (rows logged before per-unit accounting): recount
                return
            arm, start, decisions, unit, x = state.arm, state.first_ts, state.decisions, c.unit, state.covariate or 0.0
            propensity = state.propensity
        else:
            arm, start, decisions, unit, x = c.arm, c.decision_ts, 1, c.decision_id, 0.0
            propensity = c.propensity
        metric = spec.measure(c.metric)
        assert metric is not None
        elapsed = _seconds(c.ts, start)
        if elapsed < 0 or (metric.window_seconds is not None and elapsed > metric.window_seconds):
            return  # stored with the event, not counted
        v = values.setdefault((spec.key, c.phase, metric.name, unit), _Value())
        before = v.value
        after = before + (c.value or 0.0) if metric.revenue else 1.0
        self.metric_stats.add((spec.key, c.phase, metric.name, arm), conversions=0 if v.converted else 1,
                              total=after - before, total_sq=after * after - before * before,
                              total_decisions=(after - before) * decisions if metric.net else 0.0,
                              covariate_cross=x * (after - before), **_value_weights(propensity, before, after))
        v.converted, v.value, v.changed = True, after, True

    # -- writing ---------------------------------------------------------------------

    def _write_units(self, units: dict[UnitKey, _Unit]) -> None:
        new = [(k, p, u, s.arm, s.first_ts, s.decisions, s.several_arms, s.covariate, s.propensity)
               for (k, p, u), s in sorted(units.items()) if not s.stored]
        bulk_insert(self.conn, UNITS, _UNIT_COLUMNS, new)
        changed = [_unit_update(k, p, u, s) for (k, p, u), s in sorted(units.items()) if s.stored and s.changed]
        if changed:
            self.conn.execute(_UPDATE_UNIT, changed)
        for s in units.values():
            s.stored, s.changed = True, False

    def _write_values(self, values: dict[ValueKey, _Value]) -> None:
        bulk_insert(self.conn, UNIT_VALUES, ("experiment", "phase", "metric", "unit", "converted", "value"),
                    [(*key, v.converted, v.value) for key, v in sorted(values.items()) if v.changed and not v.stored])
        changed = [{"k_experiment": k, "k_phase": p, "k_metric": m, "k_unit": u, "converted": v.converted,
                    "value": v.value} for (k, p, m, u), v in sorted(values.items()) if v.changed and v.stored]
        if changed:
            self.conn.execute(_UPDATE_VALUE, changed)
        for v in values.values():
            v.stored, v.changed = True, False

    # -- recounting ------------------------------------------------------------------

    def _recount(self, key: UnitKey, old: _Unit | None, values: dict[ValueKey, _Value]) -> None:
        """Take the unit's stored contribution out of the sums and put in a recount from its
        decisions and conversion events."""
        experiment, phase, unit = key
        spec = self._specs[experiment]
        old_values = {m.name: values.get((experiment, phase, m.name, unit)) for m in spec.measures}
        if old is not None:
            self._contribute(spec, phase, old, old_values, sign=-1)
        fresh = recount_unit(self.conn, spec, phase, unit)
        self.conn.execute(delete(UNIT_VALUES).where(
            UNIT_VALUES.c.experiment == experiment, UNIT_VALUES.c.phase == phase, UNIT_VALUES.c.unit == unit))
        if fresh is None:  # no decision of the unit in the phase: nothing counts
            if old is not None:
                self.conn.execute(delete(UNITS).where(
                    UNITS.c.experiment == experiment, UNITS.c.phase == phase, UNITS.c.unit == unit))
            return
        state, new_values = fresh
        if old is None:
            bulk_insert(self.conn, UNITS, _UNIT_COLUMNS, [(experiment, phase, unit, state.arm, state.first_ts,
                                                           state.decisions, state.several_arms, state.covariate,
                                                           state.propensity)])
        else:
            self.conn.execute(_UPDATE_UNIT, [_unit_update(experiment, phase, unit, state)])
        bulk_insert(self.conn, UNIT_VALUES, ("experiment", "phase", "metric", "unit", "converted", "value"),
                    [(experiment, phase, m, unit, v.converted, v.value) for m, v in new_values.items()])
        self._contribute(spec, phase, state, dict(new_values), sign=1)

    def _contribute(self, spec: ExperimentSpec, phase: int, state: _Unit, unit_values: dict[str, _Value | None],
                    sign: int) -> None:
        k = state.decisions
        self.unit_stats.add((spec.key, phase, state.arm), units=sign, decisions=sign * k, decisions_sq=sign * k * k,
                            several_arms=sign * int(state.several_arms), **state.covariate_sums(sign),
                            **_unit_weights(state.propensity, sign))
        x = state.covariate or 0.0
        for m in spec.measures:
            v = unit_values.get(m.name)
            if v is not None:
                weights = _value_weights(state.propensity, 0.0, v.value)
                self.metric_stats.add((spec.key, phase, m.name, state.arm), conversions=sign * int(v.converted),
                                      total=sign * v.value, total_sq=sign * v.value * v.value,
                                      total_decisions=sign * v.value * k if m.net else 0.0,
                                      covariate_cross=sign * x * v.value,
                                      **{name: sign * d for name, d in weights.items()})


def recount_unit(conn: Connection, spec: ExperimentSpec, phase: int,
                 unit: str) -> tuple[_Unit, dict[str, _Value]] | None:
    """A per-user unit's state and values from its raw rows, None if it has no decision in the phase."""
    d = DECISIONS.c
    decisions = conn.execute(
        select(d.arm, d.ts, d.context_json, d.propensity)
        .where(d.experiment == spec.key, d.phase == phase, d.unit == unit)
        .order_by(d.ts, d.decision_id)).all()
    if not decisions:
        return None
    state = _first_exposure(spec, decisions)
    e = EVENTS.c
    events = conn.execute(select(e.metric, e.value, e.ts).where(
        e.experiment == spec.key, e.unit == unit, e.phase == phase, e.type == "conversion"))
    return state, count_values(spec, state.first_ts, events)


def _first_exposure(spec: ExperimentSpec, decisions: Sequence[Sequence[Any]]) -> _Unit:
    """A unit's state from its (arm, ts, context_json, propensity) decisions, oldest first: the
    first one fixes its arm, start, covariate and propensity."""
    arm, start, context_json, propensity = decisions[0]
    return _Unit(arm, start, sum(1 for a, *_ in decisions if a == arm), any(a != arm for a, *_ in decisions),
                 covariate=unit_covariate(spec, context_json), propensity=propensity)


def count_values(spec: ExperimentSpec, start: datetime,
                 events: Iterable[Sequence[Any]]) -> dict[str, _Value]:
    """Each metric's value of a unit whose windows start at `start`, from its (metric, value,
    ts) conversions; a conversion outside the window is not counted."""
    out: dict[str, _Value] = {}
    for name, value, ts in events:
        metric = spec.measure(name)
        if metric is None:
            continue  # a metric no longer declared
        elapsed = _seconds(ts, start)
        if elapsed < 0 or (metric.window_seconds is not None and elapsed > metric.window_seconds):
            continue
        v = out.setdefault(metric.name, _Value())
        v.converted = True
        v.value = v.value + (value or 0.0) if metric.revenue else 1.0
    return out


def rebuild(conn: Connection, spec: ExperimentSpec, phase: int) -> None:
    """Recount every unit of one phase from the raw rows, replacing its per-unit state and sums
    (a store upgraded from a release without per-unit accounting). Conversions must carry
    their unit and phase (`events.unit`, `events.phase`)."""
    key = spec.key
    for table in (UNITS, UNIT_VALUES, UNIT_STATS, METRIC_STATS):
        conn.execute(delete(table).where(table.c.experiment == key, table.c.phase == phase))
    ledger = Ledger(conn)
    d, e = DECISIONS.c, EVENTS.c
    decisions = conn.execute(select(d.decision_id, d.unit, d.arm, d.ts, d.converted, d.value, d.context_json,
                                    d.propensity)
                             .where(d.experiment == key, d.phase == phase).order_by(d.unit, d.ts, d.decision_id))
    if not per_user(spec):
        # Each decision is a unit; its primary outcome is the one intake attributed to it.
        primary = spec.primary.name
        values = []
        for decision_id, _, arm, _, converted, value, _, propensity in decisions:
            ledger.unit_stats.add((key, phase, arm), units=1, decisions=1, decisions_sq=1,
                                  **_unit_weights(propensity))
            if converted:
                values.append((key, phase, primary, decision_id, True, value))
                ledger.metric_stats.add((key, phase, primary, arm), conversions=1, total=value, total_sq=value * value,
                                        total_decisions=value if spec.primary.net else 0.0,
                                        **_value_weights(propensity, 0.0, value))
        bulk_insert(conn, UNIT_VALUES, ("experiment", "phase", "metric", "unit", "converted", "value"), values)
    else:
        events: dict[str, list[tuple[Any, Any, Any]]] = {}
        for unit, metric, value, ts in conn.execute(select(e.unit, e.metric, e.value, e.ts).where(
                e.experiment == key, e.phase == phase, e.type == "conversion")):
            events.setdefault(unit, []).append((metric, value, ts))
        by_unit: dict[str, list[tuple[str, datetime, str | None, float | None]]] = {}
        for _, unit, arm, ts, _, _, context_json, propensity in decisions:
            by_unit.setdefault(unit, []).append((arm, ts, context_json, propensity))
        units, values = [], []
        for unit, rows in by_unit.items():
            state = _first_exposure(spec, rows)
            counted = count_values(spec, state.first_ts, events.get(unit, ()))
            units.append((key, phase, unit, state.arm, state.first_ts, state.decisions, state.several_arms,
                          state.covariate, state.propensity))
            values += [(key, phase, m, unit, v.converted, v.value) for m, v in counted.items()]
            ledger._contribute(spec, phase, state, dict(counted), sign=1)
        bulk_insert(conn, UNITS, _UNIT_COLUMNS, units)
        bulk_insert(conn, UNIT_VALUES, ("experiment", "phase", "metric", "unit", "converted", "value"), values)
    ledger.unit_stats.apply(conn)
    ledger.metric_stats.apply(conn)
