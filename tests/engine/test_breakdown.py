"""`report --by ATTR` through the CLI, the Python API and HTTP: exploratory, per level, and never
the verdict's business."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.testing import assert_allclose
from statsmodels.stats.multitest import multipletests
from typer.testing import CliRunner

from engine.api import Engine
from engine.cli import EXIT_INVALID, app
from engine.report import build_report
from engine.server import ApiKeys, create_app
from tests.samples import AB_YAML, write_yaml

SEGMENTS = ("new", "returning", "vip")


def _populate(db_url: str, tmp_path: Path) -> dict[tuple[str, str], list[int]]:
    """1,500 units over three segments (vip converts far better on `curated`), a rare segment,
    and units with no segment; returns [units, conversions] per (segment, arm)."""
    write_yaml(tmp_path / "experiments", "landing.yaml", AB_YAML)
    rng = np.random.default_rng(7)
    counts: dict[tuple[str, str], list[int]] = {}
    with Engine.open(db_url, seed=0) as engine:
        engine.apply([tmp_path / "experiments"])
        for i in range(1500):
            segment = "rare" if i % 100 == 0 else None if i % 37 == 0 else SEGMENTS[i % 3]
            context = {} if segment is None else {"segment": segment, "opted_in": ["in_app"]}
            decision = engine.decide("landing", f"u{i}", context)
            engine.decide("landing", f"u{i}", {"segment": "changed later"})  # not the first exposure: not read
            rate = 0.30 if (segment == "vip" and decision.arm == "curated") else 0.10
            converted = bool(rng.random() < rate)
            if converted:
                engine.record({"event_id": f"c{i}", "experiment": "landing", "unit": f"u{i}"})
            cell = counts.setdefault((segment or "(missing)", decision.arm), [0, 0])
            cell[0] += 1
            cell[1] += converted
    return counts


def _cli(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def test_report_by_a_context_attribute(db_url: str, tmp_path: Path) -> None:
    counts = _populate(db_url, tmp_path)
    result = _cli("report", "landing", "--by", "segment", "--format", "json", "--db", db_url)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    b = data["breakdown"]
    assert (b["by"], b["exploratory"], b["metric"], b["correction"]) == ("segment", True, "purchase",
                                                                         "benjamini_hochberg")
    levels = {lv["level"]: lv for lv in b["levels"]}
    assert set(levels) == {*SEGMENTS, "rare", "(missing)"}
    for (segment, arm), (units, conversions) in counts.items():
        row = next(a for a in levels[segment]["arms"] if a["arm"] == arm)
        assert row["units"] == units and row["rate"] == pytest.approx(conversions / units)
    assert "too few units" in levels["rare"]["note"] and levels["rare"]["arms"][1]["p_value"] is None
    raw = [lv["arms"][1]["p_value"] for lv in b["levels"] if lv["arms"][1]["p_value"] is not None]
    assert_allclose([lv["arms"][1]["p_value_adjusted"] for lv in b["levels"] if lv["arms"][1]["p_value"] is not None],
                    multipletests(raw, method="fdr_bh")[1], rtol=1e-12)
    assert levels["vip"]["arms"][1]["p_value_adjusted"] < 0.05  # the planted effect shows


def test_the_breakdown_never_changes_the_verdict(db_url: str, tmp_path: Path) -> None:
    _populate(db_url, tmp_path)
    with Engine.open(db_url) as engine:
        plain = build_report(engine, "landing").to_dict()
        for by in ("segment", "channel"):
            broken = engine.report("landing", by=by).to_dict()
            assert broken.pop("breakdown")["exploratory"] is True
            assert broken == plain


def test_report_by_channel_and_the_rendered_forms(db_url: str, tmp_path: Path) -> None:
    _populate(db_url, tmp_path)
    data = json.loads(_cli("report", "landing", "--by", "channel", "--format", "json", "--db", db_url).stdout)
    assert [lv["level"] for lv in data["breakdown"]["levels"]] == ["in_app"]
    table = _cli("report", "landing", "--by", "segment", "--db", db_url)
    markdown = _cli("report", "landing", "--by", "segment", "--format", "markdown", "--db", db_url)
    for output in (table.stdout, markdown.stdout):
        assert "EXPLORATORY breakdown of purchase by segment" in output and "vip" in output
    assert "| level | arm | units |" in markdown.stdout


def test_an_unknown_attribute_is_a_clear_error(db_url: str, tmp_path: Path) -> None:
    _populate(db_url, tmp_path)
    result = _cli("report", "landing", "--by", "segmnet", "--db", db_url)
    assert result.exit_code == EXIT_INVALID and "Traceback" not in result.output
    assert "error: --by 'segmnet': no unit of 'landing' has that attribute" in result.output
    assert "hint: use channel or one of: opted_in, segment" in result.output


def test_http_report_by(db_url: str, tmp_path: Path) -> None:
    _populate(db_url, tmp_path)
    with Engine.open(db_url) as engine:
        client = TestClient(create_app(engine, ApiKeys(None, None), auth=False))
        ok = client.get("/v1/experiments/landing/report", params={"by": "segment"})
        assert ok.status_code == 200 and ok.json()["breakdown"]["by"] == "segment"
        assert "breakdown" not in client.get("/v1/experiments/landing/report").json()
        bad = client.get("/v1/experiments/landing/report", params={"by": "nope"})
        assert bad.status_code == 422 and "nope" in json.dumps(bad.json())
