"""Targeting benchmark: conversions of targeted vs context-free Thompson sampling on simulated
populations, recommender ranking quality against a popularity baseline, decide latency with and
without targeting, and refit time.

    python tests/benchmarks/bench_targeting.py [--quick] [--out FILE.json]

Prints a table and writes JSON (default `bench-results/bench_targeting.json`). Peers are
measured in the same run: context-free Thompson sampling on the same users (common random
numbers), the popularity ranking on the same held-out split, `decide` without targeting on
the same engine and data. `--quick` runs smaller populations (a smoke test, well under a
minute); the full run takes a few minutes.

Populations (policies/population.py): 12 arms = 4 partners x 3 channels with base rates
0.020-0.042; 4 latent segments, each preferring one partner (x2) and one channel (x1.5);
observed context = 2 attributes, each replaced by a random value with probability 0.15. The
homogeneous control gives every segment the population-average rates. Both policies refresh
every 2,000 users; Thompson sampling has a 1% floor per arm.

Ranking quality: users of the same segments, with sharper preferences (partner x5, channel
x2), convert on 4 arms each, drawn without replacement with probabilities proportional to
their segment's rates; one conversion per
user is held out and the models, fitted on the rest (history only), rank the arms the user
has not converted on. precision@3 = hits in the top 3 / 3; NDCG@3 = (1 / log2(rank + 1)) of
the held-out arm when ranked in the top 3 (one relevant item, so the ideal DCG is 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script: make `engine` and `policies` importable

from engine.api import Engine  # noqa: E402
from engine.loader import load_spec  # noqa: E402
from engine.store import DECISIONS  # noqa: E402
from engine.targeting import HistoryRow, fit_targeting  # noqa: E402
from policies.bandits.thompson import ThompsonSampling  # noqa: E402
from policies.simulation.population import PopulationModel, SegmentProfile, draw_population  # noqa: E402
from policies.simulation.targeting import TargetingSetup, simulate_targeting  # noqa: E402
from policies.targeting.recommender import METHODS, Interactions, RecommenderConfig, fit_recommender  # noqa: E402
from tests.benchmarks.harness import Row, run_and_report  # noqa: E402

PARTNERS = ("art-training", "art-collection", "music", "education")
CHANNELS = ("email", "push", "in_app")
ARM_PARTNERS = tuple(p for p in PARTNERS for _ in CHANNELS)
ARM_CHANNELS = tuple(c for _ in PARTNERS for c in CHANNELS)
MODEL = PopulationModel(
    ARM_PARTNERS, ARM_CHANNELS, tuple(0.020 + 0.002 * i for i in range(12)),
    (SegmentProfile("painters", 0.30, (0, 0), "art-training", "push"),
     SegmentProfile("collectors", 0.25, (1, 1), "art-collection", "email"),
     SegmentProfile("musicians", 0.25, (2, 0), "music", "in_app"),
     SegmentProfile("learners", 0.20, (3, 2), "education", "email")),
    attribute_levels=(4, 3), product_lift=2.0, channel_lift=1.5, noise=0.15,
)
TOKENS = [[f"partner={p}", f"channel={c}", p.split("-")[0]] for p, c in zip(ARM_PARTNERS, ARM_CHANNELS, strict=True)]
SETUP = TargetingSetup(RecommenderConfig("hybrid", cf_weight=0.7, content_weight=0.3), strength=0.7,
                       temperature=0.05, segments=8)
ART = REPO / "experiments" / "art-training-crosspromo.yaml"
PER_USER = 4  # conversions per user in the ranking test; one is held out
# Purchases of catalogue items follow taste more than campaign responses do: sharper preferences.
RANKING_MODEL = replace(MODEL, product_lift=5.0, channel_lift=2.0)


@dataclass(frozen=True)
class Config:
    quick: bool
    seeds: int
    users: int
    ranking_users: int
    latency_calls: int
    refit_rows: int


def measure_conversions(config: Config) -> list[Row]:
    ts = ThompsonSampling(min_weight=0.01)
    rows = []
    for name, model, low in (("heterogeneous", MODEL, 1.20), ("homogeneous", MODEL.homogeneous(), 0.98)):
        targeted, plain = [], []
        for seed in range(config.seeds):
            pop = draw_population(model, config.users, np.random.default_rng(seed))
            levels = model.attribute_levels
            plain.append(simulate_targeting(ts, pop, levels, TOKENS, np.random.default_rng(1000 + seed),
                                            setup=None).conversions)
            targeted.append(simulate_targeting(ts, pop, levels, TOKENS, np.random.default_rng(1000 + seed),
                                               setup=SETUP).conversions)
        ratios = np.array(targeted) / np.array(plain)
        rows.append(Row(
            f"conversions, {name} population", float(np.mean(targeted)), "conversions", float(np.mean(plain)),
            "context-free TS", f"ratio >= {low:g}", bool(ratios.mean() >= low),
            f"{config.users:,} users x {config.seeds} seeds; per-seed ratios "
            f"{', '.join(f'{r:.3f}' for r in ratios)}; hybrid 0.7/0.3, strength 0.7, temperature 0.05, k=8"))
    return rows


def ranking_split(config: Config, rng: np.random.Generator) -> tuple[Interactions, np.ndarray]:
    """PER_USER conversions per user from their segment's rates; one held out per user."""
    pop = draw_population(RANKING_MODEL, config.ranking_users, rng)
    rates = pop.user_rates()
    keys = np.log(rng.random(rates.shape)) / rates  # Efraimidis-Spirakis weighted sampling without replacement
    chosen = np.argsort(-keys, axis=1)[:, :PER_USER]
    held = chosen[:, 0]
    train = chosen[:, 1:]
    n = config.ranking_users
    units = np.repeat(np.arange(n), train.shape[1])
    data = Interactions(units, train.ravel(), np.ones(units.size, dtype=bool), np.full(units.size, -1), n, 12, 0)
    return data, held


def top3_quality(scores: np.ndarray, seen: np.ndarray, held: np.ndarray) -> tuple[float, float]:
    ranked = np.argsort(-np.where(seen, -np.inf, scores), axis=1, kind="stable")[:, :3]
    hit = ranked == held[:, None]
    precision = hit.sum(axis=1).mean() / 3
    ndcg = (hit / np.log2(np.arange(2, 5))[None, :]).sum(axis=1).mean()
    return float(precision), float(ndcg)


def measure_ranking(config: Config) -> list[Row]:
    data, held = ranking_split(config, np.random.default_rng(7))
    seen = np.zeros((data.n_units, 12), dtype=bool)
    seen[data.units, data.arms] = True
    popularity = np.bincount(data.arms, minlength=12).astype(float)
    base = top3_quality(np.repeat(popularity[None, :], data.n_units, axis=0), seen, held)
    rows = []
    for method in METHODS:
        model = fit_recommender(data, TOKENS, RecommenderConfig(method, factors=4), np.random.default_rng(0))
        scores, _ = model.scores_many(np.arange(data.n_units), np.full(data.n_units, -1))
        ours = top3_quality(scores, seen, held)
        for k, metric in enumerate(("precision@3", "NDCG@3")):
            rows.append(Row(f"{metric}, {method}", ours[k], metric, base[k], "popularity", "ratio > 1",
                            ours[k] > base[k],
                            f"{data.n_units:,} users, {PER_USER - 1} training conversions each, 1 held out"))
    return rows


def measure_latency(config: Config) -> list[Row]:
    """decide p50 on the shipped art-training experiment, trained on the same history, with and
    without its targeting block; background upkeep on, as in the HTTP service."""
    spec = load_spec(ART)
    plain_spec = spec.model_copy(update={"targeting": None, "key": "art-plain"})
    rng = np.random.default_rng(3)
    contexts = [{"interest": ("painting", "drawing", "design")[rng.integers(3)],
                 "device": ("mobile", "desktop", "tablet")[rng.integers(3)],
                 "opted_in": ["email", "push", "in_app"]} for _ in range(config.latency_calls)]
    with tempfile.TemporaryDirectory() as tmp, Engine.open(f"sqlite:///{tmp}/bench.db", seed=0) as engine:
        engine.apply([spec, plain_spec])
        for key in (spec.key, plain_spec.key):
            for i, ctx in enumerate(contexts[:3000]):
                d = engine.decide(key, f"warm-{i}", ctx)
                if rng.random() < 0.1:
                    engine.record({"event_id": f"{key}-{i}", "experiment": key, "decision_id": d.decision_id})
        engine.start_background()
        time.sleep(6)  # the first refit and weight refresh happen in the background thread
        # Interleaved, so background upkeep (flushes, refits) falls on both alike.
        samples: dict[str, list[int]] = {spec.key: [], plain_spec.key: []}
        for i, ctx in enumerate(contexts):
            for key in (spec.key, plain_spec.key):
                start = time.perf_counter_ns()
                engine.decide(key, f"bench-{i}", ctx)
                samples[key].append(time.perf_counter_ns() - start)
        timings = {key: float(np.median(values)) / 1e3 for key, values in samples.items()}
        reasons = {engine.decide(spec.key, "probe", contexts[0]).reason.value}
    return [Row("decide p50 with targeting", timings[spec.key], "us", timings[plain_spec.key],
                "decide without targeting", "ratio <= 2", timings[spec.key] <= 2 * timings[plain_spec.key],
                f"{config.latency_calls:,} calls each, interleaved, SQLite, background upkeep (refit every 5 s); "
                f"probe reason {sorted(reasons)}")]


def measure_refit(config: Config) -> list[Row]:
    """Refit from `refit_rows` outcome rows: fit only (segments + recommender from rows in memory),
    and the engine's whole refit (one SQL read, JSON contexts, fit) on SQLite."""
    spec = load_spec(ART)
    assert spec.targeting is not None
    rng = np.random.default_rng(5)
    n = config.refit_rows
    units = rng.integers(n // 5, size=n)
    arms = rng.integers(len(spec.arms), size=n)
    converted = rng.random(n) < 0.05
    interests = np.array(["painting", "drawing", "design"])[rng.integers(3, size=n)]
    devices = np.array(["mobile", "desktop", "tablet"])[rng.integers(3, size=n)]
    contexts = [{"interest": a, "device": b} for a, b in zip(interests.tolist(), devices.tolist(), strict=True)]
    history = [HistoryRow(f"u{u}", int(a), bool(c), ctx)
               for u, a, c, ctx in zip(units.tolist(), arms.tolist(), converted.tolist(), contexts, strict=True)]
    start = time.perf_counter()
    fit_targeting(spec, spec.targeting, history, np.random.default_rng(0))
    fit_seconds = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp, Engine.open(f"sqlite:///{tmp}/refit.db", seed=0) as engine:
        engine.apply([spec])
        now = datetime.now(UTC)
        keys = spec.arm_keys
        with engine.store.sa.begin() as conn:
            for lo in range(0, n, 50_000):
                conn.execute(DECISIONS.insert(), [
                    dict(decision_id=f"d{i}", experiment=spec.key, version=1, phase=1, unit=f"u{units[i]}",
                         arm=keys[arms[i]], channel="email", bucket=None, propensity=0.2, reason="BANDIT", ts=now,
                         converted=bool(converted[i]), value=float(converted[i]),
                         context_json=json.dumps(contexts[i]))
                    for i in range(lo, min(lo + 50_000, n))])
        live = engine.snapshot.get(spec.key)
        start = time.perf_counter()
        engine.upkeep.refit_targeting(live)
        engine_seconds = time.perf_counter() - start
    note = f"{n:,} rows, {n // 5:,} units, {len(keys)} arms, 9 context combinations, hybrid, k=6"
    return [Row(f"refit, {n:,} rows: fit from memory", fit_seconds, "s", note=note),
            Row(f"refit, {n:,} rows: engine (SQL read + fit)", engine_seconds, "s", note=note + "; SQLite")]


MEASUREMENTS: list[Callable[[Config], list[Row]]] = [measure_conversions, measure_ranking, measure_latency,
                                                     measure_refit]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small populations: a smoke run under a minute")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "bench_targeting.json")
    args = parser.parse_args(argv)
    config = (Config(True, 2, 20_000, 5_000, 2_000, 100_000) if args.quick
              else Config(False, 5, 100_000, 20_000, 10_000, 1_000_000))
    return run_and_report(MEASUREMENTS, config, name="targeting", script="bench_targeting.py", out=args.out,
                          packages=("numpy", "scipy", "sqlalchemy"))


if __name__ == "__main__":
    raise SystemExit(main())
