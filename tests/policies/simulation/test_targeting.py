"""Segmented populations and the targeted-vs-context-free simulation."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from policies.bandits.thompson import ThompsonSampling
from policies.simulation.population import PopulationModel, SegmentProfile, draw_population, one_hot
from policies.simulation.targeting import TargetingSetup, simulate_targeting
from policies.targeting.recommender import RecommenderConfig

PRODUCTS = ("art", "art", "music", "music")
CHANNELS = ("email", "push", "email", "push")
MODEL = PopulationModel(
    PRODUCTS, CHANNELS, (0.03, 0.03, 0.03, 0.03),
    (SegmentProfile("painters", 0.5, (0, 0), "art", "push"),
     SegmentProfile("musicians", 0.5, (1, 1), "music", "email")),
    attribute_levels=(2, 2), product_lift=3.0, channel_lift=1.5, noise=0.1,
)
TOKENS = [[p, f"channel={c}"] for p, c in zip(PRODUCTS, CHANNELS, strict=True)]


def test_generator_rates_and_noise() -> None:
    rates = MODEL.segment_rates()
    # painters: art x3, push x1.5 -> art-push 0.03*3*1.5, art-email 0.09, music-push 0.045, music-email 0.03
    assert_allclose(rates[0], [0.09, 0.135, 0.03, 0.045])
    assert_allclose(MODEL.homogeneous().rates, np.repeat([MODEL.shares @ rates], 2, axis=0))
    pop = draw_population(MODEL, 50_000, np.random.default_rng(0))
    own = np.array([[0, 0], [1, 1]])[pop.segments]
    # an attribute differs from the segment's own value when replaced (0.1) by the other value (1/2)
    assert abs((pop.attributes != own).mean() - 0.05) < 0.005
    assert one_hot(pop.attributes[:3], (2, 2)).sum(axis=1).tolist() == [2.0, 2.0, 2.0]


def test_bad_models_are_refused() -> None:
    with pytest.raises(ValueError, match="shares"):
        PopulationModel(PRODUCTS, CHANNELS, (0.1,) * 4, (SegmentProfile("a", 0.5, (0,), "art", "push"),), (2,))


@pytest.mark.slow
def test_targeting_pays_on_a_segmented_population_and_not_on_a_homogeneous_one() -> None:
    setup = TargetingSetup(RecommenderConfig("item_cf"), strength=0.8, temperature=0.05, segments=4)
    ts = ThompsonSampling(min_weight=0.01)
    ratios = {}
    for name, model in (("segmented", MODEL), ("homogeneous", MODEL.homogeneous())):
        pop = draw_population(model, 30_000, np.random.default_rng(5))
        plain = simulate_targeting(ts, pop, (2, 2), TOKENS, np.random.default_rng(6), setup=None)
        targeted = simulate_targeting(ts, pop, (2, 2), TOKENS, np.random.default_rng(6), setup=setup)
        assert np.all((targeted.propensities > 0) & (targeted.propensities <= 1))
        assert targeted.tilted[2_000:].mean() > 0.9 and not plain.tilted.any()
        ratios[name] = targeted.conversions / plain.conversions
    # the painters' best arm converts 0.135, the context-free optimum about 0.09 on average
    assert ratios["segmented"] > 1.2
    assert ratios["homogeneous"] > 0.93
