"""`crosspromo classify`: train the campaign classifier on a catalogue, measure it, tag arms.

`evaluate_catalogue` cross-validates the classifier on the catalogue's usable rows;
`tag_arms` fits it on all of them and predicts tags for every applied arm that declares no
tags but has a description, storing them (`engine.store.tags`) for the content recommender.
The classifier is any `policies.targeting.classifier.Classifier`; the default is the
character n-gram TF-IDF + logistic one-vs-rest model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.catalogue import Catalogue, CatalogueError, read_catalogue
from engine.events import utcnow
from engine.store import ArmTags, Store
from engine.store.tags import description_digest
from policies.targeting.classifier import (
    DEFAULT_THRESHOLD,
    Classifier,
    CrossValidation,
    TfidfLinearClassifier,
    TopicModel,
    cross_validate,
    predict_topics,
)

MIN_ROWS = 10
DEFAULT_FOLDS = 5
MAX_CLASSIFIER_NAME = 128  # arm_tags.classifier


def default_classifier() -> Classifier:
    return TfidfLinearClassifier()


def check_catalogue(catalogue: Catalogue, folds: int) -> list[str]:
    """Raise `CatalogueError` if the usable rows cannot train a classifier measured over
    `folds` folds; otherwise the warnings worth reading (topics too rare for the folds)."""
    needed = max(MIN_ROWS, 2 * folds)
    if len(catalogue.rows) < needed:
        raise CatalogueError(f"{catalogue.path}: {len(catalogue.rows)} usable row(s); classify needs at least "
                             f"{needed} (at least {MIN_ROWS}, and 2 per fold of --folds {folds})")
    counts = Counter(t for row in catalogue.rows for t in row.topics)
    if len(counts) < 2:
        raise CatalogueError(f"{catalogue.path}: every usable row has the one topic {next(iter(counts))!r}; "
                             "a classifier needs at least two topics")
    return [f"topic {topic!r} has {n} row(s), fewer than the {folds} folds: its F1 is rough and the "
            f"model knows it from few examples" for topic, n in sorted(counts.items()) if n < folds]


def evaluate_catalogue(catalogue: Catalogue, folds: int = DEFAULT_FOLDS, seed: int = 0,
                       classifier: Classifier | None = None) -> CrossValidation:
    """Cross-validated F1 per topic and macro-F1 (`policies.targeting.classifier.cross_validate`)."""
    return cross_validate(classifier or default_classifier(), catalogue.texts, catalogue.labels, folds,
                          np.random.default_rng(seed))


def train(catalogue: Catalogue, classifier: Classifier | None = None) -> TopicModel:
    return (classifier or default_classifier()).fit(catalogue.texts, catalogue.labels)


@dataclass(frozen=True)
class Tagging:
    """What `tag_arms` did: the tags it stored, and the arms it could not tag (no description)."""

    tagged: tuple[ArmTags, ...]
    undescribed: tuple[tuple[str, str], ...]


def tag_arms(store: Store, model: TopicModel, classifier_name: str,
             threshold: float = DEFAULT_THRESHOLD) -> Tagging:
    """Predict and store tags for every applied arm that declares none and has a description;
    arms that declare tags keep them, and are never touched here."""
    with_text: list[tuple[str, str, str]] = []
    undescribed: list[tuple[str, str]] = []
    for key, stored in sorted(store.experiments().items()):
        for arm in stored.spec.arms:
            if arm.tags:
                continue
            if arm.description is None:
                undescribed.append((key, arm.key))
            else:
                with_text.append((key, arm.key, arm.description))
    predictions = predict_topics(model, [text for _, _, text in with_text], threshold) if with_text else []
    now = utcnow()
    name = classifier_name[:MAX_CLASSIFIER_NAME]
    tagged = tuple(ArmTags(key, arm, prediction.tags, description_digest(text), name, now)
                   for (key, arm, text), prediction in zip(with_text, predictions, strict=True))
    store.write_arm_tags(tagged)
    return Tagging(tagged, tuple(undescribed))


def tag_from_catalogue(store: Store, path: Path) -> str:
    """Train on the catalogue at `path` (every usable row), tag the arms that need it, and say
    what was tagged (one line, for a notice): the demo's classification step."""
    catalogue = read_catalogue(path)
    check_catalogue(catalogue, DEFAULT_FOLDS)
    classifier = default_classifier()
    tagging = tag_arms(store, classifier.fit(catalogue.texts, catalogue.labels), classifier.name)
    tagged = "; ".join(f"{t.experiment}/{t.arm} -> {render_tags(t.tags)}" for t in tagging.tagged) or "no arm"
    return f"classified with {path} ({len(catalogue.rows):,} rows): {tagged}"


def render_tags(tags: Sequence[tuple[str, float]]) -> str:
    return ", ".join(f"{topic} {score:.2f}" for topic, score in tags)
