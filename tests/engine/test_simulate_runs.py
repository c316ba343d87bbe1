"""`crosspromo simulate --runs`: the JSON contract, known rates of today's rules, calls, determinism."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from engine.cli import app
from engine.loader import parse_spec
from engine.simulation import default_exposures, design_of, look_propensity_sums, look_reader
from policies.simulation.bandits import Truth
from policies.simulation.runs import DecisionLog, Look, Reader, RunPlan, simulate_runs
from policies.stats.bandit_inference import propensity_sums
from policies.stats.verdicts import Verdict
from policies.sufficient import BinaryStats
from tests.samples import AB_YAML, BANDIT_YAML, REVENUE_YAML, write_yaml

runner = CliRunner()
# Thompson without a floor starves the losing arms below min_sample_per_arm (100), so that a
# bandit never calls; a floor of 5% keeps each arm at 300 of 6,000 exposures or more.
FLOORED = BANDIT_YAML.replace("{name: thompson,", "{name: thompson, min_weight: 0.05,")
CONTRACT = {"runs", "ever_winner_share", "wrong_winner_share", "median_exposures_to_call", "regret"}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, text in (("landing.yaml", AB_YAML), ("channels.yaml", FLOORED), ("bundle.yaml", REVENUE_YAML)):
        write_yaml(tmp_path / "experiments", name, text)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def simulate_json(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["simulate", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_gives_the_contract_keys(workdir: Path) -> None:
    data = simulate_json("channels", "--runs", "5", "--look-every", "500", "--max-exposures", "2000",
                         "--truth", "by-email=0.05", "--truth", "by-push=0.05", "--truth", "by-sms=0.08")
    assert set(data) >= CONTRACT
    assert data["runs"] == 5 and data["exposures"] == 2000 and data["looks"] == 4
    for key in ("ever_winner_share", "wrong_winner_share"):
        assert 0 <= data[key] <= 1  # type: ignore[operator]
    assert data["best_arms"] == ["by-sms"] and set(data["winners"]) == {"by-email", "by-push", "by-sms"}  # type: ignore[arg-type]
    assert data["regret"] > 0  # type: ignore[operator]


def test_a_seed_gives_the_same_figures(workdir: Path) -> None:
    args = ("channels", "--runs", "6", "--look-every", "400", "--max-exposures", "1200",
            "--truth", "by-email=0.05", "--truth", "by-push=0.06", "--truth", "by-sms=0.08")
    first = simulate_json(*args, "--seed", "4")
    assert simulate_json(*args, "--seed", "4") == first
    assert simulate_json(*args, "--seed", "5")["regret"] != first["regret"]


def test_aa_fixed_horizon_read_once_calls_false_winners_at_about_alpha(workdir: Path) -> None:
    # An A/A test read once at its planned sample: the z-test's false-positive rate, alpha = 0.05.
    # 200 runs: Monte Carlo s.e. sqrt(0.05 * 0.95 / 200) = 0.015; the band is about +-2.6 s.e.
    planned = default_exposures(parse_spec(AB_YAML), Truth((0.05, 0.05)))
    data = simulate_json("landing", "--runs", "200", "--max-exposures", str(planned), "--look-every", str(planned),
                         "--truth", "control=0.05", "--truth", "curated=0.05", "--seed", "11")
    assert data["looks"] == 1 and data["exposures"] == planned
    assert 0.01 <= data["ever_winner_share"] <= 0.09  # type: ignore[operator]
    assert data["wrong_winner_share"] == 0  # both arms are truly best
    # No share of no_difference is asserted: read once, the plan is frozen from the control rate
    # observed at that look, so runs that see a low rate find the plan past their sample.
    assert data["no_difference_share"] < 1 - data["ever_winner_share"]  # type: ignore[operator]


@pytest.mark.parametrize(("key", "truth", "best"), [
    ("landing", ["control=0.05", "curated=0.15"], "curated"),
    ("channels", ["by-email=0.02", "by-push=0.02", "by-sms=0.15"], "by-sms"),
])
def test_a_big_gap_is_called_by_every_run(workdir: Path, key: str, truth: list[str], best: str) -> None:
    # A fixed-horizon A/B test calls only once its plan is reached; the plan follows the observed
    # control rate (about 2.5% s.d. here), so its runs go 20% past the plan at the true rate.
    exposures = int(1.2 * default_exposures(parse_spec(AB_YAML), Truth((0.05, 0.05)))) if key == "landing" else 6000
    data = simulate_json(key, "--runs", "20", "--max-exposures", str(exposures), "--look-every", str(exposures // 3),
                         *(arg for pair in truth for arg in ("--truth", pair)))
    assert data["ever_winner_share"] == 1.0 and data["wrong_winner_share"] == 0.0
    assert data["winners"][best] == 1.0  # type: ignore[index]
    assert data["median_exposures_to_call"] is not None and data["median_exposures_to_call"] <= exposures  # type: ignore[operator]


def test_revenue_ab_test_and_text_table(workdir: Path) -> None:
    result = runner.invoke(app, ["simulate", "bundle", "--runs", "10", "--max-exposures", "3000", "--truth",
                                 "single=0.05:40", "--truth", "bundle=0.05:60"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("bundle (ab_test, fixed): 10 runs of 3,000 exposures, read every 150 (20 looks)")
    assert any(line.strip().startswith("ever called a winner") for line in lines)
    assert "truly best: bundle" in lines[0]


def test_an_ab_test_without_runs_is_refused_with_the_hint(workdir: Path) -> None:
    result = runner.invoke(app, ["simulate", "landing", "--truth", "control=0.05", "--truth", "curated=0.05"])
    assert result.exit_code == 1 and "--runs" in result.output


# A floored Thompson bandit without an eligibility rule: its propensities may be checked for SRM.
OPEN_FLOORED = FLOORED.replace("eligibility: {channels_from: opted_in}\n", "")


def test_a_bandit_look_feeds_the_report_analysis_its_propensity_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.report

    spec = parse_spec(OPEN_FLOORED)
    calls: list[tuple[Look, dict[str, Any]]] = []
    seen: list[Look] = []

    def recording_reader(rng: np.random.Generator) -> Reader:
        read = look_reader(spec)(rng)

        def reader(look: Look) -> Verdict:
            seen.append(look)
            return read(look)
        return reader

    def analyze_metric(*args: Any, **kwargs: Any) -> Any:
        calls.append((seen[-1], kwargs))
        return real(*args, **kwargs)

    real = engine.report.analyze_metric
    monkeypatch.setattr(engine.report, "analyze_metric", analyze_metric)
    runs, exposures = 20, 2000
    simulate_runs(spec.arm_keys, design_of(spec), Truth((0.05, 0.05, 0.05)), RunPlan(runs, exposures, exposures),
                  recording_reader, np.random.default_rng(3))
    assert len(calls) == runs
    weights = []
    for look, kwargs in calls:
        log = look.log
        assert log is not None and log.propensities is not None
        expected = propensity_sums(log.arms, log.propensities, log.outcomes, 3)
        assert kwargs["weighted"] == expected and kwargs["propensity_srm"] is True
        assert [s.units for s in expected] == [s.n for s in look.stats]
        weights.append([s.weight / exposures for s in expected])
        analysis = real(spec, look.stats, engine.report.analysis_config(spec), np.random.default_rng(0),
                        weighted=expected, propensity_srm=True)
        assert analysis.test.method == "ipw_partial_pooling" and analysis.srm is not None
    # The logged propensities are those the arms were drawn with: each arm's sum of 1/p estimates
    # the exposures (Horvitz-Thompson, E[W_a] = N). Per run s.d. of W_a / N is at most
    # sqrt((1 / 0.05 - 1) / 2,000) = 0.1, so over 20 runs the mean is within 0.1 of 1 (4.5 s.e.).
    np.testing.assert_allclose(np.mean(weights, axis=0), 1.0, atol=0.1)


def test_an_ab_look_and_a_log_without_propensities_give_no_propensity_sums() -> None:
    ab = parse_spec(AB_YAML)
    look = Look(10, (BinaryStats(5, 1), BinaryStats(5, 2)))
    assert look_propensity_sums(ab, look) is None
    bandit = parse_spec(OPEN_FLOORED)
    log = DecisionLog(np.array([0, 1, 2]), None, np.zeros(3))
    assert look_propensity_sums(bandit, Look(3, (BinaryStats(1, 0),) * 3, log)) is None


def test_a_run_freezes_its_plan_at_the_first_look_the_report_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before every arm has min_sample_per_arm (100) units nothing is final and no plan exists;
    the first look past it freezes the control's rate, and later looks plan from it whatever
    the control shows then (as `crosspromo report` does with the stored plan)."""
    import engine.report

    spec = parse_spec(AB_YAML)
    baselines: list[float | None] = []
    real = engine.report.analyze_metric

    def analyze_metric(spec_: Any, stats: Any, config: Any, *args: Any, **kwargs: Any) -> Any:
        baselines.append(config.baseline)
        return real(spec_, stats, config, *args, **kwargs)

    monkeypatch.setattr(engine.report, "analyze_metric", analyze_metric)
    read = look_reader(spec)(np.random.default_rng(0))
    control = spec.arm_keys.index(spec.control)

    def look(n: int, control_rate: float, variant_rate: float) -> Look:
        stats = [BinaryStats(n, round(n * variant_rate))] * 2
        stats[control] = BinaryStats(n, round(n * control_rate))
        return Look(2 * n, tuple(stats))

    early = read(look(60, 0.05, 0.50))  # a huge gap, but no plan yet
    assert early.status == "keep_running" and "no plan yet" in early.reason
    read(look(200, 0.05, 0.05))
    read(look(5000, 0.10, 0.10))
    assert baselines == [None, 0.05, 0.05]
