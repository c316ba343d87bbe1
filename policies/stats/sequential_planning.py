"""Sample size per arm for the sequential (mSPRT) A/B test read at K equally spaced looks.

The n per arm is the one at which the always-valid test of `policies.stats.sequential`,
read at K equally spaced looks up to n (n/K, 2n/K, ..., n), rejects with the target power when
the true effect is the declared MDE. The report uses it as the sequential horizon.

Method: the effect estimate at look k is N(theta, V / t_k) with t_k = k / K and V its variance at
n, so B_k = theta_hat_k t_k / sqrt(V) is a Gaussian random walk with drift u t_k, u = MDE /
sqrt(V), and independent increments. Look k rejects when |B_k| >= b_k = t_k r_k / sqrt(V), r_k
the confidence-sequence radius (`always_valid_radius`) at variance V / t_k with tau = MDE. The
probability of crossing at some look is computed by recursive numerical integration of the
density of the walk on the continuation region (Armitage, McPherson & Rowe 1969; Jennison &
Turnbull 2000, "Group Sequential Methods with Applications to Clinical Trials", chapter 19),
Simpson's rule on a grid a fraction of an increment's sd wide: deterministic, no Monte Carlo
error. In units of sqrt(V) the problem depends on u, alpha and K only, so the drift u* giving
the target power is solved once (Brent's method) and cached; then n = u*^2 sigma^2 / MDE^2 with
sigma^2 the per-pair variance (p(1-p) + p'(1-p') at the planning rate p and p' = p + MDE,
unpooled as the test's variance is; 2 sd^2 for a mean).

Several variants: each comparison is planned at `planning.alpha_per_test` (Bonferroni), as the
fixed-horizon plan is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr
from scipy.stats import norm

from policies.stats.corrections import Correction
from policies.stats.planning import MAX_PER_ARM, PlanningError, absolute_mde, alpha_per_test
from policies.stats.sequential import always_valid_radius

DEFAULT_LOOKS = 30
"""Looks the sequential plan assumes when none are declared (a daily report over a month)."""

MAX_LOOKS = 200
"""More looks make the grid (a fraction of an increment's sd) too fine to integrate quickly."""

_GRID_PER_SD = 8  # grid points per standard deviation of one increment


def _boundaries(drift: float, alpha: float, looks: int) -> np.ndarray:
    """b_k of the module doc, in units of sqrt(V) (V the effect's variance at the horizon)."""
    t = np.arange(1, looks + 1) / looks
    return t * always_valid_radius(1.0 / t, drift**2, alpha)


def _simpson(low: float, high: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and composite Simpson weights on [low, high] with spacing at most `step`."""
    intervals = 2 * max(1, math.ceil((high - low) / step / 2))
    nodes = np.linspace(low, high, intervals + 1)
    weights = np.ones(intervals + 1)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return nodes, weights * (high - low) / (3.0 * intervals)


def _normal_pdf(x: np.ndarray, sd: float) -> np.ndarray:
    return np.exp(-0.5 * (x / sd) ** 2) / (sd * math.sqrt(2.0 * math.pi))


def sequential_power(drift: float, alpha: float, looks: int = DEFAULT_LOOKS) -> float:
    """Probability that the always-valid test rejects at one of `looks` equally spaced looks.

    `drift` is the true effect, equal to the mixture's tau (the MDE), in standard errors of the
    estimate at the last look. Recursive integration as in the module doc; with one look it is
    the normal power formula Phi(u - c) + Phi(-u - c) with the mixture's critical value c.
    """
    if not 1 <= looks <= MAX_LOOKS:
        raise ValueError(f"looks must be in [1, {MAX_LOOKS}], got {looks!r}")
    if not (math.isfinite(drift) and drift > 0):
        raise ValueError(f"drift must be finite and > 0, got {drift!r}")
    bounds = _boundaries(drift, alpha, looks)
    step = 1.0 / looks
    sd, shift = math.sqrt(step), drift * step

    def stay(lo: float, hi: float, start: np.ndarray | float) -> np.ndarray:
        """P(start + increment in (lo, hi)) for each start."""
        centre = np.asarray(start, float) + shift
        return ndtr((hi - centre) / sd) - ndtr((lo - centre) / sd)

    power = 1.0 - float(stay(-bounds[0], bounds[0], 0.0))
    nodes, weights = _simpson(-bounds[0], bounds[0], sd / _GRID_PER_SD)
    density = _normal_pdf(nodes - shift, sd)
    for b in bounds[1:]:
        mass = weights * density
        power += float(mass @ (1.0 - stay(-b, b, nodes)))
        new_nodes, new_weights = _simpson(-b, b, sd / _GRID_PER_SD)
        density = _normal_pdf(new_nodes[:, None] - nodes[None, :] - shift, sd) @ mass
        nodes, weights = new_nodes, new_weights
    return power


@lru_cache(maxsize=256)
def sequential_drift(alpha: float, power: float, looks: int = DEFAULT_LOOKS) -> float:
    """The MDE in standard errors at the horizon that gives `power` (Brent's method, cached).

    The fixed-horizon drift z_{1-alpha/2} + z_power is a lower bound: the always-valid boundary
    is never below the fixed one at the horizon.
    """
    for name, value in (("alpha", alpha), ("power", power)):
        if not 0 < value < 1:
            raise PlanningError(name, f"must be in (0, 1), got {value!r}")
    low = float(norm.ppf(1 - alpha / 2) + norm.ppf(power))
    high = 2.0 * low
    while sequential_power(high, alpha, looks) < power:
        low, high = high, 2.0 * high
    return float(brentq(lambda u: sequential_power(u, alpha, looks) - power, low, high, xtol=1e-10))


@dataclass(frozen=True, slots=True)
class SequentialPlan:
    """Exposures per arm for the sequential test; `drift` is the MDE in standard errors at n."""

    baseline: float
    target: float
    alpha_per_test: float
    power: float
    looks: int
    drift: float
    n_per_arm: int


@lru_cache(maxsize=1024)
def plan_sequential_sample_size(
    baseline: float,
    mde: float,
    *,
    std: float | None = None,
    relative: bool = True,
    alpha: float = 0.05,
    power: float = 0.8,
    arms: int = 2,
    correction: Correction = "holm",
    looks: int = DEFAULT_LOOKS,
) -> SequentialPlan:
    """Sequential planned n per arm (module doc); `std` None means a binary metric (a rate)."""
    if not math.isfinite(mde) or mde == 0:
        raise PlanningError("mde", f"must be a finite non-zero number, got {mde!r}")
    if not 1 <= looks <= MAX_LOOKS:
        raise PlanningError("looks", f"must be in [1, {MAX_LOOKS}], got {looks!r}")
    shift = absolute_mde(baseline, mde, relative=relative)
    target = baseline + shift
    if std is None:
        if not 0 < baseline < 1:
            raise PlanningError("baseline", f"a rate must be in (0, 1), got {baseline!r}")
        if not 0 < target < 1:
            raise PlanningError("mde", f"baseline {baseline!r} moved by mde {mde!r} leaves (0, 1): {target!r}")
        pair_variance = baseline * (1 - baseline) + target * (1 - target)
    else:
        if not (math.isfinite(std) and std > 0):
            raise PlanningError("std", f"must be a finite number > 0, got {std!r}")
        if not math.isfinite(baseline) or shift == 0:
            raise PlanningError("baseline", f"a relative mde needs a finite non-zero baseline, got {baseline!r}")
        pair_variance = 2.0 * std**2
    level = alpha_per_test(alpha, arms, correction)
    drift = sequential_drift(level, power, looks)
    n = drift**2 * pair_variance / shift**2
    if not n <= MAX_PER_ARM:
        raise PlanningError("mde", f"too small to plan: would need more than {MAX_PER_ARM:.0e} exposures per arm")
    return SequentialPlan(baseline, target, level, power, looks, drift, max(1, math.ceil(n)))
