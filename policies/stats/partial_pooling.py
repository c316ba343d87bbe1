"""Bandit arms read together: a normal hierarchical model over the arms' estimates.

Each arm a brings an estimate y_a of its mean with the variance v_a of that estimate (its pooled
posterior, or its weight-corrected estimate, `policies.stats.bandit_inference`). The arms are
exchangeable:

    y_a | theta_a ~ N(theta_a, v_a),   theta_a | m, s ~ N(m, s^2),   m flat,   s ~ half-Cauchy(0, A)

with A the declared minimum detectable effect on the difference scale (the prior says "arms
differ by about what the team cares about"; the half-Cauchy for a group-level scale with few
groups: Gelman 2006, "Prior distributions for variance parameters in hierarchical models").
The posterior is computed as in Gelman et al., "Bayesian Data Analysis" (3rd ed.), 5.4, on a
grid of s at the midpoints of `GRID` cells of equal prior mass, s_g = A tan(pi (g + 1/2) / (2 GRID)):

    p(s | y) ~ p(s) V_m^(1/2) prod_a (v_a + s^2)^(-1/2) exp(-(y_a - m_hat)^2 / (2 (v_a + s^2))),
    V_m = 1 / sum_a 1 / (v_a + s^2),   m_hat = V_m sum_a y_a / (v_a + s^2),
    m | s, y ~ N(m_hat, V_m),   theta_a | m, s, y ~ N((1 - B_a) y_a + B_a m, B_a s^2),
    B_a = v_a / (v_a + s^2).

Why: a winner is called when an arm's `prob_best` reaches a threshold, and a team reads the
report every day. With independent flat priors every gap between arms is plausible a priori,
so with three equal arms the leader's `prob_best` wanders above 0.95 at some daily look in about
11% of runs. The shared prior lets the data say how far apart the arms are (partial pooling):
while they look alike, s is small and each arm is shrunk toward the common mean, so chance gaps
stay unconvincing; a real gap widens s and is called. It is the Bayesian answer to multiple
comparisons (Gelman, Hill & Yajima 2012, "Why we (usually) don't have to worry about multiple
comparisons"); it is not a guarantee under optional stopping, so its repeated-reading rates are
measured (`crosspromo simulate --runs`, tests/benchmarks/bench_simulate_runs.py).

Every summary (interval, `prob_best`, `prob_beat_control`, expected loss, lift) comes from joint
draws of theta, from the caller's Generator, as for the revenue posteriors of
`policies.stats.bayesian` (standard error of a probability at most 0.5 / sqrt(draws)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from policies.stats.bayesian import DEFAULT_DRAWS, ArmPosterior, summaries_from_draws
from policies.stats.effects import Interval

FloatArray = NDArray[np.float64]

GRID = 256
"""Cells of equal half-Cauchy prior mass over s."""


def _scale_grid(scale: float) -> FloatArray:
    return scale * np.tan(np.pi / 2 * (np.arange(GRID) + 0.5) / GRID)


def _grid_posterior(y: FloatArray, v: FloatArray, s: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Posterior weights of the grid points s, and m_hat and V_m at each (module doc)."""
    total = v[None, :] + s[:, None] ** 2
    v_m = 1.0 / (1.0 / total).sum(axis=1)
    m_hat = v_m * (y[None, :] / total).sum(axis=1)
    log_w = 0.5 * np.log(v_m) - 0.5 * np.log(total).sum(axis=1) - 0.5 * ((y - m_hat[:, None]) ** 2 / total).sum(axis=1)
    w = np.exp(log_w - log_w.max())
    return w / w.sum(), m_hat, v_m


def _check(means: ArrayLike, variances: ArrayLike, scale: float) -> tuple[FloatArray, FloatArray]:
    y, v = np.asarray(means, dtype=float), np.asarray(variances, dtype=float)
    if y.ndim != 1 or y.shape != v.shape or y.size < 2:
        raise ValueError("need one mean and one variance per arm, for at least two arms")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(v)) and np.all(v >= 0)):
        raise ValueError("means must be finite and variances finite and >= 0")
    if not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"scale must be finite and >= 0, got {scale!r}")
    # An arm known exactly (variance 0: every value equal) is pinned to its estimate; a floor far
    # below every other scale keeps the algebra finite.
    floor = 1e-12 * max(float(v.max()), scale * scale, float(np.abs(y).max()) ** 2, 1e-300)
    return y, np.maximum(v, floor)


def hierarchical_draws(means: ArrayLike, variances: ArrayLike, scale: float, rng: np.random.Generator,
                       draws: int = DEFAULT_DRAWS) -> FloatArray:
    """(draws x arms) joint posterior draws of theta (module doc)."""
    y, v = _check(means, variances, scale)
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    s = _scale_grid(scale) if scale > 0 else np.zeros(1)
    w, m_hat, v_m = _grid_posterior(y, v, s)
    g = rng.choice(s.size, size=draws, p=w)
    m = m_hat[g] + np.sqrt(v_m[g]) * rng.standard_normal(draws)
    s_sq = s[g, None] ** 2
    shrink = v / (v + s_sq)
    centre = (1.0 - shrink) * y + shrink * m[:, None]
    return centre + np.sqrt(shrink * s_sq) * rng.standard_normal((draws, y.size))


def hierarchical_posteriors(
    means: Sequence[float],
    variances: Sequence[float],
    *,
    scale: float,
    rng: np.random.Generator,
    control_index: int | None = None,
    alpha: float = 0.05,
    draws: int = DEFAULT_DRAWS,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> tuple[ArmPosterior, ...]:
    """Posterior summaries of the arms under partial pooling: each arm's posterior mean and
    equal-tailed 1-alpha interval (clipped to the metric's `bounds`, e.g. (0, 1) for a rate),
    and the draws' `prob_best`, `prob_beat_control`, expected loss and lift."""
    samples = hierarchical_draws(means, variances, scale, rng, draws)
    low, high = np.clip(np.quantile(samples, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0), *bounds)
    centre = np.clip(samples.mean(axis=0), *bounds)
    intervals = [Interval(float(c), float(lo), float(hi)) for c, lo, hi in zip(centre, low, high, strict=True)]
    return summaries_from_draws(samples, intervals, control_index, alpha)
