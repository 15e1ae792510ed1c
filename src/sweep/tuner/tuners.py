"""The Keras Tuner tuners a sweep can use (`search.tuner`), each with trial tracking mixed in,
and `build_tuner`, which pairs one with its oracle."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras_tuner
from omegaconf import DictConfig

from sweep.schema import parse_duration
from sweep.space import SearchSpace
from sweep.tuner.hypermodel import AttentionHyperModel
from sweep.tuner.oracles import (
    BayesianOracle,
    HyperbandOracle,
    RandomOracle,
    ResumableGridSearchOracle,
    SweepOracle,
)
from sweep.tuner.trials import TrialTracking

#: Keras Tuner's project directory inside `sweeps/<name>/`.
PROJECT = "tuner"


class RandomSweep(TrialTracking):
    """Random search over the declared space."""


class BayesianSweep(TrialTracking):
    """Gaussian-process Bayesian optimisation over the declared space."""


class HyperbandSweep(TrialTracking, keras_tuner.Hyperband):
    """Hyperband: many short trials, the promising ones trained on."""

    def __init__(self, oracle: HyperbandOracle, hypermodel: Any, **kwargs: Any) -> None:
        # keras_tuner.Hyperband.__init__ only builds its own oracle: the sweep brings one
        keras_tuner.Tuner.__init__(self, oracle, hypermodel, **kwargs)


class GridSweep(TrialTracking):
    """Every combination of the declared (discrete) space, in order."""


#: `search.tuner` -> (oracle, tuner) for the tuners that stop after `search.max_trials`.
BY_TRIALS = {
    "random": (RandomOracle, RandomSweep),
    "bayesian": (BayesianOracle, BayesianSweep),
    "grid": (ResumableGridSearchOracle, GridSweep),
}


@dataclass(frozen=True)
class TunerOptions:
    """What a process's role decides about its tuner (`Role.tuner_options`)."""

    #: start Keras Tuner's state afresh (a new sweep) rather than reload it
    overwrite: bool
    #: points tried before the tuner's own, in Keras Tuner values
    initial: list[dict[str, Any]] = field(default_factory=list)
    #: a distributed chief's (heartbeat timeout in s, max requeues, progress timeout in s or
    #: None): its oracle takes trials back from workers that fall silent or make no progress
    #: (`SweepOracle.watch`); None: it does not
    watch: tuple[float, int, float | None] | None = None


def build_tuner(
    cfg: DictConfig, hypermodel: AttentionHyperModel, directory: Path, options: TunerOptions
) -> TrialTracking:
    """The Keras Tuner tuner `search.tuner` names, its state in `directory`, its oracle set up
    as the process's role decided (`options`)."""
    search = cfg.search
    oracle = _oracle(cfg, options, hypermodel.searched)
    where = {
        "directory": str(directory),
        "project_name": PROJECT,
        "overwrite": options.overwrite,
        "executions_per_trial": search.executions_per_trial,
    }
    tuner_class = HyperbandSweep if search.tuner == "hyperband" else BY_TRIALS[search.tuner][1]
    tuner: TrialTracking = tuner_class(oracle, hypermodel, **where)
    tuner.oracle.verbose = 0  # our one line per trial replaces Keras Tuner's dump
    return tuner


def _oracle(cfg: DictConfig, options: TunerOptions, searched: SearchSpace) -> SweepOracle:
    """The oracle for `search.tuner`, with the sweep's initial points and time budget; set up
    before the tuner is built, which reloads a resumed sweep's oracle."""
    search, initial = cfg.search, options.initial
    defaults = initial[0] if initial and search.tuner == "grid" else None
    common: dict[str, Any] = {
        "hyperparameters": searched.hyperparameters(defaults),
        "tune_new_entries": False,
        "allow_new_entries": False,
        "max_retries_per_trial": 0,
        "max_consecutive_failed_trials": search.max_consecutive_failures,
        "seed": cfg.seed,
        "objective": keras_tuner.Objective(search.objective, direction=search.direction),
    }
    oracle: SweepOracle
    if search.tuner == "hyperband":
        oracle = HyperbandOracle(
            max_epochs=cfg.train.epochs, factor=search.hyperband_factor, **common
        )
    else:
        oracle = BY_TRIALS[search.tuner][0](max_trials=search.max_trials, **common)
    oracle.initial = initial
    if options.watch is not None:
        oracle.watch(*options.watch)
    if search.get("time_budget") is not None:
        budget = parse_duration("search.time_budget", search.time_budget)
        oracle.budget = (str(search.time_budget), budget)
    return oracle
