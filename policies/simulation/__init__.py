"""Simulators that let policies and tests be judged against a known truth.

`population` draws users with latent segments and per-arm conversion rates, `graph` draws
social graphs over them with homophily, `bandits` runs allocation policies against fixed or
drifting arm rates (regret, best-arm share), and `targeting` runs targeted against
context-free bandits on a drawn population (with its social graph, for the social signal).
"""
