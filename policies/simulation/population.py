"""Simulated populations with latent segments, for targeting benchmarks, tests and the demo.

Generator (seeded by the `numpy.random.Generator` passed in):

1. every user belongs to a latent segment z, drawn with the segments' `share`s;
2. the user's observable context has one value per attribute: the segment's own value with
   probability `1 - noise`, otherwise a value drawn uniformly among the attribute's values
   (so segments are recoverable from the context, but not perfectly);
3. the true conversion rate of arm a for segment z is

       rate[z, a] = base[a] * product_lift ** [product(a) == product(z)]
                            * channel_lift ** [channel(a) == channel(z)]      (capped at 1)

   where an arm's product is its partner or campaign: segments differ in the partner and
   in the channel they respond to.

`homogeneous()` is the control population: the same users and contexts, but every segment
converts at the population-average rates `sum_z share[z] * rate[z, a]`, so the context-free
optimum is the same and the context carries no information about conversion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class SegmentProfile:
    """A latent segment: its share of users, its attribute values (one code per attribute),
    and the product and channel it converts on best."""

    name: str
    share: float
    attributes: tuple[int, ...]
    product: str
    channel: str


@dataclass(frozen=True)
class PopulationModel:
    """Arms (product and channel, base rate each), segments and the generator's parameters.

    `attribute_levels[j]` is the number of distinct values attribute j takes (codes 0..n-1)."""

    arm_products: tuple[str, ...]
    arm_channels: tuple[str, ...]
    base_rates: tuple[float, ...]
    segments: tuple[SegmentProfile, ...]
    attribute_levels: tuple[int, ...]
    product_lift: float = 2.0
    channel_lift: float = 1.5
    noise: float = 0.1
    heterogeneous: bool = True

    def __post_init__(self) -> None:
        k = len(self.base_rates)
        if k == 0 or len(self.arm_products) != k or len(self.arm_channels) != k:
            raise ValueError("arm_products, arm_channels and base_rates need one entry per arm")
        if not all(0 <= r <= 1 for r in self.base_rates):
            raise ValueError("base rates must be probabilities")
        if not self.segments or not math.isclose(sum(s.share for s in self.segments), 1.0, abs_tol=1e-9):
            raise ValueError("segment shares must add up to 1")
        for s in self.segments:
            if len(s.attributes) != len(self.attribute_levels):
                raise ValueError(f"segment {s.name!r} needs one value per attribute")
            if any(not 0 <= v < n for v, n in zip(s.attributes, self.attribute_levels, strict=True)):
                raise ValueError(f"segment {s.name!r} has an attribute code out of range")
        if not (self.product_lift > 0 and self.channel_lift > 0 and 0 <= self.noise <= 1):
            raise ValueError("lifts must be > 0 and noise in [0, 1]")

    @property
    def shares(self) -> FloatArray:
        return np.array([s.share for s in self.segments])

    def segment_rates(self) -> FloatArray:
        """True conversion rates (segments x arms) of the heterogeneous population."""
        products, channels = np.array(self.arm_products), np.array(self.arm_channels)
        rates = np.array([
            np.asarray(self.base_rates)
            * self.product_lift ** (products == s.product)
            * self.channel_lift ** (channels == s.channel)
            for s in self.segments
        ])
        return np.minimum(rates, 1.0)

    @property
    def rates(self) -> FloatArray:
        """True rates (segments x arms) in force: per segment, or the average for every segment."""
        rates = self.segment_rates()
        if self.heterogeneous:
            return rates
        return np.repeat((self.shares @ rates)[None, :], len(self.segments), axis=0)

    def homogeneous(self) -> PopulationModel:
        return replace(self, heterogeneous=False)


@dataclass(frozen=True, eq=False)
class Population:
    """Drawn users: latent segment and observed attribute codes per user, and the true rates."""

    segments: NDArray[np.intp]
    attributes: NDArray[np.intp]
    rates: FloatArray

    @property
    def size(self) -> int:
        return len(self.segments)

    def user_rates(self) -> FloatArray:
        """True conversion rate of every arm for every user (users x arms)."""
        return self.rates[self.segments]


def draw_population(model: PopulationModel, users: int, rng: np.random.Generator) -> Population:
    """Draw `users` users: latent segments, then noisy observed attributes (see module doc)."""
    if users < 1:
        raise ValueError("users must be >= 1")
    segments = rng.choice(len(model.segments), size=users, p=model.shares).astype(np.intp)
    own = np.array([s.attributes for s in model.segments], dtype=np.intp)[segments]
    levels = np.asarray(model.attribute_levels)
    random_values = np.floor(rng.random((users, len(levels))) * levels).astype(np.intp)
    replaced = rng.random((users, len(levels))) < model.noise
    return Population(segments, np.where(replaced, random_values, own), model.rates)


def one_hot(attributes: NDArray[np.intp], levels: tuple[int, ...]) -> FloatArray:
    """Attribute codes (users x attributes) as concatenated one-hot columns (users x sum(levels))."""
    offsets = np.concatenate([[0], np.cumsum(levels)[:-1]]).astype(np.intp)
    out = np.zeros((len(attributes), int(sum(levels))))
    out[np.arange(len(attributes))[:, None], attributes + offsets] = 1.0
    return out
