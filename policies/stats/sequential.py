"""Always-valid inference with the mixture sequential probability ratio test (mSPRT).

Johari, Koomen, Pekelis & Walsh (2017), "Peeking at A/B Tests: Why it matters, and what to do
about it" (KDD), and Johari, Pekelis & Walsh, "Always Valid Inference: Bringing Sequential
Analysis to A/B Testing" (arXiv:1512.04922). For an effect estimate theta_hat
that is approximately N(theta, V) — a difference of means, or a log ratio (guardrails), with
V estimated from the sufficient statistics (the asymptotic form used by Optimizely and Eppo) —
the likelihood ratio of theta against theta_0, mixed over a distribution H of theta, is

    Lambda = integral exp(((theta - theta_0)(theta_hat - theta_0) - (theta - theta_0)^2 / 2) / V) dH(theta).

Lambda is a nonnegative martingale with mean 1 under theta_0, so by Ville's inequality
P(sup_n Lambda_n >= 1/alpha) <= alpha whatever H is, and however often one looks:

- the always-valid p-value is p_n = min(1, 1 / Lambda_n) (the paper takes the running minimum
  over looks; stopping at the first look with p_n <= alpha controls the type I error either way);
- the confidence sequence is {theta_0 : Lambda_n(theta_0) < 1/alpha} = theta_hat +- r, with r
  the root of Lambda(r) = 1/alpha (Lambda grows with |theta_hat - theta_0| for a symmetric H).

Mixing distribution (only the tuning of the guarantee, never the guarantee itself). H is
symmetric around theta_0 with its mass at the minimum detectable effect:
H = 1/2 N(-tau, (SPREAD tau)^2) + 1/2 N(+tau, (SPREAD tau)^2), tau the declared MDE on the
effect's own scale at the planning baseline (`policies.stats.analysis`), never estimated from the
data. Each component gives a closed form (the normal-normal marginal):

    Lambda_mu = sqrt(V / (V + s^2)) exp(x^2 / (2 V) - (x - mu)^2 / (2 (V + s^2))),  x = theta_hat - theta_0.

Why not the usual N(0, tau^2) mixture, nor the asymptotic confidence sequence of Waudby-Smith
et al. (2023, "Time-uniform central limit theory and asymptotic confidence sequences") tuned with
GrowthBook's N* (its boundary is the N(0, tau^2) one with tau chosen to be tightest at N*)? With
30 equally spaced looks up to the planned horizon, the N(0, tau^2) mixture at any tau (tau^2 from
4 to 1000 times the variance at the horizon, Brownian simulation) reaches a false-positive rate
of at most 0.017 against alpha 0.05 and needs at least 1.72x the fixed-horizon sample for 80%
power: it spends its alpha on effects far from the MDE and on looks beyond the horizon. Putting
the mass at +-MDE (Wald's SPRT for the MDE, symmetrised and smoothed) uses about half the budget
within 30 looks (FPR ~0.027) and needs 1.51x the fixed sample (`tests/benchmarks/
bench_inference.py` measures both). SPREAD > 0 keeps H's density positive everywhere, so every
non-zero effect is detected eventually (power one, Johari et al.); a two-point H (SPREAD 0: 1.43x)
would never detect effects below half the MDE, and SPREAD 1/2 already needs 1.62x.

Lift intervals invert the same mixture on the ratio (`always_valid_ratio_interval`), so they
agree with the test of the difference. The guarantee is asymptotic because V is a plug-in
estimate; the simulations in tests/policies and tests/benchmarks check it at realistic sample sizes.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import brentq

from policies.stats.effects import Effect, Interval, fieller_interval
from policies.stats.frequentist import TestResult

SPREAD = 0.25
"""Standard deviation of each mixture component, as a share of tau (module doc)."""

_BISECTIONS = 64  # halvings of the radius bracket: past double precision


def _check_tau_sq(tau_sq: ArrayLike) -> NDArray[np.float64]:
    tau = np.asarray(tau_sq, dtype=float)
    if not np.all(np.isfinite(tau) & (tau > 0)):
        raise ValueError(f"tau_sq must be finite and > 0, got {tau_sq!r}")
    return tau


def msprt_log_likelihood_ratio(estimate: ArrayLike, variance: ArrayLike, tau_sq: ArrayLike) -> NDArray[np.float64]:
    """Vectorised log Lambda against theta = 0 for the mixture of the module doc, tau = sqrt(tau_sq).

    Zero variance gives -inf when the estimate is 0 and +inf otherwise (the limits).
    """
    tau_sq = _check_tau_sq(tau_sq)
    est, v = np.asarray(estimate, float), np.asarray(variance, float)
    if np.any(v < 0):
        raise ValueError("variance must be >= 0")
    mu, s_sq = np.sqrt(tau_sq), SPREAD**2 * tau_sq
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        common = 0.5 * np.log(v / (v + s_sq)) + est**2 / (2.0 * v)
        spread = 2.0 * (v + s_sq)
        mixed = np.logaddexp(-((est - mu) ** 2) / spread, -((est + mu) ** 2) / spread) - math.log(2.0)
        log_lr = common + mixed
    return np.where(v > 0, log_lr, np.where(est == 0, -np.inf, np.inf))


def msprt_p_values(estimate: ArrayLike, variance: ArrayLike, tau_sq: ArrayLike) -> NDArray[np.float64]:
    """Vectorised always-valid p-values min(1, 1/Lambda) for theta = 0."""
    return np.exp(-np.maximum(msprt_log_likelihood_ratio(estimate, variance, tau_sq), 0.0))


def msprt_test(effect: Effect, tau_sq: float) -> TestResult:
    """Always-valid test of a zero effect; the statistic is the mixture likelihood ratio."""
    log_lr = float(msprt_log_likelihood_ratio(effect.estimate, effect.variance, tau_sq))
    statistic = math.exp(log_lr) if log_lr < 700 else math.inf
    return TestResult("msprt", statistic, float(math.exp(-max(log_lr, 0.0))))


def always_valid_radius(variance: ArrayLike, tau_sq: float, alpha: float) -> NDArray[np.float64]:
    """Vectorised half-width r of the 1-alpha confidence sequence: log Lambda(r) = log(1/alpha).

    log Lambda(r) increases in r >= 0 and is below log(1/alpha) at r = 0, so the root is unique;
    it is bracketed by doubling from the N(0, tau^2) mixture's closed-form radius, then found by
    Brent's method for one variance (the report's case) or bisected to double precision for an
    array (planning). Zero variance gives 0.
    """
    _check_tau_sq(tau_sq)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    v = np.asarray(variance, float)
    target = math.log(1.0 / alpha)
    safe = np.where(v > 0, v, 1.0)
    high = np.sqrt(safe * (2.0 * target + np.log1p(tau_sq / safe)) * (1.0 + safe / tau_sq))
    while np.any(short := msprt_log_likelihood_ratio(high, safe, tau_sq) < target):
        high = np.where(short, 2.0 * high, high)
    if v.ndim == 0:
        if v <= 0:
            return np.float64(0.0)
        excess = lambda r: float(msprt_log_likelihood_ratio(r, v, tau_sq)) - target  # noqa: E731
        return np.float64(brentq(excess, 0.0, float(high), xtol=1e-15 * float(high), rtol=1e-15))
    low = np.zeros_like(high)
    for _ in range(_BISECTIONS):
        mid = 0.5 * (low + high)
        below = msprt_log_likelihood_ratio(mid, safe, tau_sq) < target
        low, high = np.where(below, mid, low), np.where(below, high, mid)
    return np.where(v > 0, 0.5 * (low + high), 0.0)


def always_valid_interval(effect: Effect, tau_sq: float, alpha: float) -> Interval:
    """1-alpha confidence sequence for the effect from the same mixture (module doc)."""
    radius = float(always_valid_radius(effect.variance, tau_sq, alpha))
    return Interval(effect.estimate, effect.estimate - radius, effect.estimate + radius)


def mixture_boundary(variance: float, tau_sq: float, alpha: float) -> float:
    """|estimate| / sqrt(variance) at which Lambda reaches 1/alpha: the radius of
    `always_valid_interval` in standard errors; inf at zero variance (the mixture cannot reject)."""
    if variance <= 0:
        _check_tau_sq(tau_sq)
        return math.inf
    return always_valid_interval(Effect(0.0, variance), tau_sq, alpha).high / math.sqrt(variance)


def always_valid_ratio_interval(
    treatment: Effect, control: Effect, tau_sq: float, alpha: float, *, nonnegative: bool
) -> Interval:
    """1-alpha confidence sequence for the relative lift mu_t / mu_c - 1 from the mixture that
    decides: the mSPRT of the difference with variance V = v_t + v_c and tau_sq on the
    difference scale, inverted on the ratio.

    `treatment` and `control` are the arms' means with the variances of those means. The test of
    rho is the mixture on mu_t - rho mu_c (estimate m_t - rho m_c, variance
    V(rho) = v_t + rho^2 v_c) with the mixing variance scaled alike, tau_sq V(rho) / V: the same
    prior on the standardised effect at every rho. Lambda then depends on the data only through
    T(rho)^2 = (m_t - rho m_c)^2 / V(rho), so {rho : Lambda_rho < 1/alpha} is Fieller's set
    (`policies.stats.effects.fieller_interval`) with q = `mixture_boundary(V, tau_sq, alpha)`;
    at rho = 1 it is exactly `msprt_test` of the difference, so the set excludes rho = 1 exactly
    when that test rejects. (A mixing variance fixed at tau_sq for every rho would not do: as
    |rho| grows V(rho) swamps it, Lambda_rho tends to 1 and every rho far enough from 0 is
    accepted, so the set would never be bounded.) Like the difference's confidence sequence,
    the guarantee is asymptotic (plug-in variances). Bounds may be infinite.
    """
    q = mixture_boundary(treatment.variance + control.variance, tau_sq, alpha)
    return fieller_interval(treatment, control, q, nonnegative=nonnegative)
