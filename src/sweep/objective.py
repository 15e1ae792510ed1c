"""The one home of "better by the objective's direction".

Keras Tuner's `Objective` states the same rule (`better_than`), but importing Keras Tuner loads
Keras and TensorFlow, which MLflow queries and leaderboards must not pay for. This mirrors it
without imports; `keras_tuner.Objective(obj.name, obj.direction)` is the tuner's copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

DIRECTIONS = ("max", "min")


@dataclass(frozen=True)
class Objective:
    """A metric name and whether more (`max`) or less (`min`) of it is better."""

    name: str
    direction: str = "max"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction={self.direction!r}: expected one of {DIRECTIONS}")

    @classmethod
    def of(cls, search: Mapping[str, Any] | Any) -> Objective:
        """The objective a `search` config section (or a run's logged params) declares."""
        if isinstance(search, Mapping) and "search.objective" in search:
            return cls(str(search["search.objective"]), str(search.get("search.direction", "max")))
        return cls(str(search["objective"]), str(search["direction"]))

    @property
    def ascending(self) -> bool:
        """Sort order that puts the best first (for pandas' `sort_values`)."""
        return self.direction == "min"

    @property
    def sign(self) -> float:
        """+1 when more is better, -1 when less is: `sign * value` is always "more is better"."""
        return 1.0 if self.direction == "max" else -1.0

    def better_than(self, a: float, b: float) -> bool:
        """Whether `a` is strictly better than `b` (Keras Tuner's rule)."""
        return a > b if self.direction == "max" else a < b

    def better(self, a: float, b: float) -> float:
        """The better of two values."""
        return a if self.better_than(a, b) or math.isnan(b) else b

    def best(self, values: Iterable[float]) -> float | None:
        """The best of `values`, NaNs ignored; None when none is a number."""
        finite = [float(v) for v in values if not math.isnan(float(v))]
        if not finite:
            return None
        return max(finite) if self.direction == "max" else min(finite)

    def best_of(self, items: Iterable[T], key: Callable[[T], float]) -> T | None:
        """The item whose `key` is best (the first of equals); None for no items."""
        chosen: T | None = None
        for item in items:
            if chosen is None or self.better_than(key(item), key(chosen)):
                chosen = item
        return chosen
