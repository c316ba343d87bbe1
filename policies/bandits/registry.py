"""One interface for every allocation policy, and the registry the engine looks them up in.

A policy maps per-arm sufficient statistics (and a `numpy.random.Generator`, for policies
that estimate by sampling) to selection probabilities: one weight per arm, summing to 1.
The engine calls `weights` on a refresh cadence, never per decision; the weights are the
exact propensities of the arms chosen from them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from policies.sufficient import ArmStats


class Policy(Protocol):
    def weights(self, stats: Sequence[ArmStats], rng: np.random.Generator) -> NDArray[np.float64]:
        """Selection probabilities per arm, in the order of `stats`; they sum to 1."""
        ...


PolicyFactory = Callable[..., Policy]
_REGISTRY: dict[str, PolicyFactory] = {}


class UnknownPolicyError(ValueError):
    pass


def register_policy(name: str) -> Callable[[PolicyFactory], PolicyFactory]:
    def decorate(factory: PolicyFactory) -> PolicyFactory:
        if name in _REGISTRY:
            raise ValueError(f"policy {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return decorate


def make_policy(name: str, **params: Any) -> Policy:
    """Build the policy registered under `name` with its parameters (from the YAML `policy:`)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        known = ", ".join(policy_names())
        raise UnknownPolicyError(f"unknown policy {name!r}; known: {known}") from None
    return factory(**params)


def policy_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))
