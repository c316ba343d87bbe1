"""Allocation policies and the choice of an arm.

Every policy maps per-arm sufficient statistics and a `numpy.random.Generator` to selection
weights (`registry.Policy`): Thompson sampling (Beta-Bernoulli and Normal-Inverse-Gamma, with
top-two, discount and window variants), epsilon-greedy and the fixed split of an A/B test.
`choice` turns weights and eligibility masks into drawn arms and their propensities;
`arm_stats` normalises, pools and discounts the statistics the policies read.
"""

# Importing the policy modules registers them with `policies.bandits.registry`.
from policies.bandits import epsilon_greedy, fixed, thompson  # noqa: F401
