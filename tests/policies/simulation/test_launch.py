"""The launch simulator: users whose preferences follow topics, and new campaigns known only by
their tags, under content targeting or the plain bandit."""

from __future__ import annotations

import numpy as np
import pytest

from policies.bandits.thompson import ThompsonSampling
from policies.simulation.launch import TopicMarket, content_scores, draw_launch_users, simulate_launch

TOPICS = ("art", "music", "code")
OLD = (frozenset({"art"}), frozenset({"music"}), frozenset({"code"}), frozenset({"art", "code"}))
NEW = (frozenset({"art"}), frozenset({"music"}), frozenset({"code"}), frozenset({"music", "code"}))
MARKET = TopicMarket(TOPICS, (0.4, 0.3, 0.3), OLD, NEW, base_rate=0.05, topic_lift=2.0, history_lift=5.0,
                     history_size=2)
OLD_TOKENS = [[*sorted(c), f"campaign=old{i}"] for i, c in enumerate(OLD)]


def new_tokens(tags: tuple[frozenset[str], ...]) -> list[list[str]]:
    return [[*sorted(c), f"campaign=new{i}"] for i, c in enumerate(tags)]


def test_rates_follow_topics_and_the_homogeneous_control_averages_them() -> None:
    rates = MARKET.rates(NEW)
    assert rates[1].tolist() == [0.05, 0.1, 0.05, 0.1]  # music lovers
    flat = MARKET.__class__(**{**MARKET.__dict__, "heterogeneous": False}).rates(NEW)
    np.testing.assert_allclose(flat[0], np.array([0.4, 0.3, 0.3]) @ rates, rtol=1e-12)
    assert (flat == flat[0]).all()


def test_a_user_s_history_mostly_holds_campaigns_of_their_topic() -> None:
    users = draw_launch_users(MARKET, 20_000, np.random.default_rng(0))
    assert users.history.shape == (20_000, 2) and (users.history[:, 0] != users.history[:, 1]).all()
    matches = np.mean([TOPICS[z] in OLD[h] for z, h in zip(users.topics, users.history[:, 0], strict=True)])
    # The first draw is weighted by taste (history lift 5, base 0.05): an art lover draws art or
    # art+code with (0.25 + 0.25) / 0.6 = 5/6, a music lover music with 0.25 / 0.4 = 5/8, a coder
    # 5/6; with the shares, 0.4 * 5/6 + 0.3 * 5/8 + 0.3 * 5/6 = 0.7708.
    assert matches == pytest.approx(0.7708, abs=0.015)
    assert np.bincount(users.topics, minlength=3) / 20_000 == pytest.approx([0.4, 0.3, 0.3], abs=0.015)


def test_campaigns_without_tags_leave_the_bandit_alone_draw_for_draw() -> None:
    """Tokens that name only the campaigns give every user equal scores for the new ones: the
    targeted run makes exactly the plain run's draws (common random numbers)."""
    users = draw_launch_users(MARKET, 3000, np.random.default_rng(1))
    scores = content_scores(users.history, OLD_TOKENS, [[f"campaign=new{i}"] for i in range(4)],
                            np.random.default_rng(0))
    ts = ThompsonSampling(min_weight=0.01)
    plain = simulate_launch(ts, users, None, np.random.default_rng(2))
    blind = simulate_launch(ts, users, scores, np.random.default_rng(2))
    assert not blind.tilted.any()
    np.testing.assert_array_equal(plain.arms, blind.arms)


def test_right_tags_convert_better_than_the_plain_bandit_and_wrong_tags_do_not() -> None:
    """Expected conversions (true rate of the campaign served, summed) over 4 seeds of 2,000
    users: tags that say what the new campaigns are about beat the plain bandit by more than
    10% (1.16 with these seeds), tags shifted to the wrong topics fall below it (0.87)."""
    ts = ThompsonSampling(min_weight=0.01)
    wrong = (NEW[1], NEW[2], NEW[0], frozenset({"art"}))
    totals = {"plain": 0.0, "right": 0.0, "wrong": 0.0}
    for seed in range(4):
        users = draw_launch_users(MARKET, 2000, np.random.default_rng(seed))
        for name, tags in (("plain", None), ("right", NEW), ("wrong", wrong)):
            scores = None if tags is None else content_scores(users.history, OLD_TOKENS, new_tokens(tags),
                                                              np.random.default_rng(0))
            run = simulate_launch(ts, users, scores, np.random.default_rng(100 + seed))
            totals[name] += users.new_rates[np.arange(users.size), run.arms].sum()
    assert totals["right"] > 1.1 * totals["plain"]
    assert totals["wrong"] < totals["plain"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"shares": (0.5, 0.5, 0.5)}, "add up to 1"),
    ({"new": ()}, "old campaigns"),
    ({"new": (frozenset({"cooking"}),)}, "unknown topics"),
    ({"base_rate": 0.0}, "base_rate"),
    ({"history_size": 5}, "history_size"),
])
def test_a_bad_market_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TopicMarket(**{**MARKET.__dict__, **kwargs})  # type: ignore[arg-type]
