"""Pure math on sufficient statistics: policies, statistical tests, targeting.

Nothing here touches files, SQL, HTTP or the clock; callers pass arrays or frozen
dataclasses and a `numpy.random.Generator`, and get frozen dataclasses back.
"""

from policies.stats import ArmStats, BinaryStats, MeanStats

__all__ = ["ArmStats", "BinaryStats", "MeanStats"]
