"""Pure math on sufficient statistics: policies, statistical tests, targeting, simulation.

Nothing here touches files, SQL, HTTP or the clock; callers pass arrays or frozen
dataclasses and a `numpy.random.Generator`, and get frozen dataclasses back. One room per
concern: `bandits` (allocation policies and the draw of an arm), `stats` (tests, intervals,
corrections, verdicts), `targeting` (recommenders, the blend, off-policy evaluation) and
`simulation` (populations and simulators). `sufficient` holds the per-arm statistics every
room trades in.
"""

from policies.sufficient import ArmStats, BinaryStats, MeanStats

__all__ = ["ArmStats", "BinaryStats", "MeanStats"]
