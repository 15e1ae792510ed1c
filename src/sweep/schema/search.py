"""The `search` and `sweep` groups: the space, the tuner, its budgets and seed repeats, and
where the tuner keeps its state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig

from sweep.durations import parse_duration
from sweep.errors import ConfigError
from sweep.schema.rules import bounds


@dataclass
class SearchParam:
    type: str = field(
        default=MISSING, metadata=bounds(choices=("choice", "int", "float", "boolean"))
    )
    values: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    sampling: str = field(default="linear", metadata=bounds(choices=("linear", "log")))


@dataclass
class ReplicatesConfig:
    # re-run the leaders with fresh seeds until best vs runner-up is decided (docs/replicates.md)
    enabled: bool = False
    top: int = field(default=2, metadata=bounds(ge=2))  # leading configurations compared
    min_seeds: int = field(default=3, metadata=bounds(ge=2))  # seeds each has before a verdict
    max_seeds: int = field(default=6, metadata=bounds(ge=2))  # most seeds of one configuration
    max_runs: int = field(default=12, metadata=bounds(ge=1))  # most repeats per command
    time_budget: str | None = None  # no repeat starts after it (90s, 30m, 2h; per command)
    alpha: float = field(default=0.05, metadata=bounds(gt=0.0, lt=1.0))
    margin: float = field(default=0.01, metadata=bounds(gt=0.0))  # "no difference" below it


@dataclass
class ConfirmConfig:
    # after the search: the best, the runner-up and the base configuration re-run with fresh
    # seeds, scored on the confirmation slice (data.confirm_fraction) that no selection saw
    enabled: bool = False
    seeds: int = field(default=3, metadata=bounds(ge=2))  # fresh seeds per configuration


@dataclass
class SearchConfig:
    tuner: str = field(
        default="random", metadata=bounds(choices=("random", "bayesian", "hyperband", "grid"))
    )
    max_trials: int = field(default=10, metadata=bounds(ge=1))
    objective: str = "val_accuracy"
    direction: str = field(default="max", metadata=bounds(choices=("min", "max")))
    executions_per_trial: int = field(default=1, metadata=bounds(ge=1))
    # epochs without improvement of the objective before a trial stops early (0: never)
    patience: int = field(default=2, metadata=bounds(ge=0))
    # this many failed trials in a row stop the sweep
    max_consecutive_failures: int = field(default=3, metadata=bounds(ge=1))
    # Hyperband's reduction factor
    hyperband_factor: int = field(default=3, metadata=bounds(ge=2))
    # median: stop a trial whose best objective so far is worse than the median of the earlier
    # finished (completed or pruned) trials' objective at the same epoch, once 2 reached it
    # (Vizier's median stopping rule; how it differs from Optuna's: sweep.pruning); none: never
    pruning: str = field(default="none", metadata=bounds(choices=("none", "median")))
    # epochs every trial runs before median pruning may stop it
    pruning_min_epochs: int = field(default=1, metadata=bounds(ge=1))
    # config path -> how to search it
    space: dict[str, SearchParam] = field(default_factory=dict)
    # no trial starts once this much time has passed since this command's search began:
    # 90s, 30m, 2h, 1h30m (null: no limit); the trial running then finishes
    time_budget: str | None = None
    # points tried before the tuner's own: base (the config's own values, when they are points
    # of the space), {best_of: EXPERIMENT} (another sweep's best trial), {config.path: value}
    initial: list[Any] = field(default_factory=lambda: ["base"])
    replicates: ReplicatesConfig = field(default_factory=ReplicatesConfig)
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)


@dataclass
class SweepConfig:
    # tuner state lives in <dir>/<name>/
    dir: str = "sweeps"
    # start the sweep afresh instead of resuming it (on purpose only)
    overwrite: bool = False
    # local parallel mode: N > 0 starts a chief and N worker processes on this machine
    workers: int = field(default=0, metadata=bounds(ge=0))


def check_search(search: DictConfig) -> None:
    """Durations and seed counts the field rules cannot judge alone."""
    if search.time_budget is not None:
        parse_duration("search.time_budget", search.time_budget)
    again = search.get("replicates")
    if again is not None and again.time_budget is not None:
        parse_duration("search.replicates.time_budget", again.time_budget)
    if again is not None and again.min_seeds > again.max_seeds:
        raise ConfigError("search.replicates.min_seeds", again.min_seeds, "more than max_seeds")
