"""Per-arm aggregates (the sufficient statistics) and the increments that keep them exact.

Aggregates change only in the transaction that writes the rows they summarise, by atomic
`SET n = n + :d` increments, so a crash at any point leaves them equal to a recount.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Table, bindparam, select, update

from engine.db import insert_if_absent
from engine.spec import Metric
from engine.tables import ARM_STATS, METRIC_STATS, UNIT_STATS
from policies.stats.bandit_inference import PropensitySums
from policies.stats.cuped import CovariateSums
from policies.sufficient import ArmStats, BinaryStats, MeanStats, net_of_cost


@dataclass(frozen=True)
class ArmAggregate:
    arm: str
    exposures: int
    conversions: int
    total: float
    total_sq: float

    @property
    def binary(self) -> BinaryStats:
        return BinaryStats(self.exposures, self.conversions)

    @property
    def mean(self) -> MeanStats:
        return MeanStats(self.exposures, self.total, self.total_sq)



def read_aggregates(conn: Connection, key: str, phase: int, arms: Sequence[str]) -> list[ArmAggregate]:
    """Aggregates in the order of `arms` (zeros for an arm with no row yet)."""
    rows = conn.execute(
        select(ARM_STATS).where(ARM_STATS.c.experiment == key, ARM_STATS.c.phase == phase)
    ).mappings().all()
    by_arm = {r["arm"]: r for r in rows}
    return [
        ArmAggregate(a, by_arm[a]["exposures"], by_arm[a]["conversions"], by_arm[a]["total"], by_arm[a]["total_sq"])
        if a in by_arm else ArmAggregate(a, 0, 0, 0.0, 0.0)
        for a in arms
    ]


class Increments:
    """Counter increments of one transaction for one table, applied at its end in a fixed
    (sorted) order: two transactions never lock the same rows in opposite orders, so they cannot
    deadlock. A row that does not exist yet is created (`arm_stats` rows exist from `apply`;
    the per-unit tables' rows appear with their first unit)."""

    def __init__(self, table: Table, keys: Sequence[str], counters: Sequence[str]) -> None:
        self.table, self.keys, self.counters = table, tuple(keys), tuple(counters)
        self._rows: dict[tuple[Any, ...], list[float]] = {}
        self._bump = _bump(table, self.keys, self.counters)

    def add(self, key: tuple[Any, ...], **deltas: float) -> None:
        row = self._rows.setdefault(key, [0] * len(self.counters))
        for i, name in enumerate(self.counters):
            row[i] += deltas.get(name, 0)

    def apply(self, conn: Connection) -> None:
        """Atomic increments (`SET n = n + :d`): concurrent writers never lose an update."""
        for key, row in sorted(self._rows.items()):
            if not any(row):
                continue
            params = {f"k_{k}": v for k, v in zip(self.keys, key, strict=True)}
            params.update({f"d_{n}": _typed(self.table, n, d) for n, d in zip(self.counters, row, strict=True)})
            if conn.execute(self._bump, params).rowcount == 0:
                self._create(conn, params)
        self._rows.clear()

    def _create(self, conn: Connection, params: dict[str, Any]) -> None:
        row = {k: params[f"k_{k}"] for k in self.keys} | {n: params[f"d_{n}"] for n in self.counters}
        if not insert_if_absent(conn, self.table, row):  # another writer created it first
            conn.execute(self._bump, params)


@lru_cache(maxsize=16)
def _bump(table: Table, keys: tuple[str, ...], counters: tuple[str, ...]) -> Any:
    # Built once: building SQLAlchemy expressions per transaction costs more than running them.
    c = table.c
    return (update(table).where(*(c[k] == bindparam(f"k_{k}") for k in keys))
            .values({n: c[n] + bindparam(f"d_{n}") for n in counters}))


def _typed(table: Table, column: str, value: float) -> float | int:
    return int(value) if table.c[column].type.python_type is int else value


class Deltas(Increments):
    """Increments of `arm_stats`, the per-decision counts of the primary metric."""

    def __init__(self) -> None:
        super().__init__(ARM_STATS, ("experiment", "phase", "arm"), ("exposures", "conversions", "total", "total_sq"))

    def add(self, key: str, phase: int, arm: str, exposures: int = 0, conversions: int = 0,  # type: ignore[override]
            total: float = 0.0, total_sq: float = 0.0) -> None:
        super().add((key, phase, arm), exposures=exposures, conversions=conversions, total=total, total_sq=total_sq)


@dataclass(frozen=True)
class UnitAggregate:
    """An arm's analysis units: how many, their decisions (sum, sum of squares), and how many
    were also served another arm."""

    units: int = 0
    decisions: int = 0
    decisions_sq: int = 0
    several_arms: int = 0
    covariate_units: int = 0
    covariate_total: float = 0.0
    covariate_total_sq: float = 0.0
    covariate_decisions: float = 0.0
    ipw_units: int = 0
    weight: float = 0.0
    weight_sq: float = 0.0


@dataclass(frozen=True)
class MetricAggregate:
    """An arm's sums of one metric over its units: converted units, values, squares, values x
    decisions, and the propensity-weighted sums w Y, w^2 Y, w^2 Y^2."""

    conversions: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    total_decisions: float = 0.0
    covariate_cross: float = 0.0
    weight_y: float = 0.0
    weight_sq_y: float = 0.0
    weight_sq_y_sq: float = 0.0


@dataclass(frozen=True)
class Tally:
    """Every per-unit sum of one phase, in the order of `arms`: O(arms x metrics) to read."""

    arms: tuple[str, ...]
    units: tuple[UnitAggregate, ...]
    metrics: dict[str, tuple[MetricAggregate, ...]]

    @classmethod
    def empty(cls, arms: Sequence[str]) -> Tally:
        return cls(tuple(arms), tuple(UnitAggregate() for _ in arms), {})

    @property
    def units_in_several_arms(self) -> int:
        return sum(u.several_arms for u in self.units)

    def metric(self, name: str) -> tuple[MetricAggregate, ...]:
        return self.metrics.get(name) or tuple(MetricAggregate() for _ in self.arms)

    def propensity_sums(self, metric: Metric) -> tuple[PropensitySums, ...] | None:
        """Each arm's propensity sums of `metric` (the corrected bandit estimates), None when
        some unit has no propensity or the metric is net of cost (its sums are not kept)."""
        if metric.net or any(u.ipw_units != u.units for u in self.units):
            return None
        # Sums kept by differences can sit a rounding error below 0.
        return tuple(PropensitySums(u.ipw_units, max(u.weight, 0.0), max(u.weight_sq, 0.0), m.weight_y, m.weight_sq_y,
                                    max(m.weight_sq_y_sq, 0.0))
                     for u, m in zip(self.units, self.metric(metric.name), strict=True))

    def stats(self, metric: Metric, costs: Sequence[float]) -> list[ArmStats]:
        """The metric's sufficient statistics per arm; net of `costs` (per decision) when it says `net`."""
        out: list[ArmStats] = []
        for u, m, cost in zip(self.units, self.metric(metric.name), costs, strict=True):
            if not metric.revenue:
                out.append(BinaryStats(u.units, min(m.conversions, u.units)))
                continue
            value = MeanStats(u.units, m.total, max(m.total_sq, 0.0))
            out.append(net_of_cost(value, cost, u.decisions, u.decisions_sq, m.total_decisions) if metric.net
                       else value)
        return out


    def covariates(self, metric: Metric, costs: Sequence[float]) -> list[CovariateSums]:
        """The CUPED covariate sums per arm for `metric` (the cross sum net of `costs` when it
        says `net`: sum x (v - c k) = sum x v - c sum x k)."""
        return [CovariateSums(u.covariate_total, max(u.covariate_total_sq, 0.0),
                              m.covariate_cross - (cost * u.covariate_decisions if metric.net else 0.0))
                for u, m, cost in zip(self.units, self.metric(metric.name), costs, strict=True)]


def read_tally(conn: Connection, key: str, phase: int, arms: Sequence[str]) -> Tally:
    index = {a: i for i, a in enumerate(arms)}
    units = [UnitAggregate()] * len(arms)
    u = UNIT_STATS.c
    for arm, *sums in conn.execute(
            select(u.arm, u.units, u.decisions, u.decisions_sq, u.several_arms, u.covariate_units, u.covariate_total,
                   u.covariate_total_sq, u.covariate_decisions, u.ipw_units, u.weight, u.weight_sq)
            .where(u.experiment == key, u.phase == phase)):
        if arm in index:
            units[index[arm]] = UnitAggregate(*sums)
    metrics: dict[str, list[MetricAggregate]] = {}
    m = METRIC_STATS.c
    for name, arm, *sums in conn.execute(
            select(m.metric, m.arm, m.conversions, m.total, m.total_sq, m.total_decisions, m.covariate_cross,
                   m.weight_y, m.weight_sq_y, m.weight_sq_y_sq)
            .where(m.experiment == key, m.phase == phase)):
        if arm in index:
            metrics.setdefault(name, [MetricAggregate()] * len(arms))[index[arm]] = MetricAggregate(*sums)
    return Tally(tuple(arms), tuple(units), {k: tuple(v) for k, v in metrics.items()})
