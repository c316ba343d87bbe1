"""Simulators that let policies and tests be judged against a known truth.

`population` draws users with latent segments and per-arm conversion rates, `graph` draws
social graphs over them with homophily, `bandits` runs allocation policies against fixed or
drifting arm rates (regret, best-arm share), `targeting` runs targeted against context-free
bandits on a drawn population (with its social graph, for the social signal), `units` draws
units that decide several times each (user-level against per-decision analysis), `decisions`
simulates the ship decision of an A/B test with guardrail metrics, `launch` runs new
campaigns known only by their tags under content targeting or the plain bandit, and `runs`
simulates many experiments of a declared design and reads each at its looks with a verdict
function the caller passes (`crosspromo simulate --runs`).
"""
