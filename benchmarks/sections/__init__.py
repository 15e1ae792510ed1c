"""The benchmark's sections, one module each, and the table the command line runs them from:
`--sections` names keys of `SECTIONS`, run in this order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.sections import bucketing, data, overhead, pipeline, pruning, search, sweeps
from benchmarks.settings import Bench

Section = Callable[[Bench], dict[str, Any]]

SECTIONS: dict[str, Section] = {
    "data": data.run,
    "overhead": overhead.run,
    "pipeline": pipeline.run,
    "sweeps": sweeps.run,
    "search": search.run,
    "bucketing": bucketing.run,
    "pruning": pruning.run,
}
