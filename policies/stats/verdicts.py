"""The verdict of an experiment from its adjusted p-values or posteriors.

The rules are listed in the `policies.stats.analysis` module docstring (rule numbers below refer
to it); `analyze` checks insufficient data first and calls these for the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from policies.stats.corrections import Correction
from policies.stats.srm import SrmResult

VerdictStatus = Literal[
    "winner", "keep_running", "no_difference", "srm_invalid", "insufficient_data", "guardrail_failed"
]
"""`guardrail_failed` comes from `policies.stats.guardrails.guardrail_verdict`, the others from here."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the report tells the growth team; `winner` is an arm name or None."""

    status: VerdictStatus
    winner: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class VariantOutcome:
    """A variant's comparison with the control, as the verdict needs it."""

    arm: str
    difference: float
    lift: float | None
    p_value_adjusted: float


def superior_variants(variants: Sequence[VariantOutcome], alpha: float) -> list[VariantOutcome]:
    """Variants significantly better than the control (adjusted p below alpha), best first."""
    better = [v for v in variants if v.p_value_adjusted < alpha and v.difference > 0]
    return sorted(better, key=lambda v: v.difference, reverse=True)


def srm_verdict(srm: SrmResult | None, threshold: float) -> Verdict | None:
    """Rule 2: `srm_invalid` when the sample-ratio-mismatch check is flagged, else None."""
    if srm is None or not srm.flagged:
        return None
    p_text = "0" if srm.p_value is None else f"{srm.p_value:.3g}"
    return Verdict(
        "srm_invalid",
        None,
        f"sample ratio mismatch: exposures do not fit the declared split (p = {p_text} < "
        f"{threshold:g}); find the cause before reading results",
    )


def _progress(smallest_n: int, planned_n_per_arm: int | None, sequential: bool) -> str:
    plan = "sequential planned sample" if sequential else "planned sample"
    if planned_n_per_arm is None:
        return f"{plan} unknown (the baseline moved by the MDE admits no plan)"
    share = smallest_n / planned_n_per_arm
    return f"{share:.0%} of {plan} ({smallest_n:,} of {planned_n_per_arm:,} per arm)"


def ab_test_verdict(
    control: str,
    variants: Sequence[VariantOutcome],
    *,
    smallest_n: int,
    planned_n_per_arm: int | None,
    alpha: float,
    correction: Correction,
    sequential: bool,
) -> Verdict:
    """Rules 3-5 for a testable A/B test without SRM.

    `smallest_n` is the fewest exposures of any arm; the plan counts as reached when it is
    at least `planned_n_per_arm` (the sequential planned n in sequential mode).
    """
    reached = planned_n_per_arm is not None and smallest_n >= planned_n_per_arm
    final = sequential or reached
    progress = _progress(smallest_n, planned_n_per_arm, sequential)
    significant = [v for v in variants if v.p_value_adjusted < alpha]
    better = superior_variants(variants, alpha)
    how = f"adjusted p ({correction})" + (", always-valid" if sequential else "")
    if final and better:
        best = better[0]
        lift_text = "" if best.lift is None else f" lift {best.lift:+.1%},"
        return Verdict(
            "winner",
            best.arm,
            f"{best.arm!r} beats control {control!r}:{lift_text} "
            f"{how} = {best.p_value_adjusted:.3g} < {alpha:g}; {progress}",
        )
    if final and variants and len(significant) == len(variants):
        return Verdict(
            "winner",
            control,
            f"every variant is significantly worse than control {control!r} ({how} < {alpha:g}); {progress}",
        )
    if reached:
        return Verdict(
            "no_difference",
            None,
            f"no variant beats control {control!r} at alpha {alpha:g}; {progress}",
        )
    if significant:
        names = ", ".join(repr(v.arm) for v in significant)
        progress += f"; {names} significant, not final until the planned sample is reached"
    return Verdict("keep_running", None, progress)


def bandit_verdict(
    arms: Sequence[str],
    exposures: Sequence[int],
    prob_best: Sequence[float],
    *,
    prob_best_threshold: float,
    min_sample_per_arm: int,
) -> Verdict:
    """Rules 3-4 for a bandit without SRM: a confident best arm and enough data in every arm.

    `prob_best` must come from the weight-corrected estimates when the units' propensities are
    known (`policies.stats.bandit_inference`): on pooled counts an arm the bandit starved after
    an unlucky start keeps its low mean, and the leader's prob_best is overstated.
    """
    best = max(range(len(arms)), key=lambda i: prob_best[i])
    prob = prob_best[best]
    if prob < prob_best_threshold:
        return Verdict(
            "keep_running",
            None,
            f"best arm {arms[best]!r} has prob_best {prob:.3f} < {prob_best_threshold:g}",
        )
    for arm, n in zip(arms, exposures, strict=True):
        if n < min_sample_per_arm:
            return Verdict(
                "keep_running",
                None,
                f"arm {arm!r} has {n:,} of the {min_sample_per_arm:,} exposures needed per arm",
            )
    return Verdict(
        "winner",
        arms[best],
        f"{arms[best]!r} is best with probability {prob:.3f} >= {prob_best_threshold:g}",
    )
