"""Guardrail metrics: non-inferiority at a relative margin, and the ship decision that uses them.

The decision rule is that of Schultzberg, Ankargren & Frånberg (2024), "Risk-aware product
decisions in A/B tests with multiple metrics" (arXiv:2402.11609): ship a variant when a success
metric is significantly superior AND every guardrail metric is significantly non-inferior.

- Success metrics are tested for superiority with alpha corrected across the success metrics
  only (union-intersection, section 3.2): `policies.stats.planning.success_alpha`. Here the
  primary metric is the success metric.
- Guardrails are tested for non-inferiority at the nominal level, NOT corrected for their
  number: the decision needs all of them (intersection-union), and an intersection-union test
  whose parts have level alpha has level alpha (Berger 1982; the paper's sections 3.2-3.3).
- Power: the decision needs every test to succeed, so their type II errors add up; each test
  is planned at beta / (G + 1) for G guardrails (section 3.4): `policies.stats.planning`.

Semantics of `direction` (the YAML `direction:` of a guardrail): the direction in which the
metric is GOOD. `{name: unsubscribe, direction: decrease, margin: 0.2}` reads "unsubscribes
should go down; an increase of up to 20% of the control's rate is tolerated": harm is an
increase, and the guardrail holds when mean_t < 1.2 * mean_c is shown. With `direction:
increase` (revenue, retention) harm is a decrease, and it holds when mean_t > (1 - margin) *
mean_c is shown, so there the margin must be below 1.

Scale. The test and every interval are on theta = log(mean_t / mean_c) with the delta-method
variance (`policies.stats.effects.log_ratio`; for rates Katz's log risk ratio, statsmodels'
`test_proportions_2indep(compare="ratio", method="log")`), and are shown as the relative
difference exp(theta) - 1. The margin's boundary is theta_0 = log(1 + margin) (harm is an
increase) or log(1 - margin) (a decrease). The log keeps the ratio positive and its normal
approximation is better than the ratio's own (Katz et al. 1978).

- Fixed horizon: the shown interval is the two-sided 1 - alpha Wald interval
  exp(theta_hat +- z_{1-alpha/2} se) - 1, and the non-inferiority test is one-sided at
  alpha / 2, which is the same statement: the guardrail holds exactly when the interval's
  harmful end lies inside the margin (the CONSORT convention for non-inferiority trials,
  Piaggio et al. 2012). alpha / 2 is also the one-sided level at which the primary's two-sided
  test declares a winner, so no part of the ship decision is looser than another.
- Sequential (always-valid, for sequential A/B tests and for bandits that take a harmful arm
  out of traffic): the interval is the mSPRT confidence sequence of `policies.stats.sequential`
  at level alpha around theta_hat, with the mixture scale tau = |theta_0| (harm of the size of
  the margin is what it must find quickly). Repeated looks are safe: under any truth the
  interval misses theta at some look with probability at most alpha (asymptotically, as the
  variance is a plug-in estimate; the 50-look simulations in tests/ check it).

`failed` means the interval lies entirely beyond the margin in the harmful direction: harm
larger than the margin is shown. `non_inferior` means it lies entirely inside. In between the
guardrail is inconclusive. Zero or negative means, n = 0 (n < 2 for real values) or no
variation at all leave no log ratio: `not_testable`, with the reason, never an invented number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal, get_args

from policies.stats.effects import Effect, log_ratio
from policies.stats.sequential import always_valid_interval, msprt_log_likelihood_ratio
from policies.stats.verdicts import VariantOutcome, Verdict, superior_variants
from policies.sufficient import ArmStats, BinaryStats, MeanStats

Direction = Literal["increase", "decrease"]
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)
GuardrailStatus = Literal["non_inferior", "inconclusive", "failed", "not_testable"]
GuardrailMethod = Literal["log_ratio_z", "log_ratio_msprt"]

# The standard library's normal quantile (Wichura's AS241) and erfc match scipy's `norm.ppf` /
# `norm.cdf` to double precision at a tenth of the cost: bandits test guardrails on every refresh.
_Z = NormalDist().inv_cdf


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))  # erfc keeps the far tail accurate; 1 + erf would not


@dataclass(frozen=True, slots=True)
class GuardrailResult:
    """One guardrail metric of one variant against the control.

    Relative differences are mean_t / mean_c - 1. `boundary` is the relative difference where
    harm starts (+margin when harm is an increase, -margin when a decrease); `bound` is the
    interval's harmful end (`ci_high` when harm is an increase, else `ci_low`). `non_inferior`
    is `p_value < level`; `level` is alpha / 2 at a fixed horizon (one-sided test) and alpha
    in sequential mode (the always-valid p-value of theta = theta_0, counted only when the
    estimate lies on the good side). `reason` says in one line what the numbers show.
    """

    metric: str
    arm: str
    direction: Direction
    margin: float
    boundary: float
    method: GuardrailMethod
    alpha: float
    level: float
    status: GuardrailStatus
    non_inferior: bool
    failed: bool
    relative_difference: float | None
    bound: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    reason: str


def check_direction(direction: str) -> Direction:
    """Return `direction` as a `Direction`, or raise ValueError naming the valid choices."""
    for known in DIRECTIONS:
        if direction == known:
            return known
    raise ValueError(f"unknown direction {direction!r}; choose one of {', '.join(DIRECTIONS)}")


def boundary_log_ratio(margin: float, direction: str) -> float:
    """theta_0 = log(1 + margin) when harm is an increase (direction "decrease"), else log(1 - margin)."""
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a finite number > 0, got {margin!r}")
    if check_direction(direction) == "decrease":
        return math.log1p(margin)
    if margin >= 1:
        raise ValueError(f"margin must be below 1 when harm is a decrease (direction: increase), got {margin!r}")
    return math.log1p(-margin)


def _untestable(treatment: ArmStats, control: ArmStats) -> str | None:
    """Why no log ratio can be formed from these arms, or None."""
    if type(treatment) is not type(control):
        raise ValueError("both arms must hold the same kind of statistics")
    needed = 1 if isinstance(control, BinaryStats) else 2
    for who, s in (("the control", control), ("the variant", treatment)):
        if s.n < needed:
            return f"{who} has {s.n} exposures; at least {needed} are needed"
    for who, s in (("the control", control), ("the variant", treatment)):
        if isinstance(s, BinaryStats) and s.successes == 0:
            return f"{who} has no conversions yet, so the ratio of rates is undefined"
        if isinstance(s, MeanStats) and s.total <= 0:
            return f"{who} has a mean <= 0; a relative margin needs positive means"
    return None


def _percent(x: float) -> str:
    return f"{x:+.1%}"


_WHERE = {"non_inferior": "lies within", "failed": "lies beyond", "inconclusive": "overlaps"}


def _describe(status: GuardrailStatus, estimate: float, low: float, high: float, boundary: float) -> str:
    return f"{_percent(estimate)} [{_percent(low)}, {_percent(high)}] {_WHERE[status]} the margin {_percent(boundary)}"


def guardrail_test(
    treatment: ArmStats,
    control: ArmStats,
    *,
    metric: str,
    arm: str,
    margin: float,
    direction: Direction,
    alpha: float = 0.05,
    sequential: bool = False,
) -> GuardrailResult:
    """Non-inferiority of `treatment` against `control` at a relative `margin` (module doc).

    Both arms hold the same kind of statistics (BinaryStats, or MeanStats for real values).
    `alpha` is the two-sided level of the shown interval, as elsewhere in the report.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    theta_0 = boundary_log_ratio(margin, direction)
    harm_sign = 1.0 if direction == "decrease" else -1.0
    boundary = math.expm1(theta_0)
    method: GuardrailMethod = "log_ratio_msprt" if sequential else "log_ratio_z"
    level = alpha if sequential else alpha / 2
    common = dict(metric=metric, arm=arm, direction=direction, margin=margin, boundary=boundary, method=method,
                  alpha=alpha, level=level)
    problem = _untestable(treatment, control)
    effect = None if problem is not None else log_ratio(treatment, control)
    if problem is None and (effect is None or effect.variance <= 0):
        problem = "neither arm shows any variation, so no interval can be formed"
    if problem is not None or effect is None:
        return GuardrailResult(**common, status="not_testable", non_inferior=False, failed=False,  # type: ignore[arg-type]
                               relative_difference=None, bound=None, ci_low=None, ci_high=None, p_value=None,
                               reason=f"cannot be tested yet: {problem}")
    excess = harm_sign * (effect.estimate - theta_0)  # > 0: the estimate lies beyond the margin
    if sequential:
        radius, p_value = _sequential_radius_and_p(effect, theta_0, excess, alpha)
    else:
        se = math.sqrt(effect.variance)
        radius = _Z(1.0 - alpha / 2.0) * se
        p_value = _normal_cdf(excess / se)
    non_inferior = excess + radius < 0
    failed = excess - radius > 0
    status: GuardrailStatus = "non_inferior" if non_inferior else "failed" if failed else "inconclusive"
    low, high = _relative(effect.estimate - radius), _relative(effect.estimate + radius)
    estimate = _relative(effect.estimate)
    return GuardrailResult(
        **common,  # type: ignore[arg-type]
        status=status,
        non_inferior=non_inferior,
        failed=failed,
        relative_difference=estimate,
        bound=high if harm_sign > 0 else low,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        reason=_describe(status, estimate, low, high, boundary),
    )


# exp(700) is about 1e304: a bound past it means "no finite bound" and stays a finite JSON number.
_LOG_CAP = 700.0


def _relative(log_ratio: float) -> float:
    """exp(log_ratio) - 1, capped so that a huge interval (a tiny sample) cannot overflow."""
    return math.expm1(min(log_ratio, _LOG_CAP))


def _sequential_radius_and_p(effect: Effect, theta_0: float, excess: float, alpha: float) -> tuple[float, float]:
    """Radius of the always-valid interval around theta_hat, and the always-valid p-value of
    theta = theta_0 when the estimate lies on the good side of it (1 otherwise)."""
    tau_sq = theta_0**2
    radius = always_valid_interval(effect, tau_sq, alpha).high - effect.estimate
    if excess >= 0:
        return radius, 1.0
    log_lr = float(msprt_log_likelihood_ratio(effect.estimate - theta_0, effect.variance, tau_sq))
    return radius, math.exp(-max(log_lr, 0.0))


def _names(results: Sequence[GuardrailResult]) -> str:
    return "; ".join(f"guardrail {g.metric!r} of {g.arm!r}: {g.reason}" for g in results)


def guardrail_verdict(
    primary: Verdict,
    variants: Sequence[VariantOutcome],
    guardrails: Sequence[GuardrailResult],
    *,
    alpha: float,
) -> Verdict:
    """The ship decision: the primary's verdict, with every guardrail of the winner required.

    `primary` and `variants` are the primary metric's verdict and comparisons (as given to
    `ab_test_verdict`, `alpha` the level it used); `guardrails` holds one result per guardrail
    metric and variant. Rules, the first that applies:

    1. `srm_invalid` / `insufficient_data` of the primary stand: nothing can be read.
    2. The primary names a variant as winner: the best variant significantly better than the
       control whose guardrails are all non-inferior wins. Otherwise, if a better variant's
       guardrail is still open (inconclusive or not testable), `keep_running`, naming it; if
       every better variant has a failed guardrail, `guardrail_failed`, naming metric and arm.
    3. Otherwise (`keep_running`, `no_difference`, or the control wins because every variant
       is worse): a failed guardrail of any variant gives `guardrail_failed`, naming it;
       else the primary's verdict stands.
    """
    if primary.status in ("srm_invalid", "insufficient_data"):
        return primary
    by_arm: dict[str, list[GuardrailResult]] = {}
    for g in guardrails:
        by_arm.setdefault(g.arm, []).append(g)
    failed = [g for g in guardrails if g.failed]
    candidates = superior_variants(variants, alpha)
    if primary.status != "winner" or primary.winner not in {v.arm for v in candidates}:
        if failed:
            return Verdict("guardrail_failed", None, _names(failed))
        return primary
    open_: list[GuardrailResult] = []
    for candidate in candidates:
        own = by_arm.get(candidate.arm, [])
        if all(g.non_inferior for g in own):
            return _winner(primary, candidate.arm, own, [g for g in failed + open_ if g.arm != candidate.arm])
        open_.extend(g for g in own if not g.non_inferior and not g.failed)
    if open_:
        passed = [g for g in failed if g.arm != open_[0].arm]
        note = f"; also {_names(passed)}" if passed else ""
        return Verdict("keep_running", None, f"{open_[0].arm!r} beats the control on the primary metric, but "
                                             f"not every guardrail is shown non-inferior yet: {_names(open_)}{note}")
    return Verdict("guardrail_failed", None, _names(failed))


def _winner(primary: Verdict, arm: str, own: Sequence[GuardrailResult], others: Sequence[GuardrailResult]) -> Verdict:
    """The winner's verdict: the primary's reason when it is the same arm, plus its guardrails and
    the failed or open guardrails of other variants."""
    held = "; guardrails held: " + ", ".join(f"{g.metric!r} {g.reason}" for g in own) if own else ""
    also = f"; not shipped: {_names(others)}" if others else ""
    if arm == primary.winner:
        return Verdict("winner", arm, primary.reason + held + also)
    return Verdict("winner", arm, f"{arm!r} is the best variant that beats the control with every guardrail "
                                  f"held{held}{also}")


def bandit_guardrail_verdict(primary: Verdict, guardrails: Sequence[GuardrailResult]) -> Verdict:
    """A bandit's call with guardrails, from always-valid results (`sequential=True`), so the
    bandit's repeated looks stay safe.

    The best arm wins only with every guardrail of it shown non-inferior (the control, the
    reference, has none to show). A failed guardrail of the best arm gives `guardrail_failed`;
    an open one keeps the bandit running. Other arms' failed guardrails do not stop the bandit:
    the engine takes those arms out of traffic, and the reason lists them.
    """
    failed = [g for g in guardrails if g.failed]
    note = f"; taken out of traffic: {_names(failed)}" if failed else ""
    if primary.status != "winner":
        return Verdict(primary.status, primary.winner, primary.reason + note)
    own = [g for g in guardrails if g.arm == primary.winner]
    if any(g.failed for g in own):
        return Verdict("guardrail_failed", None, _names(failed))
    open_ = [g for g in own if not g.non_inferior]
    if open_:
        return Verdict("keep_running", None, f"{primary.winner!r} is the best arm, but not every guardrail is "
                                             f"shown non-inferior yet: {_names(open_)}{note}")
    return _winner(primary, primary.winner or "", own, failed)
