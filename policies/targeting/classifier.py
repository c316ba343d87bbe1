"""Topic classifier for campaign descriptions: multi-label, Chinese or English, no word segmenter.

The seam is `Classifier`: `fit(texts, labels)` learns from texts and their topic sets and returns
a `TopicModel`, whose `scores(texts)` gives one probability per topic (texts x topics, in
[0, 1]). `predict_topics` turns scores into tag sets, `cross_validate` measures any classifier
the same way. A transformer fine-tuned elsewhere fits the seam as a `Classifier` whose
`TopicModel` loads its weights from a local path; nothing here downloads anything.

The shipped implementation, `TfidfLinearClassifier`, is character n-gram TF-IDF with one
logistic regression per topic (one-vs-rest):

- features: TF-IDF of character n-grams inside word boundaries (scikit-learn's `char_wb`),
  sublinear term frequency (1 + log tf; Manning, Raghavan & Schütze 2008, §6.4.1). Chinese
  writes no spaces between words and most of its words are one to three characters long, so
  character n-grams see the words without a segmenter; in English they match inflections
  (paint, painting, painter) that whole words would keep apart;
- model: `LogisticRegression` (liblinear, C = 10) per topic on a `MultiLabelBinarizer`
  indicator matrix; its probabilities are the scores (a logistic model is calibrated on its
  training data by construction, unlike a linear SVM's margins). `class_weight="balanced"`
  weighs a topic's few positives as much as its many negatives.

Choices measured on the shipped catalogue (tests/benchmarks/bench_classifier.py): n-grams 1-3
beat 2-4 (single Chinese characters such as 画, 琴, 课 carry a topic on their own), and beat
word tokens and jieba's segmentation.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import MultiLabelBinarizer

FloatArray = NDArray[np.float64]
Analyzer = Literal["char_wb", "char", "word"] | Callable[[str], list[str]]
DEFAULT_THRESHOLD = 0.5
CV_SCHEME = ("label-powerset stratified {folds}-fold (scikit-learn StratifiedKFold on each row's topic set; "
             "a set with fewer than {folds} rows is stratified by its rarest topic); F1 on the pooled "
             "out-of-fold predictions")


class TopicModel(Protocol):
    """A fitted classifier: its topics, and one score in [0, 1] per topic for each text."""

    @property
    def topics(self) -> tuple[str, ...]: ...

    def scores(self, texts: Sequence[str]) -> FloatArray: ...


class Classifier(Protocol):
    """Anything that learns topic scores from texts and their topic sets."""

    @property
    def name(self) -> str:
        """What it is, for reports and for the stored tags (`arm_tags.classifier`)."""
        ...

    def fit(self, texts: Sequence[str], labels: Sequence[Sequence[str]]) -> TopicModel: ...


@dataclass(frozen=True, eq=False)
class FittedTfidfLinear:
    """TF-IDF features and one logistic regression per topic (see the module doc)."""

    vectorizer: TfidfVectorizer
    model: OneVsRestClassifier
    topics: tuple[str, ...]

    def scores(self, texts: Sequence[str]) -> FloatArray:
        if not len(texts):
            return np.zeros((0, len(self.topics)))
        return np.asarray(self.model.predict_proba(self.vectorizer.transform(list(texts))), dtype=float)


@dataclass(frozen=True)
class TfidfLinearClassifier:
    """Character n-gram TF-IDF + one-vs-rest logistic regression; `analyzer` and `ngram_range`
    make the word-level and segmenter baselines of the benchmark out of the same parts."""

    analyzer: Analyzer = "char_wb"
    ngram_range: tuple[int, int] = (1, 3)
    c: float = 10.0

    @property
    def name(self) -> str:
        if callable(self.analyzer):
            return f"{getattr(self.analyzer, '__name__', 'custom')} TF-IDF + logistic one-vs-rest"
        low, high = self.ngram_range
        return f"{self.analyzer} {low}-{high} TF-IDF + logistic one-vs-rest"

    def __post_init__(self) -> None:
        low, high = self.ngram_range
        if not 1 <= low <= high:
            raise ValueError(f"ngram_range must be (low, high) with 1 <= low <= high, got {self.ngram_range}")
        if not (np.isfinite(self.c) and self.c > 0):
            raise ValueError(f"c must be a finite number > 0, got {self.c!r}")

    def fit(self, texts: Sequence[str], labels: Sequence[Sequence[str]]) -> FittedTfidfLinear:
        check_training_data(texts, labels)
        binarizer = MultiLabelBinarizer()
        y = binarizer.fit_transform(labels)
        vectorizer = TfidfVectorizer(analyzer=self.analyzer, ngram_range=self.ngram_range, sublinear_tf=True,
                                     lowercase=True)
        x = vectorizer.fit_transform(list(texts))
        model = OneVsRestClassifier(LogisticRegression(C=self.c, class_weight="balanced", solver="liblinear",
                                                       random_state=0))
        with warnings.catch_warnings():
            # A topic on every row (or none) of a fold is fitted as a constant; that is the point.
            warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
            model.fit(x, y)
        return FittedTfidfLinear(vectorizer, model, tuple(str(t) for t in binarizer.classes_))


def check_training_data(texts: Sequence[str], labels: Sequence[Sequence[str]]) -> None:
    """Caller bugs: one topic set per text, every set non-empty, at least two topics in all."""
    if len(texts) != len(labels):
        raise ValueError(f"got {len(texts)} texts but {len(labels)} topic sets")
    if any(not topics for topics in labels):
        raise ValueError("every text needs at least one topic")
    if len({t for topics in labels for t in topics}) < 2:
        raise ValueError("a classifier needs at least two topics")


@dataclass(frozen=True)
class TopicPrediction:
    """The tags chosen for one text, best first, with their scores."""

    tags: tuple[tuple[str, float], ...]

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self.tags)


def predict_topics(model: TopicModel, texts: Sequence[str],
                   threshold: float = DEFAULT_THRESHOLD) -> list[TopicPrediction]:
    """Every topic scoring at least `threshold`, or the best one when none does: each catalogue
    row has a topic, so a description gets at least one (its score says how sure)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    scores = model.scores(texts)
    return [_chosen(model.topics, row, threshold) for row in scores]


def _chosen(topics: Sequence[str], row: FloatArray, threshold: float) -> TopicPrediction:
    order = np.argsort(-row, kind="stable")
    picked = [i for i in order if row[i] >= threshold] or [int(order[0])]
    return TopicPrediction(tuple((topics[i], float(row[i])) for i in picked))


@dataclass(frozen=True)
class TopicScore:
    """Cross-validated quality of one topic; `support` counts the rows that carry it."""

    topic: str
    support: int
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class CrossValidation:
    per_topic: tuple[TopicScore, ...]
    macro_f1: float
    micro_f1: float
    folds: int
    rows: int
    scheme: str


def fold_keys(labels: Sequence[Sequence[str]], folds: int) -> list[str]:
    """Stratification key per row: its topic set when at least `folds` rows share it, else its
    rarest topic (so rare combinations still spread over the folds by their rarest part)."""
    sets = [tuple(sorted(set(topics))) for topics in labels]
    combos = Counter(sets)
    counts = Counter(t for s in sets for t in s)
    return ["+".join(s) if combos[s] >= folds else "~" + min(s, key=lambda t: (counts[t], t)) for s in sets]


@dataclass(frozen=True, eq=False)
class OutOfFold:
    """Each row's true topics and the topics predicted for it by the model of the fold that
    held it out (rows x topics, boolean)."""

    topics: tuple[str, ...]
    truth: NDArray[np.bool_]
    predicted: NDArray[np.bool_]
    folds: int


def out_of_fold(classifier: Classifier, texts: Sequence[str], labels: Sequence[Sequence[str]], folds: int,
                rng: np.random.Generator, threshold: float = DEFAULT_THRESHOLD) -> OutOfFold:
    """Predict every row with a model fitted on the other folds (`fold_keys` stratification)."""
    check_training_data(texts, labels)
    if not 2 <= folds <= len(texts):
        raise ValueError(f"folds must be in [2, {len(texts)}] (the number of rows), got {folds}")
    topics = tuple(sorted({t for topics in labels for t in topics}))
    column = {t: j for j, t in enumerate(topics)}
    truth = MultiLabelBinarizer(classes=topics).fit_transform(labels).astype(bool)
    predicted = np.zeros_like(truth)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=int(rng.integers(2**31 - 1)))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class in y has only")
        splits = list(splitter.split(np.zeros(len(texts)), fold_keys(labels, folds)))
    for train, test in splits:
        model = classifier.fit([texts[i] for i in train], [labels[i] for i in train])
        held = predict_topics(model, [texts[i] for i in test], threshold)
        for row, prediction in zip(test, held, strict=True):
            predicted[row, [column[t] for t in prediction.topics]] = True
    return OutOfFold(topics, truth, predicted, folds)


def summarise(result: OutOfFold, rows: NDArray[np.bool_] | None = None) -> CrossValidation:
    """Per-topic precision, recall and F1 of out-of-fold predictions (of `rows` only, if given),
    computed once on the pooled predictions (more stable on small catalogues than a mean of
    per-fold F1; Forman & Scholz 2010, "Apples-to-apples in cross-validation studies").
    Macro-F1 is the unweighted mean over topics; micro-F1 pools every (row, topic) decision."""
    keep = slice(None) if rows is None else rows
    truth, predicted = result.truth[keep], result.predicted[keep]
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, average=None, zero_division=0)
    micro = precision_recall_fscore_support(truth, predicted, average="micro", zero_division=0)[2]
    per_topic = tuple(TopicScore(t, int(s), float(p), float(r), float(f))
                      for t, p, r, f, s in zip(result.topics, precision, recall, f1, support, strict=True))
    return CrossValidation(per_topic, float(np.mean(f1)), float(micro), result.folds, len(truth),
                           CV_SCHEME.format(folds=result.folds))


def cross_validate(classifier: Classifier, texts: Sequence[str], labels: Sequence[Sequence[str]], folds: int,
                   rng: np.random.Generator, threshold: float = DEFAULT_THRESHOLD) -> CrossValidation:
    """Per-topic precision, recall and F1 of `classifier` over `folds` stratified folds."""
    return summarise(out_of_fold(classifier, texts, labels, folds, rng, threshold))
