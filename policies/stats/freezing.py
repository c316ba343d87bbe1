"""Fixed plans and kept verdicts: when a plan is frozen, and which verdicts are kept.

A planned sample re-estimated at every report moves with the control's observed rate, and a
verdict read again after the plan is reached is peeking again (the design handbook: "a verdict
that is final is stored with the data it was made on; planned samples are declared or frozen,
never re-estimated each time"). These rules say when the control's observed baseline may be
frozen, what an A/B test says before then, which verdicts are final, and when the data read
since a verdict was kept disagree with it. The engine stores what they decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from policies.stats.verdicts import Verdict
from policies.sufficient import ArmStats, BinaryStats

FINAL_STATUSES: dict[str, frozenset[str]] = {
    "ab_test": frozenset({"winner", "no_difference"}),
    "bandit": frozenset({"winner"}),
}
"""Verdicts that end an experiment's phase, by kind: they are kept with the counts they were made on."""


def observed_baseline(control: ArmStats) -> tuple[float, float | None] | None:
    """The control's planning baseline as observed: its rate (binary, strictly inside (0, 1)) or
    its mean and standard deviation per unit (revenue, both > 0). None while they admit no plan."""
    if isinstance(control, BinaryStats):
        rate = control.rate
        return None if rate is None or not 0 < rate < 1 else (rate, None)
    mean, variance = control.mean, control.variance
    if mean is None or variance is None or mean <= 0 or variance <= 0:
        return None
    return mean, variance**0.5


def freeze_pending(arms: Sequence[str], units: Sequence[int], min_sample_per_arm: int) -> str | None:
    """Why the plan cannot be frozen yet: the arm with the fewest units is short of
    `min_sample_per_arm`. None once every arm has that many."""
    smallest = min(range(len(arms)), key=lambda i: units[i])
    if units[smallest] >= min_sample_per_arm:
        return None
    return (f"no plan yet: it is frozen from the control at the first report where every arm has "
            f"{min_sample_per_arm:,} units (arm {arms[smallest]!r} has {units[smallest]:,}); declare "
            f"analysis.baseline to plan now")


def awaiting_plan(verdict: Verdict, why: str) -> Verdict:
    """An A/B test's verdict before its plan exists: nothing is final (`winner`, `no_difference`
    and `keep_running` become `keep_running` saying `why`); the checks that need no plan stand."""
    if verdict.status in ("winner", "no_difference", "keep_running"):
        return Verdict("keep_running", None, why)
    return verdict


def is_final(kind: Literal["ab_test", "bandit"], verdict: Verdict) -> bool:
    """Whether `verdict` ends the phase and is kept (`FINAL_STATUSES`)."""
    return verdict.status in FINAL_STATUSES[kind]


def disagrees(kept: Verdict, current: Verdict) -> bool:
    """The data read since `kept` was made give another verdict (status or winner)."""
    return (kept.status, kept.winner) != (current.status, current.winner)
