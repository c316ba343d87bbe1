"""Per-arm aggregates (the sufficient statistics) and the increments that keep them exact.

Aggregates change only in the transaction that writes the rows they summarise, by atomic
`SET n = n + :d` increments, so a crash at any point leaves them equal to a recount.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select, update

from engine.tables import ARM_STATS
from policies.sufficient import BinaryStats, MeanStats

# Statements are built once: building SQLAlchemy expressions per event costs more than running them.
_S = ARM_STATS.c

_BUMP = (
    update(ARM_STATS)
    .where(_S.experiment == bindparam("b_key"), _S.phase == bindparam("b_phase"), _S.arm == bindparam("b_arm"))
    .values(exposures=_S.exposures + bindparam("d_exposures"),
            conversions=_S.conversions + bindparam("d_conversions"),
            total=_S.total + bindparam("d_total"), total_sq=_S.total_sq + bindparam("d_total_sq"))
)



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


class Deltas:
    """Aggregate increments of one transaction, applied at its end in a fixed (sorted) order:
    two transactions never lock the same arm rows in opposite orders, so they cannot deadlock."""

    def __init__(self) -> None:
        self._by_arm: dict[tuple[str, int, str], list[float]] = {}

    def add(self, key: str, phase: int, arm: str, exposures: int = 0, conversions: int = 0,
            total: float = 0.0, total_sq: float = 0.0) -> None:
        d = self._by_arm.setdefault((key, phase, arm), [0, 0, 0.0, 0.0])
        d[0] += exposures
        d[1] += conversions
        d[2] += total
        d[3] += total_sq

    def apply(self, conn: Connection) -> None:
        """Atomic increments (`SET n = n + :d`): concurrent writers never lose an update."""
        for (key, phase, arm), (n, c, t, t2) in sorted(self._by_arm.items()):
            conn.execute(_BUMP, {"b_key": key, "b_phase": phase, "b_arm": arm, "d_exposures": int(n),
                                 "d_conversions": int(c), "d_total": t, "d_total_sq": t2})
