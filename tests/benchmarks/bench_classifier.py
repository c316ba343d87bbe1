"""Campaign classifier benchmark: cross-validated macro-F1 on the shipped catalogue against
word-level and segmenter baselines, and the conversions of new campaigns whose only signal is
their predicted tags, under content targeting and under the plain bandit.

    python tests/benchmarks/bench_classifier.py [--quick] [--out FILE.json]

Prints a table and writes JSON (default `bench-results/bench_classifier.json`); peers are
measured in the same run. `--quick` is a smoke run of a few seconds; the full run takes a
minute or two.

(a) Classifier: macro-F1 of label-powerset stratified 5-fold cross-validation on
`configs/catalogue.yaml`, averaged over fold assignments (seeds), of character n-grams 1-3
(ours) against: whole-word TF-IDF (scikit-learn's default tokens, which keep a Chinese
sentence as one "word"), jieba's word segmentation (if installed: the `bench` extra), and
character n-grams 2-4 (the other range considered). Every model is the same TF-IDF +
logistic one-vs-rest; only the tokens differ. The Chinese and English rows are also scored
apart, from the same out-of-fold predictions.

(b) Launch (policies/simulation/launch.py): 5 topics with equal shares; 7 old campaigns (one per
topic, programming + art-training, music + education) that declare their tags; 8 new campaigns
drawn from the catalogue each seed, with the tags the classifier predicts from their
descriptions after training on the other rows (their true topics, the catalogue's labels, set
the conversion rates). A user's rate on a campaign of their topic is twice the base 0.03;
each user converted earlier on 3 old campaigns (taste lift 5). Over the new campaigns' first
2,000 decisions: Thompson sampling (1% floor, refreshed every 100 decisions) blended with
content scores (strength 0.7, temperature 0.05) against Thompson sampling alone, on common
random numbers. Also: the same with the true topics as tags (the ceiling a perfect
classifier would reach), and the homogeneous control (every user the average rates), where
targeting must not lose.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run as a script: make `engine` and `policies` importable

from engine.catalogue import Catalogue, read_catalogue  # noqa: E402
from policies.bandits.thompson import ThompsonSampling  # noqa: E402
from policies.simulation.launch import (  # noqa: E402
    TopicMarket,
    content_scores,
    draw_launch_users,
    simulate_launch,
)
from policies.targeting.classifier import (  # noqa: E402
    Classifier,
    TfidfLinearClassifier,
    out_of_fold,
    predict_topics,
    summarise,
)
from tests.benchmarks.harness import Row, print_table, run_measurements, write_report  # noqa: E402

CATALOGUE = REPO / "configs" / "catalogue.yaml"
TOPICS = ("art-training", "art-collection", "music", "education", "programming")
OLD = tuple(frozenset({t}) for t in TOPICS) + (frozenset({"programming", "art-training"}),
                                                frozenset({"music", "education"}))
NEW_CAMPAIGNS = 8
DECISIONS = 2_000
OURS = TfidfLinearClassifier()


@dataclass(frozen=True)
class Config:
    quick: bool
    cv_seeds: int
    launch_seeds: int


def jieba_classifier() -> Classifier | None:
    """The same model on jieba's words (precise mode), or None when jieba is not installed."""
    try:
        import jieba
    except ImportError:
        return None
    jieba.setLogLevel(logging.WARNING)

    def jieba_words(text: str) -> list[str]:
        return [w for w in jieba.lcut(text.lower()) if w.strip()]

    return TfidfLinearClassifier(analyzer=jieba_words, ngram_range=(1, 1))


def is_chinese(text: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in text)


def macro_f1(classifier: Classifier, catalogue: Catalogue, seeds: int) -> dict[str, float]:
    """Mean over `seeds` fold assignments of the macro-F1 of all rows, the Chinese and the English ones."""
    chinese = np.array([is_chinese(t) for t in catalogue.texts])
    scores: dict[str, list[float]] = {"all": [], "zh": [], "en": []}
    for seed in range(seeds):
        result = out_of_fold(classifier, catalogue.texts, catalogue.labels, 5, np.random.default_rng(seed))
        for part, rows in (("all", None), ("zh", chinese), ("en", ~chinese)):
            scores[part].append(summarise(result, rows).macro_f1)
    return {part: float(np.mean(values)) for part, values in scores.items()}


def measure_classifier(config: Config) -> list[Row]:
    catalogue = read_catalogue(CATALOGUE)
    with warnings.catch_warnings():  # scikit-learn notes that a callable analyzer ignores ngram_range
        warnings.simplefilter("ignore", UserWarning)
        ours = macro_f1(OURS, catalogue, config.cv_seeds)
        # (peer, its classifier, target on ours / peer): ours must beat the baselines and the other range.
        peers: list[tuple[str, Classifier | None, str, Callable[[float], bool]]] = [
            ("word-level TF-IDF", TfidfLinearClassifier(analyzer="word", ngram_range=(1, 1)), "ratio > 1",
             lambda r: r > 1),
            ("jieba words", jieba_classifier(), "ratio > 1 (< 1: jieba wins)", lambda r: r > 1),
            ("char_wb 2-4", TfidfLinearClassifier(ngram_range=(2, 4)), "ratio >= 1 (choice of range)",
             lambda r: r >= 1),
        ]
        measured = [(name, macro_f1(c, catalogue, config.cv_seeds), target, check)
                    for name, c, target, check in peers if c is not None]
    note = (f"{len(catalogue.rows)} rows, 5 topics, label-powerset stratified 5-fold, pooled F1, mean of "
            f"{config.cv_seeds} fold assignments")
    rows = []
    for name, peer, target, check in measured:
        rows.append(Row(f"macro-F1 vs {name}, all rows", ours["all"], "macro-F1", peer["all"], name, target,
                        check(ours["all"] / peer["all"]), note))
        rows += [Row(f"macro-F1 vs {name}, {label} rows", ours[part], "macro-F1", peer[part], name)
                 for part, label in (("zh", "Chinese"), ("en", "English"))]
    start = time.perf_counter()
    model = OURS.fit(catalogue.texts, catalogue.labels)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    predict_topics(model, catalogue.texts)
    per_text = (time.perf_counter() - start) / len(catalogue.rows) * 1e6
    rows.append(Row("fit on the whole catalogue", fit_seconds, "s", note=f"{len(catalogue.rows)} rows"))
    rows.append(Row("predict tags, per description", per_text, "us", note="batch of the catalogue's texts"))
    return rows


def launch_seed(catalogue: Catalogue, seed: int, heterogeneous: bool) -> dict[str, float]:
    """Conversions (and expected conversions) over the first DECISIONS decisions of 8 new
    campaigns drawn from the catalogue, for the plain bandit, predicted tags and true tags."""
    rng = np.random.default_rng(seed)
    held = rng.choice(len(catalogue.rows), NEW_CAMPAIGNS, replace=False)
    train = np.setdiff1d(np.arange(len(catalogue.rows)), held)
    model = OURS.fit([catalogue.texts[i] for i in train], [catalogue.labels[i] for i in train])
    predicted = predict_topics(model, [catalogue.texts[i] for i in held])
    truth = tuple(frozenset(catalogue.labels[i]) for i in held)
    market = TopicMarket(TOPICS, (0.2,) * 5, OLD, truth, base_rate=0.03, topic_lift=2.0, history_lift=5.0,
                         history_size=3, heterogeneous=heterogeneous)
    users = draw_launch_users(market, DECISIONS, np.random.default_rng(10_000 + seed))
    old_tokens = [[*sorted(c), f"campaign=old-{j}"] for j, c in enumerate(OLD)]
    tags = {"plain": None, "predicted": [p.topics for p in predicted], "true": [sorted(c) for c in truth]}
    out: dict[str, float] = {}
    for name, new in tags.items():
        scores = None if new is None else content_scores(
            users.history, old_tokens, [[*t, f"campaign=new-{j}"] for j, t in enumerate(new)],
            np.random.default_rng(seed))
        run = simulate_launch(ThompsonSampling(min_weight=0.01), users, scores, np.random.default_rng(20_000 + seed))
        out[name] = run.conversions
        out[f"{name}_expected"] = float(users.new_rates[np.arange(users.size), run.arms].sum())
    out["tag_accuracy"] = float(np.mean([set(p.topics) == set(t) for p, t in zip(predicted, truth, strict=True)]))
    return out


def measure_launch(config: Config) -> list[Row]:
    catalogue = read_catalogue(CATALOGUE)
    rows = []
    for heterogeneous in (True, False):
        runs = [launch_seed(catalogue, seed, heterogeneous) for seed in range(config.launch_seeds)]
        total = {k: float(sum(r[k] for r in runs)) for k in runs[0]}
        per_seed = [r["predicted"] / r["plain"] for r in runs]
        note = (f"{DECISIONS:,} decisions x {config.launch_seeds} seeds; per-seed ratio mean {np.mean(per_seed):.3f} "
                f"(s.e. {np.std(per_seed, ddof=1) / np.sqrt(len(per_seed)):.3f}); expected conversions "
                f"{total['predicted_expected']:,.0f} vs {total['plain_expected']:,.0f} "
                f"(ratio {total['predicted_expected'] / total['plain_expected']:.3f}); predicted tag sets exactly "
                f"right {np.mean([r['tag_accuracy'] for r in runs]):.0%}")
        if heterogeneous:
            ratio = total["predicted"] / total["plain"]
            rows.append(Row("new campaigns, predicted tags: conversions", total["predicted"], "conversions",
                            total["plain"], "plain Thompson", "ratio >= 1.1", ratio >= 1.1, note))
            rows.append(Row("new campaigns, true topics as tags: conversions", total["true"], "conversions",
                            total["plain"], "plain Thompson", note="the ceiling of a perfect classifier"))
        else:
            rows.append(Row("new campaigns, homogeneous control: conversions", total["predicted"], "conversions",
                            total["plain"], "plain Thompson", "ratio >= 0.95",
                            total["predicted"] / total["plain"] >= 0.95, note))
    return rows


MEASUREMENTS: Sequence[Callable[[Config], list[Row]]] = [measure_classifier, measure_launch]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds: a smoke run of a few seconds")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "bench_classifier.json")
    args = parser.parse_args(argv)
    config = Config(True, 1, 4) if args.quick else Config(False, 5, 40)
    rows, elapsed = run_measurements(MEASUREMENTS, config)
    print_table(rows)
    print(f"\n{'quick' if config.quick else 'full'} run in {elapsed:.0f} s")
    command = "python tests/benchmarks/bench_classifier.py" + (" --quick" if config.quick else "")
    packages = ("numpy", "scikit-learn") + (("jieba",) if jieba_classifier() is not None else ())
    write_report(args.out, "classifier", command, rows, packages, config=asdict(config), elapsed_s=round(elapsed, 1))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
