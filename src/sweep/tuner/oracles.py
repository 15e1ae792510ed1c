"""Keras Tuner's oracles with the sweep's rules: initial points first, no trial past the time
budget, a typed error for too many failures in a row, and a grid that resumes where it was.

Keras Tuner internals used here (`_check_consecutive_failures`, the grid's `_ordered_ids`,
`_populate_next`, `_compare`, Hyperband's `_random_values`) are pinned by pyproject.toml and
checked by tests/test_pins.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cmp_to_key
from typing import Any

import keras_tuner
from keras_tuner.engine.trial import Trial, TrialStatus

from sweep.errors import SweepError, first_line
from sweep.tuner.hypermodel import searched_values


class ConsecutiveFailures(SweepError):
    """`search.max_consecutive_failures` trials failed in a row: the search stops. Raised by the
    oracle as a trial ends: on a distributed chief, gRPC carries it to the worker that ended it."""


class SweepOracle:
    """Mixed into each Keras Tuner oracle: the sweep's initial points come before the oracle's own
    picks, and no trial starts once the time budget is spent (Keras Tuner's way to end a search:
    `create_trial` answers STOPPED)."""

    #: `search.initial` resolved: whole points in Keras Tuner values, tried first, in order.
    initial: Sequence[dict[str, Any]] = ()
    #: `search.time_budget` as written and in seconds; None: no limit.
    budget: tuple[str, float] | None = None
    #: When this command's search began (`start_clock`), trials started since, and why it ended.
    clock: float | None = None
    started = 0
    stop_reason: str | None = None

    def start_clock(self) -> None:
        self.clock, self.started, self.stop_reason = time.monotonic(), 0, None

    def _budget_spent(self) -> bool:
        return (
            self.budget is not None
            and self.clock is not None
            and time.monotonic() - self.clock >= self.budget[1]
        )

    @keras_tuner.synchronized
    def create_trial(self, tuner_id: str) -> Trial:
        ongoing = tuner_id in self.ongoing_trials  # type: ignore[attr-defined]
        if not ongoing and self._budget_spent():
            n = self.started
            self.stop_reason = f"time budget {self.budget[0]} spent after {n} trial{'s' * (n != 1)}"
            self.tuner_ids.discard(tuner_id)  # type: ignore[attr-defined]
            return Trial(self.get_space(), status=TrialStatus.STOPPED)  # type: ignore[attr-defined]
        trial = super().create_trial(tuner_id)  # type: ignore[misc]
        if not ongoing and trial.status == TrialStatus.RUNNING:
            self.started += 1
        return trial

    def _check_consecutive_failures(self) -> None:
        """Keras Tuner's check as each trial ends, raising `ConsecutiveFailures` (its own raises
        a bare RuntimeError). Counts the failures that end the record: trials that failed before
        a resume's first success do not stop the resumed sweep."""
        limit = self.max_consecutive_failed_trials  # type: ignore[attr-defined]
        ended = [self.trials[i] for i in self.end_order]  # type: ignore[attr-defined]
        in_a_row = 0
        for trial in reversed(ended):
            if trial.status != TrialStatus.FAILED:
                break
            in_a_row += 1
        if limit and in_a_row >= limit:
            why = (ended[-1].message or "").strip().splitlines()
            raise ConsecutiveFailures(
                f"too many consecutive failures: {in_a_row} trials failed in a row "
                f"(search.max_consecutive_failures={limit}); the last: "
                + (first_line(why[-1]) if why else "?")
            )

    def next_initial(self) -> dict[str, Any] | None:
        """The first initial point no trial of this sweep has tried yet (resumes skip them)."""
        tried = [searched_values(t.hyperparameters) for t in self.trials.values()]  # type: ignore[attr-defined]
        return next((dict(point) for point in self.initial if point not in tried), None)


class InitialFirstOracle(SweepOracle):
    def populate_space(self, trial_id: str) -> dict[str, Any]:
        values = self.next_initial()
        if values is not None:
            return {"status": TrialStatus.RUNNING, "values": values}
        return super().populate_space(trial_id)  # type: ignore[misc]


class RandomOracle(InitialFirstOracle, keras_tuner.oracles.RandomSearchOracle):
    """Random search, initial points first."""


class BayesianOracle(InitialFirstOracle, keras_tuner.oracles.BayesianOptimizationOracle):
    """Bayesian optimisation; initial points first (they count as its initial random points)."""


class HyperbandOracle(SweepOracle, keras_tuner.oracles.HyperbandOracle):
    """Hyperband; initial points are the first of its fresh (round 0) trials."""

    def _random_values(self) -> dict[str, Any] | None:
        values = self.next_initial()
        return values if values is not None else super()._random_values()


class ResumableGridSearchOracle(SweepOracle, keras_tuner.oracles.GridSearchOracle):
    """Keras Tuner 1.4.8's grid oracle forgets its position on reload and stops at once; rebuild
    the position from the trials it reloaded. Initial points: the first is the grid's defaults
    (its first trial); the others are placed in grid order, so the walk skips them later."""

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._populate_next = self._order()

    def _order(self, extra: dict[str, dict[str, Any]] | None = None) -> list[str]:
        values = {
            i: self.trials[i].hyperparameters.values for i in self.start_order if i in self.trials
        }
        values.update(extra or {})
        order = sorted(values, key=cmp_to_key(lambda a, b: self._compare(values[a], values[b])))
        self._ordered_ids = type(self._ordered_ids)()
        for trial_id in order:
            self._ordered_ids.insert(trial_id)
        return order

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        values = self.next_initial() if self.start_order else None
        if values is None:
            return super().populate_space(trial_id)
        self._order({trial_id: values})
        self._populate_next.append(trial_id)
        return {"status": TrialStatus.RUNNING, "values": values}
