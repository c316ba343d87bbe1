"""CUPED: the comparison of arms adjusted by a pre-exposure covariate, from per-arm sums.

Deng, Xu, Kohavi & Walker (2013), "Improving the Sensitivity of Online Controlled Experiments
by Utilizing Pre-Experiment Data" (WSDM): each unit's value y is replaced by
y - theta (x - mean(x)), where x is a covariate measured before exposure; since x does not
depend on the arm, the difference of adjusted means is unbiased and its variance shrinks by
the share of y's variance that x explains (rho^2 for one covariate).

theta here is the pooled within-arm slope, theta = sum_a S_xy,a / sum_a S_xx,a (S: centred
sums of products within arm a). With it, the difference of two adjusted means equals the arm
coefficient of the ANCOVA `y ~ arm + (x - mean(x))` by ordinary least squares (statsmodels
OLS), which the tests check; Deng et al. use the slope over both arms pooled, which agrees
with it up to O(1/n) when x is independent of the arm.

An arm's adjusted mean is  ybar_a - theta (xbar_a - xbar)  (xbar over all units), and its
variance is s2_a / n_a with the residual variance
    s2_a = (S_yy,a - 2 theta S_xy,a + theta^2 S_xx,a) / (n_a - 1),
the sample variance of y - theta x within the arm; theta is treated as known, as in Deng et
al. (section 3.2: its estimation error is O(1/n)). The adjusted arms are returned as
`MeanStats` with that mean and variance, so every test and interval downstream (Welch's t,
the lift, sequential mode) runs on the adjusted estimates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from policies.sufficient import ArmStats, BinaryStats, MeanStats


@dataclass(frozen=True, slots=True)
class CovariateSums:
    """One arm's covariate sums over its units: sum x, sum x^2 and sum x*y (y: the metric's
    unit value). A unit without a covariate value counts with x = 0."""

    total: float
    total_sq: float
    cross: float

    def __post_init__(self) -> None:
        for name in ("total", "total_sq", "cross"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        if self.total_sq < 0:
            raise ValueError(f"total_sq must be >= 0, got {self.total_sq!r}")


@dataclass(frozen=True, slots=True)
class CupedResult:
    """The adjusted arms, the slope used, and 1 - Var_adj / Var_unadj of the pooled within-arm
    variance (None when no adjustment was possible: an arm with n < 2, or x constant within arms)."""

    theta: float
    variance_reduction: float | None
    adjusted: tuple[MeanStats, ...]


def _as_mean(stats: ArmStats) -> MeanStats:
    return stats.as_mean() if isinstance(stats, BinaryStats) else stats


def cuped_adjust(stats: Sequence[ArmStats], covariates: Sequence[CovariateSums]) -> CupedResult:
    """The arms of `stats` adjusted by the covariate sums of the same units (formulas in the
    module doc). Binary arms are read as means of 0/1 values."""
    if len(stats) != len(covariates) or len(stats) < 2:
        raise ValueError("need one covariate sums entry per arm, and at least two arms")
    ys = [_as_mean(s) for s in stats]
    if any(y.n < 2 for y in ys):
        return CupedResult(0.0, None, tuple(ys))
    ybar = [y.total / y.n for y in ys]
    xbar = [c.total / y.n for y, c in zip(ys, covariates, strict=True)]
    s_xx = [max(c.total_sq - y.n * m * m, 0.0) for y, c, m in zip(ys, covariates, xbar, strict=True)]
    s_xy = [c.cross - y.n * mx * my for y, c, mx, my in zip(ys, covariates, xbar, ybar, strict=True)]
    s_yy = [max(y.total_sq - y.n * m * m, 0.0) for y, m in zip(ys, ybar, strict=True)]
    if math.fsum(s_xx) <= 0.0:
        return CupedResult(0.0, None, tuple(ys))
    theta = math.fsum(s_xy) / math.fsum(s_xx)
    grand = math.fsum(c.total for c in covariates) / sum(y.n for y in ys)
    residual = [max(yy - 2.0 * theta * xy + theta * theta * xx, 0.0) for yy, xy, xx in zip(s_yy, s_xy, s_xx,
                                                                                             strict=True)]
    adjusted = []
    for y, my, mx, ss in zip(ys, ybar, xbar, residual, strict=True):
        mean = my - theta * (mx - grand)
        adjusted.append(MeanStats(y.n, y.n * mean, ss + y.n * mean * mean))
    total_ss = math.fsum(s_yy)
    reduction = 1.0 - math.fsum(residual) / total_ss if total_ss > 0 else None
    return CupedResult(theta, reduction, tuple(adjusted))
