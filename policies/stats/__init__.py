"""Statistical tests, intervals and verdicts on per-arm sufficient statistics.

Frequentist tests (two-proportion z, Welch) with effects and their intervals, multiple-
comparison corrections, always-valid sequential tests (mSPRT) and their planned n
(`sequential_planning`), the sample-ratio-mismatch
check, Bayesian summaries (probability to beat control, to be best, expected loss), sample-
size planning, guardrail non-inferiority tests and the ship decision with them (`guardrails`),
and `analysis`, which combines them into one verdict per experiment under the rules in
`verdicts`.
"""
