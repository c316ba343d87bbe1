"""Targeting: which campaign is most likely to convert this unit, and what that is worth.

`segments` clusters units by context (k-means), `shrinkage` pools sparse segment rates
(empirical Bayes), `recommender` scores arms per unit (item-based CF, content TF-IDF,
truncated SVD, social, hybrid), `social` propagates conversions over the social graph
(LightGCN-style) and tests whether friends' conversions predict, `blend` tilts the bandit's
weights towards the unit's ranking, `ope` estimates a policy's value from logged decisions
(IPS, SNIPS, doubly robust), and `classifier` tags campaigns by topic from their descriptions
(the content recommender's tags for arms that declare none).
"""
