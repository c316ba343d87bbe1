"""`crosspromo demo --seed N` prints the same bytes on every run: simulated time drives refits."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app
from tests.samples import REPO

# Cadences far shorter than a run: on the wall clock, refits would land after different users
# on every run (the machine's speed varies); on the demo's simulated clock they cannot.
FAST_CADENCES = {"every_seconds: 30": "every_seconds: 0.03", "refit_every_seconds: 5": "refit_every_seconds: 0.05"}


@pytest.fixture
def demo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(REPO / "configs", tmp_path / "configs", ignore=shutil.ignore_patterns("engine.yaml"))
    (tmp_path / "experiments").mkdir()
    for path in (REPO / "experiments").glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        for old, new in FAST_CADENCES.items():
            text = text.replace(old, new)
        (tmp_path / "experiments" / path.name).write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CROSSPROMO_DATABASE_URL", raising=False)
    return tmp_path


def test_the_demo_prints_the_same_output_for_the_same_seed(demo_dir: Path) -> None:
    runs = [CliRunner().invoke(app, ["demo", "--out", str(demo_dir / f"run-{i}.db"), "--users", "1500",
                                     "--seed", "11"]) for i in range(2)]
    for run in runs:
        assert run.exit_code == 0, run.output
    assert "Winners:" in runs[0].stdout and runs[0].stdout == runs[1].stdout
