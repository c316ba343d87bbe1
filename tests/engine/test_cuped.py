"""CUPED through the public API, the CLI and HTTP: the covariate read from the decide context,
kept in the store's sums, and the report's adjusted comparison checked against the unit rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import astuple
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from fastapi.testclient import TestClient
from numpy.testing import assert_allclose
from scipy import stats as sps
from sqlalchemy import select
from typer.testing import CliRunner

from engine.api import Engine
from engine.cli import app
from engine.config import EngineConfig
from engine.db import write
from engine.server import ApiKeys, create_app
from engine.store.ledger import rebuild
from engine.tables import UNITS
from tests.samples import write_yaml

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

CUPED_YAML = """\
schema: 1
key: spendy
name: Bundle revenue with CUPED
owner: growth@example.com
status: running
kind: ab_test
metrics:
  - {name: revenue, type: revenue, role: primary}
  - {name: purchase, type: binary, role: secondary}
  - {name: margin, type: revenue, role: secondary, net: true}
arms:
  - {key: single, campaign: single, partner: education, channel: email, weight: 0.5, cost: 0.5}
  - {key: bundle, campaign: bundle, partner: education, channel: email, weight: 0.5, cost: 0.5}
analysis: {control: single, covariate: spend_90d}
"""


@pytest.fixture
def spendy(db_url: str, tmp_path: Path) -> Iterator[Engine]:
    write_yaml(tmp_path / "experiments", "spendy.yaml", CUPED_YAML)
    with Engine.open(db_url, seed=0, config=EngineConfig()) as e:
        e.apply([tmp_path / "experiments"])
        yield e


def _populate(engine: Engine, units: int = 400, seed: int = 4) -> pd.DataFrame:
    """Units with a pre-period spend x; revenue and purchase correlated with it. The unit rows
    as the analysis should see them (x = 0 for units whose context lacks it)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(units):
        x = float(rng.gamma(2.0, 20.0))
        context = {} if i % 25 == 0 else {"spend_90d": x if i % 2 else f"{x:.6f}"}  # CLI-style strings too
        decision = engine.decide("spendy", f"u{i}", context)
        repeats = 1 + i % 3
        for _ in range(repeats - 1):
            engine.decide("spendy", f"u{i}", context)
        y = max(0.0, 0.08 * x + rng.normal(0, 4) + (1.0 if decision.arm == "bundle" else 0.0))
        bought = y > 5
        if bought:
            engine.record({"event_id": f"r{i}", "experiment": "spendy", "unit": f"u{i}", "metric": "revenue",
                           "value": round(y, 2)})
            engine.record({"event_id": f"m{i}", "experiment": "spendy", "unit": f"u{i}", "metric": "margin",
                           "value": round(y, 2)})
            engine.record({"event_id": f"p{i}", "experiment": "spendy", "unit": f"u{i}", "metric": "purchase"})
        rows.append({"arm": decision.arm, "x": float(context["spend_90d"]) if context else 0.0,
                     "revenue": round(y, 2) if bought else 0.0, "purchase": float(bought),
                     "margin": (round(y, 2) if bought else 0.0) - 0.5 * repeats})
    return pd.DataFrame(rows)


def _section(report: dict, name: str) -> dict:
    return next(m for m in report["metrics"] if m["name"] == name)


def test_the_report_adjusts_each_metric_as_ols_on_the_unit_rows(spendy: Engine) -> None:
    frame = _populate(spendy)
    report = spendy.report("spendy").to_dict()
    for metric in ("revenue", "purchase", "margin"):
        _check_metric(report, frame, metric)
    assert report["cuped"] == _section(report, "revenue")["cuped"]  # the primary's, at the top as well


def _check_metric(report: dict, frame: pd.DataFrame, metric: str) -> None:
    section = _section(report, metric)
    # Reference: statsmodels OLS `y ~ C(arm) + I(x - x.mean())` on the unit rows (control: single).
    fit = smf.ols(f"{metric} ~ C(arm, Treatment('single')) + I(x - x.mean())", data=frame).fit()
    theta = fit.params["I(x - x.mean())"]
    cuped = section["cuped"]
    assert cuped["covariate"] == "spend_90d"
    assert_allclose(cuped["theta"], theta, rtol=1e-6)
    assert cuped["units_with_covariate"] == int((np.arange(len(frame)) % 25 != 0).sum())
    rates = {a["arm"]: a["rate"] for a in section["arms"]}  # the adjusted means
    assert_allclose(rates["bundle"] - rates["single"], fit.params["C(arm, Treatment('single'))[T.bundle]"], atol=1e-6)
    assert_allclose(rates["single"], fit.params["Intercept"], atol=1e-6)
    # The test runs on the adjusted values: Welch's t-test on y - theta (x - xbar) per unit.
    adjusted = frame[metric] - theta * (frame["x"] - frame["x"].mean())
    reference = sps.ttest_ind(adjusted[frame.arm == "bundle"], adjusted[frame.arm == "single"], equal_var=False)
    bundle = next(a for a in section["arms"] if a["arm"] == "bundle")
    assert_allclose(bundle["p_value"], reference.pvalue, rtol=1e-6)
    within = sum(((g[metric] - g[metric].mean()) ** 2).sum() for _, g in frame.groupby("arm"))
    residual = sum(((g[metric] - g[metric].mean() - theta * (g.x - g.x.mean())) ** 2).sum()
                   for _, g in frame.groupby("arm"))
    assert_allclose(cuped["variance_reduction"], 1 - residual / within, rtol=1e-6)
    if metric == "purchase":  # rows keep the observed counts beside the adjusted rate
        assert bundle["conversions"] == int(frame.purchase[frame.arm == "bundle"].sum())


def test_the_covariate_sums_equal_a_recount(spendy: Engine) -> None:
    _populate(spendy, units=120)
    # An imported exposure earlier than a unit's first decision recounts it: its covariate is
    # then the one of the new first exposure (an import carries no context: none).
    spendy.ingest([{"event_id": "early", "type": "exposure", "experiment": "spendy", "unit": "u1", "arm": "single",
                    "ts": (datetime.now(UTC) - timedelta(days=1)).isoformat()}])
    _, before = spendy.tally("spendy")
    spec = spendy.experiment("spendy").spec
    with write(spendy.store.sa) as conn:
        covariate = conn.execute(select(UNITS.c.covariate).where(UNITS.c.unit == "u1")).scalar_one()
        rebuild(conn, spec, spec.traffic.phase)
    _, after = spendy.tally("spendy")
    assert covariate is None
    for a, b in zip(after.units, before.units, strict=True):
        assert_allclose(astuple(a), astuple(b), rtol=1e-12)
    for name in ("revenue", "purchase", "margin"):
        for a, b in zip(after.metric(name), before.metric(name), strict=True):
            assert_allclose(astuple(a), astuple(b), rtol=1e-12)


def test_a_covariate_that_is_not_a_finite_number_is_refused_and_nothing_is_logged(spendy: Engine) -> None:
    for bad in ("lots", float("nan"), float("inf"), True, [1.0], "1e999"):
        with pytest.raises(ValueError, match=r"context\.spend_90d: the covariate must be"):
            spendy.decide("spendy", "u1", {"spend_90d": bad})
    with pytest.raises(ValueError, match="context.spend_90d"):
        spendy.decide_many("spendy", ["a", "b"], [{"spend_90d": 3}, {"spend_90d": "x"}])
    spendy.flush()
    assert spendy.store.counts()["decisions"] == 0


def test_cli_and_http_refuse_a_bad_covariate(spendy: Engine, db_url: str) -> None:
    spendy.close()
    result = CliRunner().invoke(app, ["decide", "spendy", "--unit", "u1", "--context", "spend_90d=plenty",
                                      "--db", db_url])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "context.spend_90d: the covariate must be a number" in result.output
    with Engine.open(db_url) as engine:
        client = TestClient(create_app(engine, ApiKeys(None, None), auth=False))
        answer = client.post("/v1/experiments/spendy/decisions", json={"unit": "u1", "context": {"spend_90d": "x"}})
        assert answer.status_code == 422 and "context.spend_90d" in json.dumps(answer.json())
        assert client.post("/v1/experiments/spendy/decisions",
                           json={"unit": "u1", "context": {"spend_90d": 12.5}}).status_code == 200


def test_without_a_covariate_the_report_has_none(db_url: str, tmp_path: Path) -> None:
    write_yaml(tmp_path / "x", "plain.yaml", CUPED_YAML.replace(", covariate: spend_90d", ""))
    with Engine.open(db_url) as engine:
        engine.apply([tmp_path / "x"])
        engine.decide("spendy", "u1", {"spend_90d": "not a number and not read"})
        report = engine.report("spendy").to_dict()
    assert report["cuped"] is None and all(m["cuped"] is None for m in report["metrics"])
