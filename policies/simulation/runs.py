"""Many simulated experiments, read as the report reads them: how often a design calls a winner,
a wrong one, how soon, and at what regret.

`simulate_runs` runs `plan.runs` independent experiments of a design against a known truth, each
for `plan.exposures` exposures, and reads every run at `plan.look_every`, `2 * look_every`, ...
exposures and at the end. Reading is the caller's: a `Reader` maps what a report would see at a
look (`Look`: per-arm sufficient statistics, and for adaptive designs the decision log) to the
report's `Verdict`. The engine passes its own verdict code, so the figures are those of the rules
the team will read; this module knows none of them.

- A fixed split (A/B test) is simulated on sufficient statistics, vectorised across runs: the
  exposures between two looks fall on the arms multinomially with the declared weights (hash
  assignment), conversions are binomial, and each conversion of a revenue metric is worth an
  exponential amount of the arm's mean value (as in `bandits.Truth`), summed with its square.
- An adaptive policy (bandit) is simulated run by run with `bandits.simulate`, so its refresh
  cadence, forgetting and drift behave as in a single simulation; every look carries the log of
  the decisions so far (arm, propensity, outcome), for readers that weight by propensity.

A run is read until its first final verdict (`winner` or `no_difference`), since later looks
cannot change its first call. Regret is the expected (pseudo-)regret against the best arm in
force, summed over all the run's exposures (allocation goes on after a call).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from numpy.typing import NDArray

from policies.bandits.registry import Policy
from policies.simulation.bandits import SimulationResult, Truth, TruthChange, TruthPhases, simulate, truth_phases
from policies.stats.verdicts import Verdict, VerdictStatus
from policies.sufficient import ArmStats, BinaryStats, MeanStats

FloatArray = NDArray[np.float64]

FINAL: tuple[VerdictStatus, ...] = ("winner", "no_difference")
"""Verdicts a team acts on: a run is not read past its first."""


@dataclass(frozen=True)
class RunPlan:
    """`runs` experiments of `exposures` exposures each, read every `look_every` and at the end."""

    runs: int
    exposures: int
    look_every: int

    def __post_init__(self) -> None:
        if self.runs < 1 or self.exposures < 1 or self.look_every < 1:
            raise ValueError("runs, exposures and look_every must be >= 1")
        if self.look_every > self.exposures:
            raise ValueError(f"look_every ({self.look_every:,}) exceeds the exposures per run ({self.exposures:,})")

    @property
    def looks(self) -> tuple[int, ...]:
        """Exposures at each look: every `look_every`, and the end of the run."""
        points = list(range(self.look_every, self.exposures + 1, self.look_every))
        return tuple(points if points[-1] == self.exposures else [*points, self.exposures])


@dataclass(frozen=True)
class SplitDesign:
    """An A/B test: every exposure falls on arm i with probability `weights[i] / sum(weights)`."""

    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if not all(math.isfinite(w) and w >= 0 for w in self.weights) or not sum(self.weights) > 0:
            raise ValueError("split weights must be finite, >= 0 and not all 0")

    @property
    def shares(self) -> FloatArray:
        weights = np.asarray(self.weights, dtype=float)
        return weights / weights.sum()


@dataclass(frozen=True)
class PolicyDesign:
    """A bandit: `policy`'s weights refreshed every `update_every` exposures."""

    policy: Policy
    update_every: int


Design = SplitDesign | PolicyDesign


@dataclass(frozen=True, eq=False)
class DecisionLog:
    """Per decision so far: the arm played, its propensity and the outcome. `propensities` is
    None for a policy refreshed at every decision (its weights are not computed then)."""

    arms: NDArray[np.intp]
    propensities: FloatArray | None
    outcomes: FloatArray


@dataclass(frozen=True, eq=False)
class Look:
    """What a report sees at one look of one run: `stats[i]` pools arm i's exposures so far
    (`BinaryStats` for a binary metric, `MeanStats` for revenue); `log` is None for a fixed split."""

    exposures: int
    stats: tuple[ArmStats, ...]
    log: DecisionLog | None = None


Reader = Callable[[Look], Verdict]
ReaderFactory = Callable[[np.random.Generator], Reader]
"""Makes one run's reader from that run's generator; a reader may keep state across the run's
looks (a plan frozen at an early look, say), so each run gets a fresh one."""


@dataclass(frozen=True)
class RunResult:
    """One run: the first call (exposures, arm index, whether no truly best arm), the look it
    stopped at (its first final verdict, else the end) with that look's status, whether a look
    up to the stop said `srm_invalid`, and the run's regret."""

    call_at: int | None
    winner: int | None
    wrong: bool
    stop_at: int
    stop_status: VerdictStatus
    srm_flagged: bool
    regret: float


@dataclass(frozen=True)
class RunsSummary:
    """What `crosspromo simulate --runs` reports (shares are of all runs).

    `median_exposures_to_call` is over the runs that call a winner (None if none does);
    `winner_shares[i]` is the share of runs whose first call names arm i; `*_se` are the
    binomial Monte Carlo standard errors of the shares.
    """

    runs: int
    exposures: int
    look_every: int
    looks: int
    ever_winner_share: float
    ever_winner_share_se: float
    wrong_winner_share: float
    wrong_winner_share_se: float
    median_exposures_to_call: float | None
    regret: float
    mean_exposures_to_stop: float
    no_difference_share: float
    srm_invalid_share: float
    winner_shares: tuple[float, ...]
    best_arms: tuple[int, ...]
    """The truly best arms at the start (ties included)."""


def fixed_horizon_exposures(n_per_arm: int, shares: Sequence[float], z: float = 3.0) -> int:
    """Total exposures at which every arm's expected count is `z` binomial standard deviations
    above `n_per_arm`, so that a random split seldom leaves an arm short of the plan: the
    smallest `t` with `t w - z sqrt(t w (1 - w)) >= n` for the smallest share `w` (a quadratic in
    `sqrt(t)`)."""
    w = min(shares)
    if not 0 < w <= 1 or n_per_arm < 1:
        raise ValueError("shares must be in (0, 1] and n_per_arm >= 1")
    c = z * math.sqrt(w * (1 - w))
    root = (c + math.sqrt(c * c + 4 * w * n_per_arm)) / (2 * w)
    return math.ceil(root * root)


def simulate_runs(
    arms: Sequence[str],
    design: Design,
    truth: Truth,
    plan: RunPlan,
    new_reader: ReaderFactory,
    rng: np.random.Generator,
    *,
    drift: Sequence[TruthChange] = (),
) -> list[RunResult]:
    """Run and read `plan.runs` experiments of `design` against `truth` (changing as `drift` says).

    Reproducible from `rng`: its first spawned generator draws the outcomes (and a bandit's
    choices), the second gives each run's reader its own generator.
    """
    if len(arms) != len(truth.rates) or (isinstance(design, SplitDesign) and len(design.weights) != len(arms)):
        raise ValueError("the arms, the truth and the split must list the same number of arms")
    phases = truth_phases(truth, drift, plan.exposures)
    sim_rng, reader_rng = rng.spawn(2)
    readers = [new_reader(r) for r in reader_rng.spawn(plan.runs)]
    best = _best_arms(phases)
    if isinstance(design, SplitDesign):
        sums, regret = _split_sums(design, phases, plan, sim_rng)
        return [
            _read_run(reader, _split_looks(truth, plan, sums[run]), arms, best, plan.exposures, float(regret[run]))
            for run, reader in enumerate(readers)
        ]
    run_rngs = sim_rng.spawn(plan.runs)
    results = []
    for reader, run_rng in zip(readers, run_rngs, strict=True):
        simulated = simulate(design.policy, truth, plan.exposures, run_rng, update_every=design.update_every,
                             drift=drift, history_points=_refreshes(design, plan))
        results.append(_read_run(reader, _policy_looks(truth, plan, simulated, design), arms, best,
                                 plan.exposures, simulated.total_regret))
    return results


def summarise(results: Sequence[RunResult], plan: RunPlan, arms: int, best_arms: Sequence[int]) -> RunsSummary:
    """The shares, the median exposures to a call and the mean regret of `results`."""
    runs = len(results)
    calls = [r for r in results if r.call_at is not None]
    ever = len(calls) / runs
    wrong = sum(r.wrong for r in results) / runs
    return RunsSummary(
        runs=runs,
        exposures=plan.exposures,
        look_every=plan.look_every,
        looks=len(plan.looks),
        ever_winner_share=ever,
        ever_winner_share_se=math.sqrt(ever * (1 - ever) / runs),
        wrong_winner_share=wrong,
        wrong_winner_share_se=math.sqrt(wrong * (1 - wrong) / runs),
        median_exposures_to_call=float(np.median([r.call_at for r in calls])) if calls else None,
        regret=float(np.mean([r.regret for r in results])),
        mean_exposures_to_stop=float(np.mean([r.stop_at for r in results])),
        no_difference_share=sum(r.stop_status == "no_difference" for r in results) / runs,
        srm_invalid_share=sum(r.srm_flagged for r in results) / runs,
        winner_shares=tuple(sum(r.winner == i for r in calls) / runs for i in range(arms)),
        best_arms=tuple(best_arms),
    )


def best_arms(truth: Truth) -> tuple[int, ...]:
    """Every arm whose expected outcome is the highest (to rounding)."""
    expected = truth.expected
    return tuple(int(i) for i in np.flatnonzero(np.isclose(expected, expected.max(), rtol=1e-12, atol=0.0)))


def _best_arms(phases: TruthPhases) -> Callable[[int], tuple[int, ...]]:
    """The truly best arms after `t` exposures: those of the truth in force at decision `t - 1`."""
    by_phase = [best_arms(t) for t in phases.truths]
    return lambda t: by_phase[int(phases.phase_of(t - 1, t)[0])]


def _read_run(reader: Reader, looks: Iterator[Look], arms: Sequence[str], best: Callable[[int], tuple[int, ...]],
              end: int, regret: float) -> RunResult:
    """Read `looks` in order up to the first final verdict."""
    srm = False
    status: VerdictStatus = "insufficient_data"
    for look in looks:
        verdict = reader(look)
        status = verdict.status
        srm = srm or status == "srm_invalid"
        if status == "winner":
            if verdict.winner is None:
                raise ValueError("a winner verdict must name its arm")
            winner = list(arms).index(verdict.winner)
            return RunResult(look.exposures, winner, winner not in best(look.exposures), look.exposures, status, srm,
                             regret)
        if status in FINAL:
            return RunResult(None, None, False, look.exposures, status, srm, regret)
    return RunResult(None, None, False, end, status, srm, regret)


def _arm_stats(truth: Truth, n: FloatArray, total: FloatArray, total_sq: FloatArray) -> tuple[ArmStats, ...]:
    if truth.values is None:
        return tuple(BinaryStats(int(k), int(s)) for k, s in zip(n, total, strict=True))
    return tuple(MeanStats(int(k), float(t), float(q)) for k, t, q in zip(n, total, total_sq, strict=True))


def _split_sums(split: SplitDesign, phases: TruthPhases, plan: RunPlan,
                rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    """Per run and look, the per-arm `(n, total, total_sq)` so far, shape (runs, looks, 3, arms),
    and each run's regret over all its exposures."""
    runs, k = plan.runs, len(split.weights)
    looks = set(plan.looks)
    sums = np.zeros((runs, 3, k))
    at_looks: list[FloatArray] = []
    regret = np.zeros(runs)
    for start, stop in pairwise(sorted({0, *looks, *(int(s) for s in phases.starts)})):
        truth = phases.truths[int(phases.phase_of(start, start + 1)[0])]
        counts = rng.multinomial(stop - start, split.shares, size=runs)
        converted = rng.binomial(counts, truth.rates)
        if truth.values is None:
            total = total_sq = converted.astype(float)
        else:
            cells = np.repeat(np.arange(runs * k), converted.ravel())
            amounts = rng.standard_exponential(cells.size) * np.asarray(truth.values)[cells % k]
            total = np.bincount(cells, amounts, minlength=runs * k).reshape(runs, k)
            total_sq = np.bincount(cells, amounts * amounts, minlength=runs * k).reshape(runs, k)
        sums += np.stack([counts, total, total_sq], axis=1)
        regret += counts @ (truth.expected.max() - truth.expected)
        if stop in looks:
            at_looks.append(sums.copy())
    return np.stack(at_looks, axis=1), regret


def _split_looks(truth: Truth, plan: RunPlan, sums: FloatArray) -> Iterator[Look]:
    for t, (n, total, total_sq) in zip(plan.looks, sums, strict=True):
        yield Look(t, _arm_stats(truth, n, total, total_sq))


def _refreshes(design: PolicyDesign, plan: RunPlan) -> int:
    """Weight snapshots to keep so that every refresh is kept (`bandits.simulate` keeps one at
    least every `ceil(users / history_points)` <= `update_every` decisions), none when the policy
    refreshes at every decision (computing them would cost a quadrature per decision)."""
    return 0 if design.update_every == 1 else math.ceil(plan.exposures / design.update_every)


def _policy_looks(truth: Truth, plan: RunPlan, simulated: SimulationResult, design: PolicyDesign) -> Iterator[Look]:
    arms, outcomes = simulated.arms, simulated.outcomes
    propensities = None
    if design.update_every > 1:
        refresh = np.searchsorted(simulated.weight_steps, np.arange(arms.size), side="right") - 1
        propensities = simulated.weight_history[refresh, arms]
    k = len(truth.rates)
    for t in plan.looks:
        played, seen = arms[:t], outcomes[:t]
        n = np.bincount(played, minlength=k).astype(float)
        total = np.bincount(played, seen, minlength=k)
        total_sq = np.bincount(played, seen * seen, minlength=k)
        yield Look(t, _arm_stats(truth, n, total, total_sq),
                   DecisionLog(played, None if propensities is None else propensities[:t], seen))
