from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from engine.api import Engine
from engine.dashboard_view import forest_plot
from engine.plots import DPI, _lift, plot_report
from engine.report import build_report
from engine.timeline import Timeline, conversion_timeline

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(engine: Engine, key: str, units: int, every: int, revenue: bool = False) -> None:
    """Expose `units` units and convert every `every`-th one (revenue: a value that varies)."""
    decisions = engine.decide_many(key, [f"{key}-u{i}" for i in range(units)])
    for i, d in enumerate(decisions[::every]):
        event = {"event_id": f"{key}-e{i}", "experiment": key, "decision_id": d.decision_id}
        engine.record({**event, "value": 10.0 + i % 7} if revenue else event)


def _timeline(engine: Engine, key: str, points: int = 200) -> Timeline:
    stored = engine.experiment(key)
    return conversion_timeline(engine.store.sa, key, stored.phase, stored.spec.arm_keys, points)


def _assert_final_totals_match_store(engine: Engine, key: str, timeline: Timeline) -> None:
    _, aggregates = engine.aggregates(key)
    for agg in aggregates:
        arm = timeline.arms[agg.arm]
        assert (arm.exposures[-1], arm.conversions[-1]) == (agg.exposures, agg.conversions)
        assert arm.value[-1] == pytest.approx(agg.total)


def _assert_pngs(paths: list[Path], key: str, out: Path) -> None:
    assert paths == [out / f"{key}-{kind}.png" for kind in ("lift", "cumulative-rate", "posterior")]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = imread(path)
        assert image.shape == (round(4.5 * DPI), 8 * DPI, 4)
        assert image[..., :3].std() > 0.05  # something was drawn on the white page


@pytest.mark.parametrize(("key", "revenue"), [("landing", False), ("bundle", True)])
def test_report_plots_are_pngs_and_timeline_totals_match_the_store(
        engine: Engine, tmp_path: Path, key: str, revenue: bool) -> None:
    _run(engine, key, units=400, every=6, revenue=revenue)
    report = build_report(engine, key).to_dict()
    timeline = _timeline(engine, key)
    _assert_final_totals_match_store(engine, key, timeline)

    out = tmp_path / "plots" / "nested"  # created on demand
    _assert_pngs(plot_report(report, timeline, out), key, out)


def test_timeline_keeps_at_most_points_checkpoints_ending_at_the_totals(engine: Engine) -> None:
    _run(engine, "landing", units=250, every=4)
    sparse = _timeline(engine, "landing", points=40)
    assert sparse.ts.shape == (40,) and sparse.ts.dtype == np.dtype("datetime64[us]")
    assert np.all(np.diff(sparse.ts) >= np.timedelta64(0))
    for arm in sparse.arms.values():
        assert arm.exposures.shape == arm.conversions.shape == arm.value.shape == (40,)
        assert np.all(np.diff(arm.exposures) >= 0) and np.all(np.diff(arm.conversions) >= 0)
    assert sum(int(a.exposures[-1]) for a in sparse.arms.values()) == 250
    _assert_final_totals_match_store(engine, "landing", sparse)

    dense = _timeline(engine, "landing", points=1000)  # fewer exposures than points: one checkpoint each
    assert dense.ts.shape == (250,)
    assert np.sum([a.exposures for a in dense.arms.values()], axis=0).tolist() == list(range(1, 251))
    _assert_final_totals_match_store(engine, "landing", dense)

    with pytest.raises(ValueError, match="points"):
        _timeline(engine, "landing", points=0)


def test_plots_of_experiments_without_outcomes_still_render(engine: Engine, tmp_path: Path) -> None:
    empty = _timeline(engine, "landing")
    assert empty.ts.size == 0 and all(a.exposures.size == 0 for a in empty.arms.values())
    _assert_pngs(plot_report(build_report(engine, "landing").to_dict(), empty, tmp_path), "landing", tmp_path)

    engine.decide_many("bundle", [f"u{i}" for i in range(50)])  # exposures, no revenue yet: zero-width intervals
    paths = plot_report(build_report(engine, "bundle").to_dict(), _timeline(engine, "bundle"), tmp_path)
    _assert_pngs(paths, "bundle", tmp_path)


def test_a_timeline_of_another_experiment_is_refused(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bundle"):
        plot_report(build_report(engine, "landing").to_dict(), _timeline(engine, "bundle"), tmp_path)


def test_lift_chart_draws_an_unbounded_interval(tmp_path: Path) -> None:
    """A null lift bound (Fieller's set unbounded) is drawn as such, not dropped or invented."""
    arm = {"arm": "b", "lift": 0.4, "lift_ci_low": -1.0, "lift_ci_high": None}
    report = {"experiment": "x", "metric": {"name": "revenue", "type": "revenue"}, "control": "a",
              "test": {"alpha": 0.05}, "kind": "ab_test",
              "arms": [{"arm": "a", "lift": None, "lift_ci_low": None, "lift_ci_high": None}, arm]}
    figure = Figure()
    ax = figure.add_subplot()
    _lift(ax, report, Timeline("x", 1, np.array([], dtype="datetime64[us]"), {}))
    assert [t.get_text() for t in ax.texts] == ["unbounded above"]
    forest = forest_plot(report)
    assert forest is not None
    assert forest["data"][0]["error_x"]["array"] == [None]
    assert forest["data"][0]["error_x"]["arrayminus"] == [pytest.approx(1.4)]
