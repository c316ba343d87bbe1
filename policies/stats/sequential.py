"""Always-valid inference with the mixture sequential probability ratio test (mSPRT).

Johari, Pekelis & Walsh (2017), "Always Valid Inference: Continuous Monitoring of A/B Tests"
(arXiv:1512.04922), with a normal mixing distribution theta ~ N(0, tau^2). For an effect
estimate theta_hat that is approximately N(theta, V) — a difference of means or a log ratio
(guardrails), with V estimated from the sufficient statistics (the asymptotic form used in
practice by Optimizely and Eppo) — the mixture likelihood ratio against theta = theta_0 is

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 (theta_hat - theta_0)^2 / (2 V (V + tau^2))).

With V = 2 sigma^2 / n this is the paper's two-sample formula. By Ville's inequality
P(sup_n Lambda_n >= 1/alpha) <= alpha under the null, so

- the always-valid p-value is p_n = min(1, 1 / Lambda_n) (the paper takes the running minimum
  over looks; callers that keep the history may do so, and stopping at the first look with
  p_n <= alpha controls the type I error either way);
- the confidence sequence is {theta_0 : Lambda_n(theta_0) < 1/alpha}, i.e. theta_hat +- r with
  r^2 = 2 V (V + tau^2) / tau^2 * (log(1/alpha) + log((V + tau^2) / V) / 2).

Choice of tau: the mixture spends its power near effects of size tau (the paper's advice is
to match tau to the effects one expects), so callers pass the minimum detectable effect on the
same scale as the estimate: `policies.stats.analysis` uses the absolute MDE at the planning baseline
for differences; its lift intervals invert that same mixture (`always_valid_ratio_interval`).
V (and the baseline, when none is configured) are plug-in estimates, so the guarantee is
asymptotic; the peeking simulation in tests/policies checks it at realistic sample sizes.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from policies.stats.effects import Effect, Interval, fieller_interval
from policies.stats.frequentist import TestResult


def _check_tau_sq(tau_sq: ArrayLike) -> NDArray[np.float64]:
    tau = np.asarray(tau_sq, dtype=float)
    if not np.all(np.isfinite(tau) & (tau > 0)):
        raise ValueError(f"tau_sq must be finite and > 0, got {tau_sq!r}")
    return tau


def msprt_log_likelihood_ratio(estimate: ArrayLike, variance: ArrayLike, tau_sq: ArrayLike) -> NDArray[np.float64]:
    """Vectorised log Lambda of the normal-mixture SPRT for theta = 0 (formula in module doc).

    Zero variance gives -inf when the estimate is 0 and +inf otherwise (the limits).
    """
    tau_sq = _check_tau_sq(tau_sq)
    est, v = np.asarray(estimate, float), np.asarray(variance, float)
    if np.any(v < 0):
        raise ValueError("variance must be >= 0")
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lr = 0.5 * np.log(v / (v + tau_sq)) + tau_sq * est**2 / (2.0 * v * (v + tau_sq))
    return np.where(v > 0, log_lr, np.where(est == 0, -np.inf, np.inf))


def msprt_p_values(estimate: ArrayLike, variance: ArrayLike, tau_sq: ArrayLike) -> NDArray[np.float64]:
    """Vectorised always-valid p-values min(1, 1/Lambda) for theta = 0."""
    return np.exp(-np.maximum(msprt_log_likelihood_ratio(estimate, variance, tau_sq), 0.0))


def msprt_test(effect: Effect, tau_sq: float) -> TestResult:
    """Always-valid test of a zero effect; the statistic is the mixture likelihood ratio."""
    log_lr = float(msprt_log_likelihood_ratio(effect.estimate, effect.variance, tau_sq))
    statistic = math.exp(log_lr) if log_lr < 700 else math.inf
    return TestResult("msprt", statistic, float(math.exp(-max(log_lr, 0.0))))


def always_valid_interval(effect: Effect, tau_sq: float, alpha: float) -> Interval:
    """1-alpha confidence sequence for the effect from the same mixture (formula in module doc)."""
    _check_tau_sq(tau_sq)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    v = effect.variance
    if v <= 0:
        return Interval(effect.estimate, effect.estimate, effect.estimate)
    radius_sq = 2.0 * v * (v + tau_sq) / tau_sq * (math.log(1.0 / alpha) + 0.5 * math.log((v + tau_sq) / v))
    radius = math.sqrt(radius_sq)
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
