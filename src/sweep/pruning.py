"""Median pruning (`search.pruning=median`): the median stopping rule of Google Vizier. From
epoch `search.pruning_min_epochs` on, a trial whose best objective so far is worse than the
median of the objective at the same epoch of the sweep's earlier finished trials (completed or
pruned) stops there, once at least MIN_TRIALS of them reached that epoch.

How it differs from Optuna's MedianPruner, rule by rule (Optuna's defaults in brackets):
- whose curves make the median: every finished trial of the sweep, pruned ones too, up to the
  epoch they stopped at [completed trials only];
- when judging starts: at an epoch as soon as MIN_TRIALS = 2 earlier trials reached it; there is
  no count of startup trials [`n_startup_trials=5` completed trials, then `n_min_trials=1` at
  the step]. With pruned trials counted, 5 startup trials would leave a third of our 10-30
  trial sweeps unjudged;
- the warm-up: `pruning_min_epochs` epochs, 1-based, default 1 [`n_warmup_steps=0`, 0-based:
  the same rule, `pruning_min_epochs = n_warmup_steps + 1`]; judged every epoch
  [`interval_steps=1`];
- what is compared: the trial's best value so far against the median of the others' values at
  that epoch (each trial's executions averaged) [the same; one value per trial];
- the last epoch: never stopped at (stopping there saves nothing) [Optuna may prune there].

The earlier trials are read from MLflow, the record every process of a sweep shares, so the rule
works with every tuner and in distributed sweeps. Their curves are read once per trial, at its
start (a finished run's curve never changes, so each run's is read once per process); the
callback then only compares numbers. A stopped trial is a completed Keras Tuner trial scored by
its best epoch so far, tagged `pruned=true` and `pruned_at_epoch` in MLflow.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import keras
import keras_tuner

from sweep import tracking

#: Earlier trials (completed or pruned) that must have a value at an epoch before a trial is
#: judged at that epoch: the median of one trial is that trial's value, too easily beaten by
#: chance. The only start-up rule: there is no count of startup trials.
MIN_TRIALS = 2


def median_curve(
    curves: Iterable[Mapping[int, float]], min_trials: int = MIN_TRIALS
) -> dict[int, float]:
    """Epoch (0-based, as MLflow's step) -> the median of the curves' finite values there, for
    the epochs at least `min_trials` curves reached."""
    by_epoch: dict[int, list[float]] = defaultdict(list)
    for curve in curves:
        for epoch, value in curve.items():
            if math.isfinite(value):
                by_epoch[epoch].append(value)
    return {
        epoch: float(statistics.median(values))
        for epoch, values in sorted(by_epoch.items())
        if len(values) >= min_trials
    }


class MedianStop(keras.callbacks.Callback):
    """Stops the fit (`model.stop_training`) once the best objective so far is worse than
    `medians` at this epoch, from epoch `min_epochs` on (1-based), never at the fit's last epoch
    (stopping there saves nothing). Keras Tuner deep-copies a trial's callbacks for each
    execution: the copies share `stopped`, the epochs (1-based) at which executions stopped, and
    an execution after a stopped one stops at the same epoch."""

    def __init__(
        self,
        medians: Mapping[int, float],
        objective: keras_tuner.Objective,
        min_epochs: int = 1,
        stopped: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.medians, self.objective, self.min_epochs = dict(medians), objective, min_epochs
        self.stopped: list[int] = [] if stopped is None else stopped
        self._best: float | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> MedianStop:
        return type(self)(self.medians, self.objective, self.min_epochs, self.stopped)

    @property
    def pruned_at(self) -> int | None:
        """The first epoch (1-based) at which an execution was stopped; None: never."""
        return self.stopped[0] if self.stopped else None

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self._best = None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        value = (logs or {}).get(self.objective.name)
        if self._better(value):
            self._best = float(value)
        step, last = epoch + 1, (self.params or {}).get("epochs", math.inf)
        if step >= last or step < self.min_epochs:
            return
        if self.pruned_at is not None and step >= self.pruned_at:
            self.model.stop_training = True  # a later execution of a pruned trial
            return
        median = self.medians.get(epoch)
        if median is not None and self._worse(median):
            self.model.stop_training = True
            self.stopped.append(step)

    def _better(self, value: float | None) -> bool:
        """Whether `value` is a finite objective value better than the best so far."""
        if value is None or not math.isfinite(value):
            return False
        return self._best is None or self.objective.better_than(value, self._best)

    def _worse(self, median: float) -> bool:
        """Whether the best so far is worse than `median` (the objective's direction decides)."""
        return self._best is not None and self.objective.better_than(median, self._best)


class Pruner:
    """One per sweep process: a `MedianStop` for each trial, from the earlier trials' curves."""

    def __init__(
        self, parent_run_id: str, objective: keras_tuner.Objective, min_epochs: int
    ) -> None:
        self.parent_run_id, self.objective, self.min_epochs = parent_run_id, objective, min_epochs
        self._curves: dict[str, dict[int, float]] = {}  # run id -> epoch -> objective

    def callback(self) -> MedianStop:
        """The callback of the trial about to start: the finished trials' curves read now."""
        self._curves.update(
            tracking.objective_curves(self.parent_run_id, self.objective.name, set(self._curves))
        )
        medians = median_curve(self._curves.values())
        return MedianStop(medians, self.objective, self.min_epochs)
