"""Keras Tuner's oracles with the sweep's rules: initial points first, no trial past the time
budget, a typed error for too many failures in a row, a grid that resumes where it was, and on a
distributed chief, trials taken back from workers that fell silent or made no progress
(`sweep.tuner.liveness`).

Keras Tuner internals used here (`_check_consecutive_failures`, `_retry`, `_retry_queue`, the
grid's `_ordered_ids`, `_populate_next`, `_compare`, Hyperband's `_random_values`) are pinned by
pyproject.toml and checked by tests/test_pins.py.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from functools import cmp_to_key
from typing import Any, TypeVar

import keras_tuner
from keras_tuner.engine.trial import Trial, TrialStatus

from sweep.errors import SweepError, first_line
from sweep.tuner.hypermodel import searched_values
from sweep.tuner.liveness import BETWEEN_TRIALS, Attendance

log = logging.getLogger(__name__)

T = TypeVar("T")


def synchronized(method: Callable[..., T]) -> Callable[..., T]:
    """Keras Tuner's lock around an oracle method (one call at a time: on a chief, its gRPC
    thread and its monitor's), released when the method raises too. Keras Tuner's own
    `synchronized` releases it only on return: one exception (too many failures in a row,
    raised as the monitor requeues a trial) left every other thread waiting for it forever,
    and the chief answering no worker again."""

    @keras_tuner.synchronized
    def guarded(self: Any, *args: Any, **kwargs: Any) -> tuple[T | None, BaseException | None]:
        try:
            return method(self, *args, **kwargs), None
        except BaseException as err:  # raised again below, once the lock is released
            return None, err

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> T:
        value, err = guarded(self, *args, **kwargs)
        if err is not None:
            raise err
        return value

    return call


class ConsecutiveFailures(SweepError):
    """`search.max_consecutive_failures` trials failed in a row: the search stops. Raised by the
    oracle as a trial ends: on a distributed chief, gRPC carries it to the worker that ended it."""


class KerasOracle(keras_tuner.Oracle):
    """Keras Tuner's oracle, with the state the sweep's rules read and write typed (Keras Tuner
    ships no types; tests/test_pins.py checks that each of these still exists)."""

    #: trial id -> trial: every trial of the search
    trials: dict[str, Trial]
    #: tuner (worker) id -> the trial it runs now
    ongoing_trials: dict[str, Trial]
    #: the tuners the search waits for before it ends
    tuner_ids: set[str]
    #: trial ids in the order they started, and ended
    start_order: list[str]
    end_order: list[str]
    #: trial ids to hand out again (Keras Tuner's retries)
    _retry_queue: list[str]
    max_consecutive_failed_trials: int | None
    max_retries_per_trial: int


class SweepOracle(KerasOracle):
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
    #: On a distributed chief (`watch`), when each worker holding a trial was last heard of and
    #: last made progress; None elsewhere.
    attendance: Attendance | None = None
    #: The trial `requeue` is ending right now (its report is the chief's own).
    _requeuing: str | None = None

    def watch(
        self, timeout_s: float, max_requeues: int, progress_timeout_s: float | None = None
    ) -> None:
        """Make this a distributed chief's oracle that takes trials back from workers silent for
        `timeout_s`, or without progress for `progress_timeout_s` (None: never), each at most
        `max_requeues` times (Keras Tuner's retries), and keeps a restarted chief's
        assignments."""
        self.attendance = Attendance(timeout_s, progress_timeout_s)
        self.max_retries_per_trial = max_requeues
        self._taken: dict[str, str] = {}  # trial -> the silent worker it was taken from
        self._assigned: dict[str, str] = {}  # worker -> trial, as a crashed chief left them

    def start_clock(self) -> None:
        self.clock, self.started, self.stop_reason = time.monotonic(), 0, None

    def _spent_budget(self) -> str | None:
        """The time budget as written, once it is spent; None while time is left (or none)."""
        if self.budget is None or self.clock is None:
            return None
        written, seconds = self.budget
        return written if time.monotonic() - self.clock >= seconds else None

    @synchronized
    def create_trial(self, tuner_id: str) -> Trial:
        if self.attendance is not None:
            self.attendance.heard(tuner_id)
        ongoing = tuner_id in self.ongoing_trials
        spent = None if ongoing else self._spent_budget()
        if spent is not None:
            n = self.started
            self.stop_reason = f"time budget {spent} spent after {n} trial{'s' * (n != 1)}"
            self.tuner_ids.discard(tuner_id)
            return Trial(self.get_space(), status=TrialStatus.STOPPED)
        trial = super().create_trial(tuner_id)
        if trial.status == TrialStatus.RUNNING:
            if not ongoing:
                self.started += 1
            if self.attendance is not None:  # its clocks start (again, for a restarted worker)
                self.attendance.started(tuner_id)
        if trial.status == TrialStatus.STOPPED and self._may_come_back():
            # a silent worker's trial may yet come back to the queue: wait, do not leave
            self.tuner_ids.add(tuner_id)
            return Trial(self.get_space(), status=TrialStatus.IDLE)
        return trial

    def _may_come_back(self) -> bool:
        """Whether a trial may still return to the queue: on a chief, while any is running."""
        return self.attendance is not None and bool(self.ongoing_trials or self._taken)

    @synchronized
    def heartbeat(self, worker: str, trial_id: str, progress: int) -> bool:
        """A worker says it is alive, on `trial_id`, at `progress`: whether the trial is still
        its own (then the worker counts as heard of, at that progress); False: it was taken.
        Between trials (`BETWEEN_TRIALS`), a worker the chief waits for counts as heard of."""
        if self.attendance is not None and trial_id == BETWEEN_TRIALS:
            if worker in self.tuner_ids and worker not in self.ongoing_trials:
                self.attendance.heard(worker)
            return False
        trial = self.ongoing_trials.get(worker)
        if self.attendance is None or trial is None or trial.trial_id != trial_id:
            return False
        self.attendance.heard(worker, progress)
        return True

    @synchronized
    def update_trial(self, trial_id: str, metrics: dict[str, float], step: int = 0) -> Trial:
        if self._refused(trial_id):
            return self.trials[trial_id]
        return super().update_trial(trial_id, metrics, step=step)

    @synchronized
    def end_trial(self, trial: Trial) -> None:
        if not self._refused(trial.trial_id):
            super().end_trial(trial)

    def _refused(self, trial_id: str) -> bool:
        """A chief ignores a report of a trial no worker holds: one taken from a worker that
        fell silent and then woke up (it went to the queue, or another worker, meanwhile)."""
        if self.attendance is None or trial_id == self._requeuing:
            return False
        held = {t.trial_id for t in self.ongoing_trials.values()}
        if trial_id in held:
            return False
        log.warning("ignored a report of trial %s: it was taken from its worker", trial_id)
        return True

    @synchronized
    def take_back(self) -> list[tuple[str, Trial, str]]:
        """(worker, trial, why) of each worker overdue (`Attendance.overdue`: silent, or without
        progress, for too long), its trial taken out of its hands: no longer its own, not queued
        yet (`requeue` it next)."""
        if self.attendance is None:
            return []
        ongoing = self.ongoing_trials
        overdue = self.attendance.overdue(list(ongoing))
        taken = [(w, ongoing.pop(w), why) for w, why in overdue.items()]
        for worker, trial, _ in taken:
            self._taken[trial.trial_id] = worker
        return taken

    @synchronized
    def forget_gone(self) -> list[str]:
        """Workers between trials silent for longer than the heartbeat timeout, no longer
        waited for: Keras Tuner's chief ends only once every worker it has seen has been told
        to stop, and one killed between two trials never asks again (the short soak's chief
        waited for one until its time ran out). One that comes back asks as a new worker."""
        if self.attendance is None:
            return []
        idle = [w for w in self.tuner_ids if w not in self.ongoing_trials]
        gone = self.attendance.silent(idle)
        for worker in gone:
            self.tuner_ids.discard(worker)
            self.attendance.forget(worker)
        return gone

    @synchronized
    def requeue(self, trial: Trial, why: str) -> None:
        """Send a trial `take_back` took back to the queue by Keras Tuner's retry path:
        it keeps its id, any worker may take it; FAILED once it has lost `max_requeues`
        workers. The overdue worker leaves the chief's count of workers to wait for."""
        worker = self._taken.get(trial.trial_id)
        self._requeuing = trial.trial_id
        try:
            self.end_trial(Trial(trial.hyperparameters, trial.trial_id, TrialStatus.INVALID, why))
        finally:
            self._requeuing = None
            self._taken.pop(trial.trial_id, None)
            self.tuner_ids.discard(worker)
            if self.attendance is not None and worker is not None:
                self.attendance.forget(worker)

    def _retry(self, trial: Trial) -> bool:
        """Keras Tuner's retry path serves `requeue` only: a trial that failed in training stays
        FAILED, as in a one-process sweep."""
        if trial.trial_id == self._requeuing:
            return bool(super()._retry(trial))
        if trial.status == TrialStatus.INVALID:
            trial.status = TrialStatus.FAILED
        return False

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if self.attendance is not None:
            self._assigned = dict(state["ongoing_trials"])

    def reload(self) -> None:
        """Keras Tuner queues every trial that ran when the chief went down; a watching chief
        gives each back to its worker instead (most likely still training it, and it reports
        to the restarted chief), and takes it back only if that worker stays silent too."""
        super().reload()
        if self.attendance is None:
            return
        queue = self._retry_queue
        for worker, trial_id in self._assigned.items():
            if trial_id not in queue:
                continue
            queue.remove(trial_id)
            trial = self.trials[trial_id]
            if trial.status in (TrialStatus.COMPLETED, TrialStatus.FAILED):
                continue  # it ended as the chief died: neither its worker's nor queued
            # RUNNING, or INVALID as saved: queued again after its worker fell silent, then
            # handed out from the queue, which Keras Tuner saves the holder of, not the status
            trial.status = TrialStatus.RUNNING
            self.ongoing_trials[worker] = trial
            self.tuner_ids.add(worker)

    def _check_consecutive_failures(self) -> None:
        """Keras Tuner's check as each trial ends, raising `ConsecutiveFailures` (its own raises
        a bare RuntimeError). Counts the failures that end the record: trials that failed before
        a resume's first success do not stop the resumed sweep."""
        limit = self.max_consecutive_failed_trials
        ended = [self.trials[i] for i in self.end_order]
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
        tried = [searched_values(t.hyperparameters) for t in self.trials.values()]
        return next((dict(point) for point in self.initial if point not in tried), None)


class InitialFirstOracle(SweepOracle):
    def populate_space(self, trial_id: str) -> dict[str, Any]:
        values = self.next_initial()
        if values is not None:
            return {"status": TrialStatus.RUNNING, "values": values}
        return super().populate_space(trial_id)


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

    #: Keras Tuner's linked list of the trials' ids in grid order, and the ids to go on from
    _ordered_ids: Any
    _populate_next: list[str]

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._populate_next = self._order()

    def _order(self, extra: dict[str, dict[str, Any]] | None = None) -> list[str]:
        values = {
            i: self.trials[i].hyperparameters.values for i in self.start_order if i in self.trials
        }
        values.update(extra or {})

        def compare(a: str, b: str) -> int:  # Keras Tuner's grid order of two trials' values
            return int(self._compare(values[a], values[b]))

        order = sorted(values, key=cmp_to_key(compare))
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
