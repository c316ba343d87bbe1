"""Run a policy against a simulated population whose true per-arm outcomes are known.

The simulator mirrors the engine: the policy's weights are refreshed every `update_every`
decisions from the per-arm sums seen so far, and every decision in between is drawn from
those cached weights (vectorised per block). Policies that forget (an attribute `discount`
or `window`, as on `ThompsonSampling`) get discounted sums, folded once per refresh, or the
sums of their last `window` decisions (see `policies.bandits.arm_stats`).

Outcomes come from a separate random stream, drawn as potential outcomes for every arm in
fixed-size chunks (`potential_outcomes`): two policies simulated with the same seed face the
same users (common random numbers), whatever their refresh cadence, which makes their regret
comparison less noisy; a peer library can be run against the same users too.

Regret is the expected (pseudo-)regret against the best arm in force at each step, the
usual measure for bandit simulations; without drift that is the best fixed arm, and with
drift it is the dynamic regret of Garivier & Moulines 2011.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from policies.bandits.arm_stats import Metric, stats_from_sums
from policies.bandits.choice import draw_arms
from policies.bandits.registry import Policy
from policies.bandits.thompson import ThompsonSampling
from policies.sufficient import ArmStats

FloatArray = NDArray[np.float64]

# Potential outcomes are drawn this many users at a time, whatever `update_every` is, so the
# outcome stream of a seed does not depend on the refresh cadence.
_CHUNK = 16_384


@dataclass(frozen=True)
class Truth:
    """True outcome model per arm: conversions with probability `rates[i]`; for a revenue
    metric each conversion is worth an exponentially distributed amount of mean `values[i]`
    (so revenue per user has mean `rates[i] * values[i]`)."""

    rates: tuple[float, ...]
    values: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.rates or not all(0 <= r <= 1 for r in self.rates):
            raise ValueError("rates must be a non-empty list of probabilities in [0, 1]")
        if self.values is not None and (
            len(self.values) != len(self.rates) or not all(math.isfinite(v) and v >= 0 for v in self.values)
        ):
            raise ValueError("values must give a finite mean value >= 0 for every arm")

    @property
    def metric(self) -> Metric:
        return "binary" if self.values is None else "revenue"

    @property
    def expected(self) -> FloatArray:
        """Mean outcome per user for each arm."""
        rates = np.asarray(self.rates, dtype=float)
        return rates if self.values is None else rates * np.asarray(self.values, dtype=float)

    @property
    def best_arm(self) -> int:
        return int(np.argmax(self.expected))


@dataclass(frozen=True)
class TruthChange:
    """From decision `step` (0-based) on, outcomes follow `truth`."""

    step: int
    truth: Truth


def swap_best_worst(truth: Truth) -> Truth:
    """`truth` with the best and the worst arm exchanged (the usual drift testbed)."""
    order = np.argsort(truth.expected, kind="stable")
    best, worst = int(order[-1]), int(order[0])
    swapped = list(range(len(truth.rates)))
    swapped[best], swapped[worst] = worst, best

    def permute(xs: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(xs[i] for i in swapped)

    return Truth(permute(truth.rates), None if truth.values is None else permute(truth.values))


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """Per-step decisions, cumulative outcomes and regret, and sampled weights.

    `arms[t]` is the arm played at decision t and `outcomes[t]` what it yielded (conversion or
    revenue); `conversions[t]` and `regret[t]` are cumulative over decisions 0..t (conversions
    are revenue for a revenue metric).
    `weight_history[r]` holds the weights in force at decision `weight_steps[r]`.
    `best_arm` is the best arm of the truth in force at the end.
    """

    users: int
    best_arm: int
    arms: NDArray[np.intp]
    outcomes: FloatArray
    conversions: FloatArray
    regret: FloatArray
    final_weights: FloatArray
    weight_steps: NDArray[np.int64]
    weight_history: FloatArray

    @property
    def pulls(self) -> NDArray[np.int64]:
        """Decisions per arm."""
        return np.bincount(self.arms, minlength=self.final_weights.size)

    @property
    def total_conversions(self) -> float:
        return float(self.conversions[-1])

    @property
    def total_regret(self) -> float:
        return float(self.regret[-1])


def simulate(
    policy: Policy,
    truth: Truth,
    users: int,
    rng: np.random.Generator,
    *,
    update_every: int = 1,
    drift: Sequence[TruthChange] = (),
    history_points: int = 100,
) -> SimulationResult:
    """Simulate `users` decisions of `policy` against `truth`, changing as `drift` says.

    `update_every` is the refresh cadence in decisions (1 = fully online). Fully online
    Thompson sampling without top-two samples the posterior once per decision, which has
    the same law as drawing from its weights and skips the quadrature; the weights are then
    only computed for the `history_points` snapshots (up to that many evenly spaced
    refreshes are kept; 0 keeps none). Reproducible from `rng`: the users' outcomes are
    `potential_outcomes(truth, users, rng.spawn(2)[0], drift=drift)`, the policy's draws
    come from the second spawned generator.
    """
    if users < 1 or update_every < 1 or history_points < 0:
        raise ValueError("users and update_every must be >= 1 and history_points >= 0")
    phases = truth_phases(truth, drift, users)
    outcome_rng, policy_rng = rng.spawn(2)
    outcomes = phases.outcome_chunks(outcome_rng)
    sums = _Sums(
        truth.metric,
        len(truth.rates),
        users,
        getattr(policy, "discount", None),
        getattr(policy, "window", None),
    )
    record_every = math.ceil(users / history_points) if history_points else None
    if update_every == 1 and isinstance(policy, ThompsonSampling) and policy.top_two is None:
        history = _run_online_thompson(policy, outcomes, sums, policy_rng, record_every)
    else:
        history = _run_blocks(policy, outcomes, sums, policy_rng, update_every, record_every)
        sums.advance(users)
    expected = np.array([t.expected for t in phases.truths])
    phase = phases.phase_of(0, users)
    return SimulationResult(
        users=users,
        best_arm=phases.truths[-1].best_arm,
        arms=sums.played,
        outcomes=sums.outcomes,
        conversions=np.cumsum(sums.outcomes),
        regret=np.cumsum(expected.max(axis=1)[phase] - expected[phase, sums.played]),
        final_weights=policy.weights(sums.stats(), policy_rng),
        weight_steps=np.array([step for step, _ in history], dtype=np.int64),
        weight_history=np.array([w for _, w in history]).reshape(len(history), sums.arms),
    )


def potential_outcomes(
    truth: Truth, users: int, rng: np.random.Generator, *, drift: Sequence[TruthChange] = ()
) -> Iterator[tuple[int, FloatArray]]:
    """Yield `(start, table)` chunks: `table[i, k]` is what user `start + i` would yield on arm k."""
    return truth_phases(truth, drift, users).outcome_chunks(rng)


def _run_blocks(
    policy: Policy,
    outcomes: Iterator[tuple[int, FloatArray]],
    sums: _Sums,
    policy_rng: np.random.Generator,
    update_every: int,
    record_every: int | None,
) -> list[tuple[int, FloatArray]]:
    """Refresh the weights every `update_every` decisions and draw each block at once."""
    history: list[tuple[int, FloatArray]] = []
    weights = np.empty(0)
    for start, table in outcomes:
        t, stop = start, start + len(table)
        while t < stop:
            if t % update_every == 0:
                sums.advance(t)
                weights = policy.weights(sums.stats(), policy_rng)
                if record_every and (not history or t - history[-1][0] >= record_every):
                    history.append((t, weights))
            block_stop = min(stop, (t // update_every + 1) * update_every)
            arms = draw_arms(weights, policy_rng, block_stop - t)
            sums.add(t, arms, table[np.arange(t - start, block_stop - start), arms])
            t = block_stop
    return history


def _run_online_thompson(
    policy: ThompsonSampling,
    outcomes: Iterator[tuple[int, FloatArray]],
    sums: _Sums,
    policy_rng: np.random.Generator,
    record_every: int | None,
) -> list[tuple[int, FloatArray]]:
    """Fully online Thompson sampling: explore uniformly with probability `K * min_weight`,
    else play the argmax of one posterior draw; sums are updated after every decision."""
    history: list[tuple[int, FloatArray]] = []
    n, total, total_sq = sums.n, sums.total, sums.total_sq  # updated in place
    played, observed, window = sums.played, sums.outcomes, sums.window
    gamma = sums.discount
    explore = sums.arms * policy.min_weight
    for start, table in outcomes:
        for i, row in enumerate(table):
            t = start + i
            if record_every and t % record_every == 0:
                history.append((t, policy.weights(sums.stats(), policy_rng)))
            if window is not None and t >= window:
                old, value = played[t - window], observed[t - window]
                n[old] -= 1
                # Subtracting revenue can leave rounding dust: an empty arm's sums are exactly 0.
                total[old] = total[old] - value if n[old] else 0.0
                total_sq[old] = max(total_sq[old] - value * value, 0.0) if n[old] else 0.0
            if explore and policy_rng.random() < explore:
                arm = int(policy_rng.integers(sums.arms))
            else:
                posterior = policy.prior.posterior(n, total, total_sq)
                arm = int(posterior.sample(policy_rng).argmax())
            value = row[arm]
            if gamma is not None:
                n *= gamma
                total *= gamma
                total_sq *= gamma
            n[arm] += 1
            total[arm] += value
            total_sq[arm] += value * value
            played[t], observed[t] = arm, value
    return history


@dataclass(frozen=True)
class TruthPhases:
    """The truths in force and the decision at which each starts."""

    truths: tuple[Truth, ...]
    starts: NDArray[np.int64]
    users: int

    def phase_of(self, start: int, stop: int) -> NDArray[np.intp]:
        return np.searchsorted(self.starts, np.arange(start, stop), side="right") - 1

    def outcome_chunks(self, rng: np.random.Generator) -> Iterator[tuple[int, FloatArray]]:
        rates = np.array([truth.rates for truth in self.truths])
        revenue = self.truths[0].values is not None
        values = np.array([truth.values for truth in self.truths]) if revenue else None
        for start in range(0, self.users, _CHUNK):
            stop = min(start + _CHUNK, self.users)
            phase = self.phase_of(start, stop)
            converted = rng.random((stop - start, rates.shape[1])) < rates[phase]
            if values is None:
                yield start, converted.astype(float)
            else:
                amounts = values[phase] * rng.standard_exponential(converted.shape)
                yield start, np.where(converted, amounts, 0.0)


def truth_phases(truth: Truth, drift: Sequence[TruthChange], users: int) -> TruthPhases:
    """The truths in force over `users` decisions: `truth`, then each change of `drift` (checked)."""
    steps = [change.step for change in drift]
    if any(not 0 < s < users for s in steps) or steps != sorted(set(steps)):
        raise ValueError("drift steps must be increasing and strictly between 0 and users")
    truths = (truth, *(change.truth for change in drift))
    if any(len(t.rates) != len(truth.rates) or t.metric != truth.metric for t in truths):
        raise ValueError("every truth in drift must have the same arms and metric")
    return TruthPhases(truths, np.array([0, *steps], dtype=np.int64), users)


class _Sums:
    """Per-arm sums the policy sees, plus the log of every decision and outcome.

    Decisions are added as they happen; `advance(t)` closes a refresh period at decision `t`:
    discounted sums are folded (`gamma * past + new`), windowed sums recomputed from the log.
    The online Thompson path updates `n`, `total` and `total_sq` in place instead.
    """

    def __init__(self, metric: Metric, arms: int, users: int, discount: float | None, window: int | None) -> None:
        self.metric, self.arms = metric, arms
        self.discount, self.window = discount, window
        self.played = np.zeros(users, dtype=np.intp)
        self.outcomes = np.zeros(users)
        self.n, self.total, self.total_sq = np.zeros(arms), np.zeros(arms), np.zeros(arms)
        self._pending = np.zeros((3, arms))
        self._closed_at = 0

    def add(self, start: int, arms: NDArray[np.intp], outcomes: FloatArray) -> None:
        stop = start + arms.size
        self.played[start:stop] = arms
        self.outcomes[start:stop] = outcomes
        self._pending += self._bincount(arms, outcomes)

    def advance(self, t: int) -> None:
        if t == self._closed_at:
            return
        if self.window is not None:
            low = max(0, t - self.window)
            sums = self._bincount(self.played[low:t], self.outcomes[low:t])
        else:
            gamma = 1.0 if self.discount is None else self.discount
            sums = gamma * np.array([self.n, self.total, self.total_sq]) + self._pending
        self.n, self.total, self.total_sq = sums
        self._pending[:] = 0.0
        self._closed_at = t

    def stats(self) -> list[ArmStats]:
        return stats_from_sums(self.metric, self.n, self.total, self.total_sq)

    def _bincount(self, arms: NDArray[np.intp], outcomes: FloatArray) -> FloatArray:
        return np.array(
            [
                np.bincount(arms, minlength=self.arms),
                np.bincount(arms, outcomes, minlength=self.arms),
                np.bincount(arms, outcomes * outcomes, minlength=self.arms),
            ],
            dtype=float,
        )
