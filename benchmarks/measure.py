"""Timing on a shared CPU: wall and CPU seconds of one call, kinds measured in paired rounds
(each kind once a round, the order reversed every other round, so neither always runs first),
medians of the rounds' ratios."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
#: How a `Timing`'s fields are named in the results JSON (the format earlier runs wrote).
JSON_FIELDS = {"wall_s": "wall_s", "cpu_s": "cpu_s", "val_accuracy": "best_val_accuracy"}


@dataclass(frozen=True)
class Measured(Generic[T]):
    """A call's result and what it took: wall seconds, CPU seconds of this process."""

    result: T
    wall_s: float
    cpu_s: float


def measure(fn: Callable[[], T]) -> Measured[T]:
    """`fn()`'s result, wall seconds and CPU seconds of this process (every thread)."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return Measured(result, time.perf_counter() - wall, time.process_time() - cpu)


@dataclass(frozen=True)
class Timing:
    """One fit: its seconds and validation accuracy; `fit_s`, where a tracked run logged it, the
    time its `fit` took inside the run (the rest is the harness's own cost)."""

    wall_s: float
    cpu_s: float
    val_accuracy: float
    fit_s: float | None = None


@dataclass
class Paired:
    """Kinds measured round by round: each round holds one `Timing` of every kind."""

    kinds: tuple[str, ...]
    rounds: list[dict[str, Timing]] = field(default_factory=list)

    def series(self, kind: str, name: str = "wall_s") -> list[float]:
        """One field of `kind`'s timings, round by round."""
        return [getattr(row[kind], name) for row in self.rounds]

    def ratios(self, kind: str, over: str, name: str = "wall_s") -> list[float]:
        """`kind` / `over` within each round: the pairs that ran back to back."""
        return [getattr(row[kind], name) / getattr(row[over], name) for row in self.rounds]

    def ratio(self, kind: str, over: str, name: str = "wall_s") -> float:
        """The median of the rounds' ratios (a slow round moves both kinds alike)."""
        return median(self.ratios(kind, over, name))

    @classmethod
    def from_json(cls, measured: dict[str, Any], kinds: Sequence[str]) -> Paired:
        """Back from the results JSON (an earlier run's, for `--from-json`): its lists hold
        round i at index i."""
        rounds = len(measured[kinds[0]]["wall_s"])
        return cls(
            tuple(kinds),
            [
                {
                    kind: Timing(**{n: measured[kind][key][i] for n, key in JSON_FIELDS.items()})
                    for kind in kinds
                }
                for i in range(rounds)
            ],
        )

    def to_json(self) -> dict[str, dict[str, list[float]]]:
        """Per kind, each field's values in round order (the results JSON's layout)."""
        return {
            kind: {key: self.series(kind, name) for name, key in JSON_FIELDS.items()}
            for kind in self.kinds
        }


def paired(kinds: dict[str, Callable[[], Timing]], repeats: int, label: str) -> Paired:
    """Each kind once per round, the order reversed every other round (neither always first)."""
    result, order = Paired(tuple(kinds)), list(kinds)
    for repeat in range(repeats):
        row: dict[str, Timing] = {}
        for kind in order if repeat % 2 == 0 else order[::-1]:
            row[kind] = timing = kinds[kind]()
            log.info(
                "%s repeat %d %s: %.2f s wall, %.2f s CPU",
                label,
                repeat + 1,
                kind,
                timing.wall_s,
                timing.cpu_s,
            )
        result.rounds.append(row)
    return result


def median(values: Sequence[float]) -> float:
    """NaN for no values, so a report shows the gap instead of failing."""
    return float(statistics.median(values)) if values else float("nan")


def rounded(value: Any, digits: int = 3) -> Any:
    """Floats rounded for the report, recursively."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def ok(met: bool) -> str:
    """A target's verdict as the README shows it: a miss stands out."""
    return "yes" if met else "**no**"
