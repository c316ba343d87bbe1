"""A payload reads back from the store exactly as declared, so applying a file again is a no-op."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.api import Engine
from engine.loader import SpecError
from tests.samples import AB_YAML, write_yaml

ARM = "  - {key: curated, campaign: curated, partner: art-collection, channel: in_app, weight: 0.5}"
PAYLOAD = ("{n: 9223372036854775807, f: 0.1, big: 1.0e+300, d: '2024-01-01', t: 'yes', "
           "l: [1, null, true, [2.5]], o: {'1': v}, s: \"caf\\u00e9 \\U0001F600\"}")


def test_reapplying_a_payload_reports_it_unchanged(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "exp", "l.yaml", AB_YAML.replace(ARM, ARM[:-1] + ", payload: " + PAYLOAD + "}"))
    with Engine.open(f"sqlite:///{tmp_path / 'store.db'}") as engine:
        assert [i.action for i in engine.apply([path]).items] == ["create"]
        assert [i.action for i in engine.apply([path], dry_run=True).items] == ["unchanged"]
        assert engine.experiment("landing").spec.arms[1].payload == {
            "n": 2**63 - 1, "f": 0.1, "big": 1e300, "d": "2024-01-01", "t": "yes",
            "l": [1, None, True, [2.5]], "o": {"1": "v"}, "s": "caf\u00e9 \U0001F600"}


@pytest.mark.parametrize("value", ["2024-01-01", ".nan", "!!set {a, b}", "!!binary aGVsbG8="],
                         ids=["date", "nan", "set", "binary"])
def test_values_that_would_read_back_changed_never_reach_the_store(tmp_path: Path, value: str) -> None:
    """These once made every `apply` report a change (a date read back as text, NaN != NaN)."""
    path = write_yaml(tmp_path / "exp", "l.yaml", AB_YAML.replace(ARM, ARM[:-1] + f", payload: {{v: {value}}}}}"))
    with Engine.open(f"sqlite:///{tmp_path / 'store.db'}") as engine:
        with pytest.raises(SpecError, match=r"l.yaml:11:\d+: arms\[1\]\.payload\.v: "):
            engine.apply([path], dry_run=True)
        assert engine.experiments() == []
