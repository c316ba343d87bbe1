"""Experiment files and helpers shared by the tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

AB_YAML = """\
schema: 1
key: landing
name: Landing page test
owner: growth@example.com
status: running
kind: ab_test
metric: {name: purchase, type: binary}
traffic: {coverage: 1.0}
arms:
  - {key: control, campaign: grid, partner: art-collection, channel: in_app, weight: 0.5}
  - {key: curated, campaign: curated, partner: art-collection, channel: in_app, weight: 0.5}
analysis: {control: control}
"""

REVENUE_YAML = """\
schema: 1
key: bundle
name: Bundle revenue test
owner: growth@example.com
status: running
kind: ab_test
metric: {name: revenue, type: revenue}
arms:
  - {key: single, campaign: single, partner: education, channel: email}
  - {key: bundle, campaign: bundle, partner: education, channel: email}
"""

BANDIT_YAML = """\
schema: 1
key: channels
name: Channel bandit
owner: growth@example.com
status: running
kind: bandit
policy: {name: thompson, update: {every_outcomes: 50, every_seconds: 60}}
metric: {name: purchase, type: binary}
eligibility: {channels_from: opted_in}
arms:
  - {key: by-email, campaign: c, partner: music, channel: email}
  - {key: by-push, campaign: c, partner: music, channel: push}
  - {key: by-sms, campaign: c, partner: music, channel: sms}
"""


def write_yaml(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path
