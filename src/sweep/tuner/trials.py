"""Each trial a nested MLflow run under the sweep's parent, and one console line per trial
(its values and outcome, the best so far, time spent and left).

A trial is logged FINISHED once: a process trains it only when the store holds no FINISHED run
of it, and a distributed worker checks again before it logs one, and that the chief still counts
the trial as its own (`liveness`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import keras_tuner
from keras_tuner.errors import FatalError
from omegaconf import DictConfig

from sweep import leaderboard, pruning, space, tracking, train
from sweep.objective import Objective
from sweep.tracking.callbacks import log_outcome
from sweep.tuner import liveness
from sweep.tuner.hypermodel import AttentionHyperModel, searched_values
from sweep.tuner.oracles import SweepOracle
from sweep.vocabulary import INITIAL_TAG, TRIAL_ID_TAG

if TYPE_CHECKING:
    from keras_tuner.src.distribute.oracle_client import OracleClient

log = logging.getLogger(__name__)

#: How long a worker waits before asking again when the chief answers IDLE (a trial may yet come
#: back to the queue); Keras Tuner itself asks again at once.
IDLE_WAIT_S = 1.0
#: The parent's standing (leaderboard, plots, description) is refreshed after a trial at most
#: this often by each process, and once more as the sweep ends: each refresh reads every trial
#: run of the sweep, and after every trial a 500-trial soak's rate fell from 19 to 9 a minute.
REFRESH_S = 10.0


@dataclass(frozen=True)
class SweepRun:
    """What a tuner's trials are logged under; given to the tuner when its search starts."""

    cfg: DictConfig
    parent_run_id: str
    #: every trial run's tags: the data, the code, and on a distributed worker who ran it
    tags: Mapping[str, str]
    #: what the sweep's standing is made of (its objective: what a better trial is)
    standing: tracking.Standing
    #: (label, Keras Tuner values) of the sweep's initial points, to tag their trials
    initial_labels: Sequence[tuple[str, dict[str, Any]]] = ()

    @property
    def objective(self) -> Objective:
        return self.standing.objective


class TrialTracking(keras_tuner.Tuner):
    """Mixed into a Keras Tuner tuner: each trial a nested MLflow run, one console line each."""

    sweep: SweepRun
    hypermodel: AttentionHyperModel
    #: the sweep's oracle; on a distributed worker, Keras Tuner's gRPC client of the chief's
    oracle: SweepOracle | OracleClient
    #: a distributed worker's proof of life to the chief while it holds a trial
    _heartbeat: liveness.Heartbeat | None

    def search_in(
        self,
        sweep: SweepRun,
        callbacks: list[keras.callbacks.Callback],
        heartbeat: liveness.Heartbeat | None = None,
    ) -> None:
        """Keras Tuner's search, each trial logged as a nested run of `sweep.parent_run_id`; on
        a distributed worker, `heartbeat` beats while it holds a trial."""
        self.sweep, self._heartbeat = sweep, heartbeat
        self.search(callbacks=callbacks)

    @property
    def _shared(self) -> bool:
        """Other processes log trials under the same parent: this is a distributed worker (the
        one kind of process that beats a heartbeat to the chief)."""
        return self._heartbeat is not None

    def _populate_initial_space(self) -> None:
        """Keras Tuner builds models here to find conditional hyperparameters (its hook for such
        overrides); the space is declared whole up front, so no model is built before a trial."""

    def on_search_begin(self) -> None:
        super().on_search_begin()
        self._pruned: dict[str, int] = {}  # trial id -> the epoch median pruning stopped it at
        search = self.sweep.cfg.search
        self._pruner = None
        if search.get("pruning", "none") == "median":
            self._pruner = pruning.Pruner(
                self.sweep.parent_run_id, self.oracle.objective, search.pruning_min_epochs
            )
        self._clock, self._done_before = time.monotonic(), self._done()  # for the ETA
        self._refreshed = -math.inf  # the first trial's standing is shown at once
        self._best = self._best_so_far()
        self._asked = False  # asked the oracle for a trial, and got none yet
        if self._heartbeat is not None:
            self._heartbeat.start()

    def on_search_end(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
        super().on_search_end()

    def pre_create_trial(self) -> None:
        """Keras Tuner asks again at once when the oracle answers IDLE (it waits for trials that
        others run): wait a moment first, so a waiting worker does not flood the chief."""
        super().pre_create_trial()
        if self._asked:
            time.sleep(IDLE_WAIT_S)
        self._asked = True

    def on_trial_begin(self, trial: Any) -> None:
        super().on_trial_begin(trial)
        self._asked = False
        self._unreported = False
        if self._heartbeat is not None:
            self._heartbeat.hold(trial.trial_id)

    def _best_so_far(self) -> float | None:
        """The sweep's best score yet: any worker's when shared, else this oracle's trials'
        (a resumed sweep's earlier ones)."""
        objective = self.sweep.objective
        scores = [t.score for t in self._trials().values() if t.score is not None]
        if self._shared:
            logged = tracking.best_finished(
                self.sweep.parent_run_id, objective.name, objective.direction
            )
            scores += [logged] if logged is not None else []
        return objective.best(s for s in scores if math.isfinite(s))

    def _trials(self) -> dict[str, Any]:
        """The oracle's trials; none on a distributed worker, whose oracle is a gRPC client."""
        return getattr(self.oracle, "trials", None) or {}

    def on_epoch_end(
        self, trial: Any, model: keras.Model, epoch: int, logs: dict[str, float] | None = None
    ) -> None:
        super().on_epoch_end(trial, model, epoch, logs)
        self._model = model

    def _run_and_update_trial(self, trial: Any, *args: Any, **kwargs: Any) -> None:
        """Keras Tuner's run and report of a trial. One the chief took back from this worker
        ends here, neither reported nor logged (`on_trial_end` skips it): it did not fail, so
        Keras Tuner prints no traceback for it."""
        try:
            super()._run_and_update_trial(trial, *args, **kwargs)
        except liveness.TrialLost as lost:
            self._unreported = True
            log.warning("%s: not reported by this worker", lost)

    def run_trial(self, trial: keras_tuner.engine.trial.Trial, *args: Any, **kwargs: Any) -> Any:
        """The trial in its own MLflow run. Losing the tracking server stops the sweep instead of
        failing the trial: the oracle keeps it open, so re-running the command retries it."""
        try:
            return self._tracked_trial(trial, *args, **kwargs)
        except Exception as err:
            if tracking.unreachable(err):
                raise FatalError(tracking.gone_message(err)) from None
            raise

    def _tracked_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        logged = self._logged(trial.trial_id)
        if logged is not None:
            log.info("trial %s is logged FINISHED already; not run again", trial.trial_id)
            return logged
        tags = {**self.sweep.tags, TRIAL_ID_TAG: trial.trial_id, **self._initial_tag(trial)}
        try:
            with tracking.tracked_run(
                nested=True,
                parent_run_id=self.sweep.parent_run_id,
                run_name=f"trial-{trial.trial_id}",
                tags=tags,
            ):
                try:
                    cfg = self.hypermodel.trial_config(trial.hyperparameters)
                    tracking.log_config(cfg)
                    tracking.log_hyperparameters(searched_values(trial.hyperparameters))
                    histories, seconds = self._fit(trial, *args, **kwargs)
                    self._claim(trial.trial_id)
                    with self._working("logging the outcome"):  # tracing, uploading the model
                        self._log_outcome(cfg, [h.history for h in histories], seconds)
                    # again as the run is about to end FINISHED: a worker stopped while it
                    # logged (SIGSTOP, a paused VM) may have lost the trial meanwhile, and its
                    # FINISHED would overwrite the chief's KILLED (the soak found 4 in 500)
                    self._claim(trial.trial_id)
                except tracking.Superseded:
                    raise
                except Exception as err:  # the reason beside the run, wherever it failed
                    tracking.log_failure(err)
                    raise
        except liveness.Duplicate as duplicate:
            log.info("%s; reporting that result", duplicate)
            return duplicate.result
        return histories

    def _working(self, what: str) -> AbstractContextManager[None]:
        """On a distributed worker, `what` counts as progress while it runs (it has no batches)."""
        return nullcontext() if self._heartbeat is None else self._heartbeat.working(what)

    def _logged(self, trial_id: str) -> dict[str, float] | None:
        """The objective of this trial's FINISHED run, if the store holds one (logged before an
        interruption, or by another worker): it is reported instead of training again."""
        return tracking.finished_trial(
            self.sweep.parent_run_id, trial_id, self.sweep.objective.name
        )

    def _claim(self, trial_id: str) -> None:
        """Before a distributed worker logs a trial FINISHED: the chief still counts the trial as
        this worker's (else TrialLost), and no other run logged it FINISHED meanwhile (else
        Duplicate, carrying that result)."""
        if self._heartbeat is None:
            return
        if not self._heartbeat.still_holds():
            raise liveness.TrialLost(trial_id)
        logged = self._logged(trial_id)
        if logged is not None:
            raise liveness.Duplicate(trial_id, logged)

    def _fit(self, trial: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
        """Keras Tuner's fit of the trial (each execution), its seconds; with median pruning,
        stopped early (and tagged so) when it falls below the earlier trials' median."""
        stop = self._pruner.callback() if self._pruner is not None else None
        if stop is not None:
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), stop]
        if self._heartbeat is not None:  # first: a callback that blocks stops the count
            progress = liveness.Progress(self._heartbeat, trial.trial_id)
            kwargs["callbacks"] = [progress, *kwargs.get("callbacks", [])]
        started = time.perf_counter()
        histories = super().run_trial(trial, *args, **kwargs)
        seconds = time.perf_counter() - started
        if stop is not None and stop.pruned_at is not None:
            tracking.log_pruned(stop.pruned_at)
            self._pruned[trial.trial_id] = stop.pruned_at
        return histories, seconds

    def _log_outcome(
        self, cfg: DictConfig, runs: list[dict[str, list[float]]], seconds: float
    ) -> None:
        """The trial's score (the mean over its executions), curves and figures; its model too
        when `tracking.log_models` asks and it is the best so far (ties count)."""
        objective = self.sweep.objective
        score = sum(tracking.best_value(h, objective.name, objective.direction) for h in runs)
        score /= len(runs)
        if self._shared:  # the best so far may be another worker's
            self._best = tracking.best_finished(
                self.sweep.parent_run_id, objective.name, objective.direction
            )
        is_best = self._best is None or objective.better(self._best, score) == score
        log_models = self.sweep.cfg.tracking.log_models
        log_outcome(
            self._model,
            runs,
            seconds,
            self.hypermodel.arrays(cfg).x_val,
            train.preprocessing(cfg, self.hypermodel.encoded_for(cfg)),
            log_model=log_models == "all" or (log_models == "best" and is_best),
            log_figures=self.sweep.cfg.tracking.log_figures,
            objective=objective.name,
            direction=objective.direction,
        )
        if is_best:
            self._best = score

    def _initial_tag(self, trial: Any) -> dict[str, str]:
        """`initial`: base, best_of=NAME or given, for a trial that is a `search.initial` point."""
        values = searched_values(trial.hyperparameters)
        labels = self.sweep.initial_labels
        label = next((name for name, point in labels if point == values), None)
        return {INITIAL_TAG: label} if label else {}

    def _done(self) -> int:
        """Trials ended (finished or failed) in this sweep so far, by any process."""
        trials = self._trials()
        if trials:
            return sum(t.status in ("COMPLETED", "FAILED") for t in trials.values())
        return tracking.trials_done(self.sweep.parent_run_id)

    def on_trial_end(self, trial: Any) -> None:
        """One line: trial i/N, its values and outcome, the best so far, time spent and left
        (the mean time per trial this command has seen, times the trials left). A trial the
        chief gave to another worker is not reported (nor counted) here."""
        if not self._unreported:
            super().on_trial_end(trial)
        if self._heartbeat is not None:  # held (and beating) until the chief has the report
            self._heartbeat.hold(None)
        if self._unreported:
            return
        done, total = self._done(), self.sweep.cfg.search.max_trials
        values = ", ".join(
            f"{k.rsplit('.', 1)[-1]}={leaderboard.shown(space.label(v))}"
            for k, v in searched_values(trial.hyperparameters).items()
        )
        best = f"{self._best:.4f}" if self._best is not None else "-"
        elapsed = time.monotonic() - self._clock
        log.info(
            "trial %d/%d  %s  ->  %s  (best %s)  elapsed %s, ETA %s",
            done,
            total,
            values,
            self._outcome(trial.trial_id),
            best,
            _span(elapsed),
            self._eta(max(total - done, 0), elapsed, done - self._done_before),
        )
        if time.monotonic() - self._refreshed >= REFRESH_S:
            tracking.log_leaderboard(self.sweep.parent_run_id, self.sweep.standing)
            self._refreshed = time.monotonic()

    def _outcome(self, trial_id: str) -> str:
        """The trial's score (and where pruning stopped it), or why it did not finish."""
        stored = self.oracle.get_trial(trial_id)
        if stored.status != "COMPLETED":
            why = (stored.message or "").strip().splitlines()
            return f"{stored.status}: {why[-1] if why else '?'}"
        outcome = f"{self.sweep.objective.name}={stored.score:.4f}"
        if trial_id in self._pruned:
            outcome += f", pruned at epoch {self._pruned[trial_id]}"
        return outcome

    def _eta(self, left: int, elapsed: float, ended: int) -> str:
        """The `left` trials at the mean time of the `ended` ones; no later than the time budget
        allows (no trial starts after it, the one started before it ends is waited for)."""
        if not left:
            return "0s"
        if not ended:
            return "-"
        mean = elapsed / ended
        seconds = mean * left
        budget, clock = getattr(self.oracle, "budget", None), getattr(self.oracle, "clock", None)
        if budget is not None and clock is not None:
            remaining = budget[1] - (time.monotonic() - clock)
            seconds = min(seconds, remaining + mean if remaining > 0 else 0.0)
        return _span(seconds)


def _span(seconds: float) -> str:
    """A duration for people: 45s, 3m05s, 2h07m."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
