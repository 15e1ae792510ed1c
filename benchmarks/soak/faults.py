"""What the soak's injector does and when: the five kinds of fault, one record per fault
injected, and a seeded plan of which kind comes next and after how long."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: A worker SIGKILLed (and a new one started), a worker SIGSTOPped past the heartbeat timeout
#: and resumed, the chief SIGKILLed and started again, the MLflow server restarted, PostgreSQL
#: restarted.
WORKER_KILL, WORKER_STOP, CHIEF_KILL = "worker_kill", "worker_stop", "chief_kill"
MLFLOW_RESTART, POSTGRES_RESTART = "mlflow_restart", "postgres_restart"
KINDS = (WORKER_KILL, WORKER_STOP, CHIEF_KILL, MLFLOW_RESTART, POSTGRES_RESTART)
#: Faults aimed at one worker (the ledger looks for the trial of that worker only).
WORKER_FAULTS = (WORKER_KILL, WORKER_STOP)


@dataclass(frozen=True)
class Fault:
    """One fault injected: its kind, when (wall-clock seconds, as MLflow times runs), the worker
    it hit (worker faults), and what was done in words."""

    kind: str
    at: float
    target: str | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        return cls(**data)


@dataclass(frozen=True)
class Plan:
    """Which faults, in what order, how far apart: `count` faults of `kinds`, each block of
    len(kinds) faults holding every kind once in a seeded order (so any 5 faults in a row
    cover all five kinds), separated by seeded waits between `min_gap_s` and `max_gap_s`."""

    count: int
    seed: int
    min_gap_s: float
    max_gap_s: float
    kinds: Sequence[str] = KINDS
    #: the kinds in exactly this order, cycled, instead of seeded blocks (a test's script)
    fixed: bool = False

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"fault kinds {unknown or '(none)'}: choose from {', '.join(KINDS)}")
        if not 0 <= self.min_gap_s <= self.max_gap_s:
            raise ValueError(f"gaps {self.min_gap_s}..{self.max_gap_s} s: need 0 <= min <= max")

    def steps(self) -> Iterator[tuple[float, str, random.Random]]:
        """(seconds to wait first, kind, the fault's own seeded chooser) for each fault."""
        rng = random.Random(self.seed)
        block: list[str] = []
        for _ in range(self.count):
            if not block:
                block = list(self.kinds)
                if not self.fixed:
                    rng.shuffle(block)
            kind = block.pop(0)
            yield rng.uniform(self.min_gap_s, self.max_gap_s), kind, random.Random(rng.random())
