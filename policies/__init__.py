"""Pure math on sufficient statistics: policies, statistical tests, targeting.

Nothing here touches files, SQL, HTTP or the clock; callers pass arrays or frozen
dataclasses and a `numpy.random.Generator`, and get frozen dataclasses back.
"""

# Importing the policy modules registers them with `policies.registry`.
from policies import epsilon_greedy, fixed, thompson  # noqa: F401
from policies.stats import ArmStats, BinaryStats, MeanStats

__all__ = ["ArmStats", "BinaryStats", "MeanStats"]
