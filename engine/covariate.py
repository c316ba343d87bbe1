"""The CUPED covariate (`analysis.covariate`) of a decision context, checked at the boundary."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def covariate_value(name: str, context: Mapping[str, Any]) -> float | None:
    """The covariate `name` of a decision context: None when absent or null (the unit counts
    with x = 0, see `policies.stats.cuped`); a number, or a string holding one (`--context
    name=12.5`). A bool, NaN, Infinity or other text is refused: a ValueError naming the field."""
    value = context.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"context.{name}: the covariate must be a number, got {value!r}") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"context.{name}: the covariate must be a number, got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"context.{name}: the covariate must be finite, got {value!r}")
    return number
