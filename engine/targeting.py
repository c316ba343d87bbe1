"""Adapter between logged decisions and the recommender: contexts to features, unit ids to rows.

`fit_targeting` turns (unit, arm, converted, context) rows into the arrays `policies/`
works on, fits the segments and the recommender, and returns a `TargetingModel` that answers
a unit's scores on the decide path from memory (no SQL): the unit's history row if it ever
converted, its social scores if a conversion is within its reach in the social graph (a
`social` recommender or a hybrid with a social weight), its segment from the current context,
or None (cold start).

Context attributes (`targeting.segments_from`) are encoded as: numbers (every value seen is
a number, or a string that parses as one) standardised to mean 0 and variance 1; lists (or
strings with commas, the CLI's `--context a=x,y` convention) one column per value; anything
else one-hot by its string. A missing attribute is a row of zeros (the mean, for numbers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.spec import ExperimentSpec, Recommender, Targeting
from policies.targeting.recommender import FittedRecommender, Interactions, RecommenderConfig, fit_recommender
from policies.targeting.segments import Segmentation, fit_segments
from policies.targeting.social import DEFAULT_LAYERS, SocialGraph

if TYPE_CHECKING:
    from engine.store.graph import StoredGraph

SEGMENT_CACHE_SIZE = 10_000
UNIT_CACHE_SIZE = 100_000


@dataclass(frozen=True)
class HistoryRow:
    """One logged decision as the recommender sees it."""

    unit: str
    arm: int
    converted: bool
    context: Mapping[str, Any]


def _values(value: Any) -> list[str]:
    if isinstance(value, list | tuple | set):
        return sorted(str(v) for v in value)
    text = str(value)
    return [v.strip() for v in text.split(",") if v.strip()] if "," in text else [text]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class ContextEncoder:
    """Feature columns learned from the contexts seen at fit time (see the module doc)."""

    attributes: tuple[str, ...]
    numeric: dict[str, tuple[float, float]]  # attribute -> (mean, standard deviation)
    columns: dict[tuple[str, str], int]  # (attribute, value) -> column of a categorical value

    @property
    def width(self) -> int:
        return len(self.numeric) + len(self.columns)

    @classmethod
    def fit(cls, contexts: Sequence[Mapping[str, Any]], attributes: Sequence[str],
            counts: Sequence[int] | None = None) -> ContextEncoder:
        """Learn the columns from `contexts`, each seen `counts[i]` times (default once)."""
        weights = np.ones(len(contexts)) if counts is None else np.asarray(counts, dtype=float)
        numeric: dict[str, tuple[float, float]] = {}
        categorical: set[tuple[str, str]] = set()
        for attr in attributes:
            seen = [(c[attr], w) for c, w in zip(contexts, weights, strict=True) if c.get(attr) is not None]
            numbers = [_number(v) for v, _ in seen]
            if seen and all(x is not None for x in numbers):
                values, w = np.array(numbers, dtype=float), np.array([w for _, w in seen])
                mean = float(np.average(values, weights=w))
                numeric[attr] = (mean, float(np.sqrt(np.average((values - mean) ** 2, weights=w))) or 1.0)
            else:
                categorical.update((attr, v) for raw, _ in seen for v in _values(raw))
        start = len(numeric)
        columns = {pair: start + i for i, pair in enumerate(sorted(categorical))}
        return cls(tuple(attributes), numeric, columns)

    def encode(self, context: Mapping[str, Any]) -> np.ndarray | None:
        """The feature row of a context, or None when it has none of the attributes."""
        if not any(context.get(a) is not None for a in self.attributes):
            return None
        row = np.zeros(self.width)
        for i, (attr, (mean, std)) in enumerate(self.numeric.items()):
            number = _number(context.get(attr))
            if number is not None:
                row[i] = (number - mean) / std
        for attr in self.attributes:
            if attr in self.numeric or context.get(attr) is None:
                continue
            for v in _values(context[attr]):
                column = self.columns.get((attr, v))
                if column is not None:
                    row[column] = 1.0
        return row

    def key(self, context: Mapping[str, Any]) -> tuple[Any, ...]:
        """What the segment of a context depends on (a cache key)."""
        return context_key(context, self.attributes)


def context_key(context: Mapping[str, Any], attributes: Sequence[str]) -> tuple[Any, ...]:
    """The values of `attributes` in `context`, hashable: contexts with one key encode alike.
    Strings (the usual case) are taken as they are; other values with their type."""
    return tuple(v if type(v) is str else _hashable(v) for v in map(context.get, attributes))


def _hashable(value: Any) -> tuple[str, Any]:
    if isinstance(value, list | tuple | set):
        return ("list", tuple(_values(value)))
    return (type(value).__name__, value if isinstance(value, int | float | bool | None) else str(value))


def recommender_config(targeting: Targeting) -> RecommenderConfig:
    hybrid = targeting.recommender is Recommender.HYBRID
    return RecommenderConfig(
        method=targeting.recommender.value,  # type: ignore[arg-type]  # NONE never reaches here
        cf_weight=targeting.cf_weight if hybrid and targeting.cf_weight is not None else 0.5,
        content_weight=targeting.content_weight if hybrid and targeting.content_weight is not None else 0.5,
        factors=targeting.factors,
        social_weight=targeting.social_weight if hybrid and targeting.social_weight is not None else 0.0,
        layers=targeting.layers if targeting.layers is not None else DEFAULT_LAYERS,
    )


def arm_tokens(spec: ExperimentSpec, predicted: Mapping[str, Sequence[str]] | None = None) -> list[list[str]]:
    """The words content-based scoring compares arms by: tags, partner, campaign and channel.
    An arm that declares no tags takes its `predicted` ones (`engine.tags`), so a new campaign
    is compared with the others by what its description is about."""
    predicted = predicted or {}
    return [[*(arm.tags or predicted.get(arm.key, ())), f"partner={arm.partner}", f"campaign={arm.campaign}",
             f"channel={arm.channel.value}"] for arm in spec.arms]


@dataclass
class TargetingModel:
    """A fitted recommender with its unit index and segmentation; answers scores from memory.

    The caches are bounded dicts (cleared when full); callers serialise access (the engine
    holds its lock)."""

    recommender: FittedRecommender
    units: dict[str, int]
    encoder: ContextEncoder | None
    segmentation: Segmentation | None
    _segments: dict[tuple[Any, ...], int | None] = field(default_factory=dict)
    _unit_scores: dict[tuple[str, int | None], np.ndarray | None] = field(default_factory=dict)

    def segment_of(self, context: Mapping[str, Any]) -> int | None:
        """The context's segment, or None if it carries none of the segment attributes."""
        if self.encoder is None or self.segmentation is None:
            return None
        key = self.encoder.key(context)
        if key not in self._segments:
            if len(self._segments) >= SEGMENT_CACHE_SIZE:
                self._segments.clear()
            row = self.encoder.encode(context)
            self._segments[key] = None if row is None else int(self.segmentation.assign(row)[0])
        return self._segments[key]

    def scores(self, unit: str, context: Mapping[str, Any]) -> np.ndarray | None:
        """Scores over the arms for `unit` in `context`; None for a cold start."""
        segment = self.segment_of(context)
        row = self.units.get(unit)
        if row is None:
            return self.recommender.scores(None, segment)
        key = (unit, segment)
        if key not in self._unit_scores:
            if len(self._unit_scores) >= UNIT_CACHE_SIZE:
                self._unit_scores.clear()
            self._unit_scores[key] = self.recommender.scores(row, segment)
        return self._unit_scores[key]


def fit_targeting(spec: ExperimentSpec, targeting: Targeting, rows: Sequence[HistoryRow],
                  rng: np.random.Generator, predicted: Mapping[str, Sequence[str]] | None = None,
                  graph: StoredGraph | None = None) -> TargetingModel:
    """Fit segments (k-means on the encoded contexts) and the recommender on logged decisions;
    `predicted` holds the classifier's tags of arms that declare none (`arm_tokens`), `graph` the
    social graph when the recommender uses it. The model knows a unit when it converted or,
    social, when a conversion is within its reach."""
    index: dict[str, int] = {u: i for i, u in enumerate(graph.units)} if graph is not None else {}
    units = np.array([index.setdefault(r.unit, len(index)) for r in rows], dtype=np.intp)
    arms = np.array([r.arm for r in rows], dtype=np.intp)
    converted = np.array([r.converted for r in rows], dtype=bool)
    segments = np.full(len(rows), -1, dtype=np.intp)
    encoder = segmentation = None
    if targeting.segments_from and rows:
        # Contexts repeat (a few attribute combinations): encode each distinct one once.
        distinct: dict[tuple[Any, ...], int] = {}
        examples: list[Mapping[str, Any]] = []
        inverse = np.empty(len(rows), dtype=np.intp)
        for i, r in enumerate(rows):
            key = context_key(r.context, targeting.segments_from)
            if key not in distinct:
                distinct[key] = len(examples)
                examples.append(r.context)
            inverse[i] = distinct[key]
        counts = np.bincount(inverse, minlength=len(examples))
        encoder = ContextEncoder.fit(examples, targeting.segments_from, counts)
        encoded = [encoder.encode(c) for c in examples]
        usable = np.array([e is not None for e in encoded])
        if usable.any() and encoder.width:
            features = np.array([e if e is not None else np.zeros(encoder.width) for e in encoded])
            segmentation = fit_segments(features[usable], targeting.segments, rng, counts=counts[usable])
            known = usable[inverse]
            segments[known] = segmentation.assign(features)[inverse[known]]
    interactions = Interactions(units, arms, converted, segments, len(index), len(spec.arms),
                                segmentation.count if segmentation is not None else 0)
    social = None if graph is None else SocialGraph(graph.sources, graph.targets, graph.weights, graph.directed,
                                                    len(index))
    model = fit_recommender(interactions, arm_tokens(spec, predicted), recommender_config(targeting), rng, social)
    known = set(units[converted].tolist())
    if model.social is not None:
        known.update(np.flatnonzero(np.abs(model.social).max(axis=1, initial=0.0) > 0).tolist())
    return TargetingModel(model, {u: i for u, i in index.items() if i in known}, encoder, segmentation)
