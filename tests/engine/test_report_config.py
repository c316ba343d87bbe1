"""How the report configures each metric's analysis: values that may be negative keep the lift
interval below -100% open."""

from __future__ import annotations

from pathlib import Path

from engine.loader import load_spec
from engine.report import analysis_config
from tests.samples import write_yaml

SPEC = """\
schema: 1
key: promo
name: Course promo
owner: growth@example.com
status: running
kind: ab_test
metrics:
  - {name: purchase, type: binary, role: primary, window: 7d}
  - {name: revenue, type: revenue, role: secondary, window: 7d}
  - {name: refunds, type: revenue, role: secondary, window: 7d, allow_negative: true}
  - {name: margin, type: revenue, role: secondary, window: 7d, net: true}
arms:
  - {key: email, campaign: c, partner: music, channel: email, weight: 0.5, cost: 0.01}
  - {key: sms, campaign: c, partner: music, channel: sms, weight: 0.5}
analysis: {control: email}
"""


def test_negative_values_follow_the_metric(tmp_path: Path) -> None:
    spec = load_spec(write_yaml(tmp_path, "promo.yaml", SPEC))
    negative = {m.name: analysis_config(spec, m).negative_values for m in spec.measures}
    assert negative == {"purchase": False, "revenue": False, "refunds": True, "margin": True}
    assert analysis_config(spec).negative_values is False
