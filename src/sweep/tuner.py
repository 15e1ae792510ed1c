"""The sweep: Keras Tuner's oracle picks values, the hypermodel builds and fits, the tuner runs
each trial inside a nested MLflow run.

Tuner state lives in `sweeps/<name>/`; re-running the same command resumes the sweep. MLflow is
the record: a trial already logged FINISHED is never trained or logged again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from functools import cmp_to_key
from pathlib import Path
from typing import Any

import keras
import keras_tuner
from keras_tuner.errors import FailedTrialError, FatalError
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from sweep import data, leaderboard, pruning, space, tracking, train
from sweep.errors import ConfigError, SweepError, first_line
from sweep.model import build_model
from sweep.schema import parse_duration

log = logging.getLogger(__name__)

#: Keras Tuner's project directory inside `sweeps/<name>/`.
PROJECT = "tuner"
#: The sweep's identity on disk: its parent run and the settings it was started with.
STATE_FILE = "sweep.json"
#: The parent run's tag that says why the search ended.
STOP_REASON = "stop_reason"
#: Config sections that do not change what a trial computes, so a resume may change them.
RESUMABLE_CHANGES = (
    "tracking",
    "sweep",
    "export",
    "distributed",
    "data.path",
    "data.cache_dir",
    "train.verbose",
    "search.time_budget",
    "search.initial",
)


class AttentionHyperModel(keras_tuner.HyperModel):
    """Builds and fits the classifier for one trial's values; knows nothing of MLflow."""

    def __init__(self, cfg: DictConfig, encoded: data.Encoded) -> None:
        super().__init__(name="attention_classifier")
        self.cfg, self.encoded = cfg, encoded
        self._encoded = {cfg.data.num_words: encoded}
        self._arrays: dict[tuple[Any, ...], train.Arrays] = {}

    def trial_config(self, hp: keras_tuner.HyperParameters) -> DictConfig:
        values = {k: v for k, v in hp.values.items() if not k.startswith("tuner/")}
        try:
            return space.apply(self.cfg, self.cfg.search.space, values)
        except ConfigError as err:
            raise FailedTrialError(f"invalid combination: {err}") from None

    def encoded_for(self, cfg: DictConfig) -> data.Encoded:
        """The reviews tokenised for this trial's vocabulary (`data.num_words` is searchable):
        each size read once per sweep, from the cache after its first sweep."""
        if cfg.data.num_words not in self._encoded:
            self._encoded[cfg.data.num_words] = train.load(cfg)
        return self._encoded[cfg.data.num_words]

    def arrays(self, cfg: DictConfig) -> train.Arrays:
        """Cut once per vocabulary and sequence length per sweep: cheap, re-tokenising never."""
        key = (cfg.data.num_words, cfg.data.seq_len, cfg.data.padding, cfg.data.truncating)
        if key not in self._arrays:
            self._arrays[key] = train.arrays(self.encoded_for(cfg), cfg)
        return self._arrays[key]

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        cfg = self.trial_config(hp)
        keras.utils.set_random_seed(cfg.seed)
        return build_model(cfg)

    def fit(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any
    ) -> keras.callbacks.History:
        cfg = self.trial_config(hp)
        history = train.fit(model, cfg, self.arrays(cfg), **kwargs)
        losses = history.history.get("loss", [])
        if any(not math.isfinite(v) for v in losses):
            epoch = next(i for i, v in enumerate(losses) if not math.isfinite(v)) + 1
            raise FailedTrialError(f"loss became NaN at epoch {epoch}")
        return history


class TrialTracking:
    """Mixed into a Keras Tuner tuner: each trial a nested MLflow run, one console line each."""

    parent_run_id: str
    sweep_cfg: DictConfig
    #: (label, Keras Tuner values) of the sweep's initial points, to tag their trials
    initial_labels: Sequence[tuple[str, dict[str, Any]]] = ()
    hypermodel: AttentionHyperModel
    oracle: keras_tuner.Oracle

    def _populate_initial_space(self) -> None:
        """Keras Tuner builds models here to find conditional hyperparameters (its hook for such
        overrides); the space is declared whole up front, so no model is built before a trial."""

    def on_search_begin(self) -> None:
        super().on_search_begin()  # type: ignore[misc]
        self._best: float | None = None
        self._failures_in_a_row = 0
        self._pruned: dict[str, int] = {}  # trial id -> the epoch median pruning stopped it at
        search = self.sweep_cfg.search
        self._pruner = None
        if search.get("pruning", "none") == "median":
            self._pruner = pruning.Pruner(
                self.parent_run_id, self.oracle.objective, search.pruning_min_epochs
            )
        self._clock, self._done_before = time.monotonic(), self._done()  # for the ETA
        if self._shared:
            self._best = tracking.best_finished(
                self.parent_run_id, self.sweep_cfg.search.objective, self.sweep_cfg.search.direction
            )
        for trial in self._trials().values():
            if trial.score is not None and math.isfinite(trial.score):
                self._best = (
                    trial.score if self._best is None else self._pick(self._best, trial.score)
                )

    @property
    def _shared(self) -> bool:
        """A distributed worker: other workers log trials under the same parent."""
        return (self.sweep_cfg.get("distributed") or {}).get("role") == "worker"

    def _trials(self) -> dict[str, Any]:
        """The oracle's trials; none on a distributed worker, whose oracle is a gRPC client."""
        return getattr(self.oracle, "trials", None) or {}

    def _pick(self, a: float, b: float) -> float:
        return max(a, b) if self.sweep_cfg.search.direction == "max" else min(a, b)

    def on_epoch_end(
        self, trial: Any, model: keras.Model, epoch: int, logs: dict[str, float] | None = None
    ) -> None:
        super().on_epoch_end(trial, model, epoch, logs)  # type: ignore[misc]
        self._model = model

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
        objective = self.sweep_cfg.search.objective
        logged = tracking.finished_trial(self.parent_run_id, trial.trial_id, objective)
        if logged is not None:
            log.info(
                "trial %s was logged FINISHED before an interruption; not re-run", trial.trial_id
            )
            return logged
        cfg = None
        tags = {**self._tags, "trial_id": trial.trial_id, **self._initial_tag(trial)}
        with tracking.tracked_run(
            nested=True,
            parent_run_id=self.parent_run_id,
            run_name=f"trial-{trial.trial_id}",
            tags=tags,
        ):
            try:
                cfg = self.hypermodel.trial_config(trial.hyperparameters)
                tracking.log_config(cfg)
                tracking.log_hyperparameters(self._values(trial))
                histories, seconds = self._fit(trial, *args, **kwargs)
            except Exception as err:
                tracking.log_failure(err)
                raise
            direction = self.sweep_cfg.search.direction
            runs = [h.history for h in histories]
            score = sum(tracking.best_value(h, objective, direction) for h in runs) / len(runs)
            if self._shared:  # the best so far may be another worker's
                self._best = tracking.best_finished(self.parent_run_id, objective, direction)
            is_best = self._best is None or self._pick(self._best, score) == score
            log_model = self.sweep_cfg.tracking.log_models == "all" or (
                self.sweep_cfg.tracking.log_models == "best" and is_best
            )
            tracking.log_outcome(
                self._model,
                runs,
                seconds,
                self.hypermodel.arrays(cfg).x_val,
                self.hypermodel.encoded_for(cfg).vocabulary,
                log_model=log_model,
                objective=objective,
                direction=direction,
            )
            if is_best:
                self._best = score
        return histories

    def _fit(self, trial: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
        """Keras Tuner's fit of the trial (each execution), its seconds; with median pruning,
        stopped early (and tagged so) when it falls below the earlier trials' median."""
        stop = self._pruner.callback() if self._pruner is not None else None
        if stop is not None:
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), stop]
        started = time.perf_counter()
        histories = super().run_trial(trial, *args, **kwargs)  # type: ignore[misc]
        seconds = time.perf_counter() - started
        if stop is not None and stop.pruned_at is not None:
            tracking.log_pruned(stop.pruned_at)
            self._pruned[trial.trial_id] = stop.pruned_at
        return histories, seconds

    def _initial_tag(self, trial: Any) -> dict[str, str]:
        """`initial`: base, best_of=NAME or given, for a trial that is a `search.initial` point."""
        values = self._values(trial)
        label = next((name for name, point in self.initial_labels if point == values), None)
        return {"initial": label} if label else {}

    def _values(self, trial: Any) -> dict[str, Any]:
        return {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}

    def _done(self) -> int:
        """Trials ended (finished or failed) in this sweep so far, by any process."""
        trials = self._trials()
        if trials:
            return sum(t.status in ("COMPLETED", "FAILED") for t in trials.values())
        return tracking.trials_done(self.parent_run_id)

    def on_trial_end(self, trial: Any) -> None:
        """One line: trial i/N, its values and outcome, the best so far, time spent and left
        (the mean time per trial this command has seen, times the trials left)."""
        super().on_trial_end(trial)  # type: ignore[misc]
        done, total = self._done(), self.sweep_cfg.search.max_trials
        values = ", ".join(
            f"{k.rsplit('.', 1)[-1]}={leaderboard.shown(space.label(v))}"
            for k, v in self._values(trial).items()
        )
        stored = self.oracle.get_trial(trial.trial_id)
        if stored.status == "COMPLETED":
            outcome = f"{self.sweep_cfg.search.objective}={stored.score:.4f}"
            if trial.trial_id in self._pruned:
                outcome += f", pruned at epoch {self._pruned[trial.trial_id]}"
        else:
            why = (stored.message or "").strip().splitlines()
            outcome = f"{stored.status}: {why[-1] if why else '?'}"
        best = f"{self._best:.4f}" if self._best is not None else "-"
        elapsed = time.monotonic() - self._clock
        log.info(
            "trial %d/%d  %s  ->  %s  (best %s)  elapsed %s, ETA %s",
            done,
            total,
            values,
            outcome,
            best,
            _span(elapsed),
            self._eta(max(total - done, 0), elapsed, done - self._done_before),
        )
        tracking.log_leaderboard(self.parent_run_id, self.sweep_cfg)

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
    def create_trial(self, tuner_id: str) -> keras_tuner.engine.trial.Trial:
        ongoing = tuner_id in self.ongoing_trials  # type: ignore[attr-defined]
        if not ongoing and self._budget_spent():
            n = self.started
            self.stop_reason = f"time budget {self.budget[0]} spent after {n} trial{'s' * (n != 1)}"
            self.tuner_ids.discard(tuner_id)  # type: ignore[attr-defined]
            return keras_tuner.engine.trial.Trial(
                self.get_space(),  # type: ignore[attr-defined]
                status=keras_tuner.engine.trial.TrialStatus.STOPPED,
            )
        trial = super().create_trial(tuner_id)  # type: ignore[misc]
        if not ongoing and trial.status == keras_tuner.engine.trial.TrialStatus.RUNNING:
            self.started += 1
        return trial

    def next_initial(self) -> dict[str, Any] | None:
        """The first initial point no trial of this sweep has tried yet (resumes skip them)."""
        tried = [
            {k: v for k, v in t.hyperparameters.values.items() if not k.startswith("tuner/")}
            for t in self.trials.values()  # type: ignore[attr-defined]
        ]
        return next((dict(point) for point in self.initial if point not in tried), None)


class InitialFirstOracle(SweepOracle):
    def populate_space(self, trial_id: str) -> dict[str, Any]:
        values = self.next_initial()
        if values is not None:
            return {"status": keras_tuner.engine.trial.TrialStatus.RUNNING, "values": values}
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


class RandomSweep(TrialTracking, keras_tuner.Tuner):
    """Random search over the declared space."""


class BayesianSweep(TrialTracking, keras_tuner.Tuner):
    """Gaussian-process Bayesian optimisation over the declared space."""


class HyperbandSweep(TrialTracking, keras_tuner.Hyperband):
    """Hyperband: many short trials, the promising ones trained on."""

    def __init__(self, oracle: HyperbandOracle, hypermodel: Any, **kwargs: Any) -> None:
        # keras_tuner.Hyperband.__init__ only builds its own oracle: the sweep brings one
        keras_tuner.Tuner.__init__(self, oracle, hypermodel, **kwargs)


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
        return {"status": keras_tuner.engine.trial.TrialStatus.RUNNING, "values": values}


class GridSweep(TrialTracking, keras_tuner.Tuner):
    """Every combination of the declared (discrete) space, in order."""


def build_tuner(
    cfg: DictConfig,
    hypermodel: AttentionHyperModel,
    directory: Path,
    *,
    overwrite: bool,
    initial: list[dict[str, Any]] | None = None,
) -> keras_tuner.Tuner:
    """The Keras Tuner tuner `search.tuner` names, its state in `directory`; `initial` points
    (Keras Tuner values) are tried before the tuner's own."""
    search, initial = cfg.search, list(initial or [])
    objective = keras_tuner.Objective(search.objective, direction=search.direction)
    defaults = initial[0] if initial and search.tuner == "grid" else None
    common: dict[str, Any] = {
        "hyperparameters": space.hyperparameters(search.space, defaults),
        "tune_new_entries": False,
        "allow_new_entries": False,
        "max_retries_per_trial": 0,
        "max_consecutive_failed_trials": search.max_consecutive_failures,
        "seed": cfg.seed,
        "objective": objective,
    }
    where = {
        "directory": str(directory),
        "project_name": PROJECT,
        "overwrite": overwrite,
        "executions_per_trial": search.executions_per_trial,
    }
    oracle: SweepOracle
    if search.tuner == "hyperband":
        oracle = HyperbandOracle(
            max_epochs=cfg.train.epochs, factor=search.hyperband_factor, **common
        )
        tuner: keras_tuner.Tuner = HyperbandSweep(oracle, hypermodel, **where)
    else:
        oracle_class, tuner_class = {
            "random": (RandomOracle, RandomSweep),
            "bayesian": (BayesianOracle, BayesianSweep),
            "grid": (ResumableGridSearchOracle, GridSweep),
        }[search.tuner]
        oracle = oracle_class(max_trials=search.max_trials, **common)
        tuner = tuner_class(oracle, hypermodel, **where)
    oracle.initial = initial
    if search.get("time_budget") is not None:
        oracle.budget = (
            str(search.time_budget),
            parse_duration("search.time_budget", search.time_budget),
        )
    tuner.oracle.verbose = 0  # our one line per trial replaces Keras Tuner's dump
    return tuner


def _compared(cfg: DictConfig) -> dict[str, Any]:
    flat = tracking.flatten(cfg)
    if flat.get("search.pruning", "none") == "none":  # as sweeps started before pruning saved
        flat = {k: v for k, v in flat.items() if not k.startswith("search.pruning")}
    return {
        k: v
        for k, v in flat.items()
        if not any(k == p or k.startswith(p + ".") for p in RESUMABLE_CHANGES)
    }


def _resume_or_start(cfg: DictConfig, directory: Path, experiment: str) -> str | None:
    """The parent run to continue, or None for a fresh sweep; refuses a changed sweep."""
    state_file = directory / STATE_FILE
    if cfg.sweep.overwrite and directory.exists():
        log.warning(
            "sweep.overwrite=true: starting %s afresh (MLflow keeps the old runs)", directory
        )
        shutil.rmtree(directory)
    if not state_file.exists():
        return None
    state = json.loads(state_file.read_text())
    before, now = state["config"], _compared(cfg)
    changed = [
        f"{k}: {before.get(k)} -> {now.get(k)}"
        for k in sorted(set(before) | set(now))
        if before.get(k) != now.get(k)
    ]
    if changed:
        raise SweepError(
            f"{directory} was started with other settings ({'; '.join(changed)}); re-run with "
            "the original values to resume it, or add sweep.overwrite=true to start afresh"
        )
    return tracking.existing_run(state["parent_run_id"], experiment)


def _save_state(directory: Path, cfg: DictConfig, parent_run_id: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{STATE_FILE}.tmp"
    tmp.write_text(
        json.dumps(
            {"parent_run_id": parent_run_id, "config": _compared(cfg)}, indent=1, default=str
        )
    )
    os.replace(tmp, directory / STATE_FILE)


def run(cfg: DictConfig) -> float:
    """Run (or resume) the sweep `cfg` declares; returns the best objective value.

    `distributed.role` makes this process Keras Tuner's chief (it serves trials and owns the
    parent run) or a worker; `sweep.workers=N` starts a chief and N workers here instead.
    """
    from sweep import distributed

    if cfg.sweep.workers and cfg.distributed.role == "none":
        return distributed.launch(cfg)
    role = distributed.activate(cfg)  # before the tuner is built: Keras Tuner reads it then
    if role != "none":
        distributed.wait_for_tracking(cfg)
    if role == "worker":
        return _work(cfg)
    directory = Path(cfg.sweep.dir) / cfg.name
    tracking.configure(cfg.tracking)
    initial = initial_points(cfg)
    experiment = tracking.use_experiment(cfg.name, cfg.tracking)
    parent_id = _resume_or_start(cfg, directory, experiment)
    encoded = train.load(cfg)
    if role == "chief":  # live workers may be on this sweep's trials: leave those open
        tracking.close_stale_runs_outside(experiment, parent_id)
    else:
        tracking.close_stale_runs(experiment)
    hypermodel = AttentionHyperModel(cfg, encoded)
    tuner = build_tuner(
        cfg,
        hypermodel,
        directory,
        overwrite=parent_id is None,
        initial=[point for _, point in initial],
    )
    tuner.initial_labels = initial
    tags = tracking.standard_tags(cfg, encoded)
    with tracking.tracked_run(
        run_id=parent_id,
        experiment_id=experiment,
        run_name=None if parent_id else f"{cfg.name}-sweep",
        tags={**tags, "sweep": cfg.name, **distributed.parent_tags(cfg)},
    ) as parent:
        if parent_id is None:
            tracking.log_sweep_settings(cfg)
            _save_state(directory, cfg, parent.info.run_id)
        tuner.parent_run_id, tuner.sweep_cfg, tuner._tags = parent.info.run_id, cfg, tags
        try:
            tuner.oracle.start_clock()
            tuner.search(callbacks=_callbacks(cfg))
        except FatalError as err:
            raise SweepError(f"sweep stopped: {first_line(err)}") from None
        except Exception as err:
            if "consecutive failures" in str(err):
                MlflowClient().set_tag(parent.info.run_id, STOP_REASON, first_line(err))
                raise SweepError(f"sweep stopped: {first_line(err)}") from None
            if tracking.unreachable(err):
                raise SweepError(f"sweep stopped: {tracking.gone_message(err)}") from None
            raise
        if role == "chief":  # every trial has ended: a RUNNING one lost its worker
            tracking.close_open_trials(parent.info.run_id)
        reason = _stop_reason(tuner.oracle, cfg)
        MlflowClient().set_tag(parent.info.run_id, STOP_REASON, reason)
        if tuner.oracle.stop_reason:
            log.info(
                "sweep %s stopped: %s; re-run the same command to go on (with a fresh budget)",
                cfg.name,
                reason,
            )
        best = tracking.log_leaderboard(parent.info.run_id, cfg)
    shown = "-" if best is None else f"{best:.4f}"
    log.info("sweep %s done: best %s = %s", cfg.name, cfg.search.objective, shown)
    return float(best) if best is not None else float("nan")


def _stop_reason(oracle: SweepOracle, cfg: DictConfig) -> str:
    """Why the search ended, in words, for the parent run's `stop_reason` tag."""
    if oracle.stop_reason:
        return oracle.stop_reason
    n = len(oracle.trials)  # type: ignore[attr-defined]
    max_trials = getattr(oracle, "max_trials", None)
    if max_trials and n >= max_trials:
        return f"max_trials {max_trials} reached"
    return f"the {cfg.search.tuner} tuner has no further trials after {n}"


def initial_points(cfg: DictConfig) -> list[tuple[str, dict[str, Any]]]:
    """`search.initial` resolved: (label, Keras Tuner values) per point, in order, each once;
    `base` is left out (and a line says why) when the config's values are no point of the space."""
    points: list[tuple[str, dict[str, Any]]] = []
    for i, entry in enumerate(cfg.search.get("initial") or []):
        if entry == space.BASE:
            point, why = space.base_point(cfg)
            if point is None:
                log.info("search.initial: base left out: %s", why)
                continue
            label = space.BASE
        elif "best_of" in entry:
            key, label = f"search.initial[{i}].best_of", f"best_of={entry.best_of}"
            given = _best_of(cfg, key, str(entry.best_of))
            try:
                point = space.initial_point(cfg, given)
            except ValueError as err:
                raise ConfigError(key, entry.best_of, f"its best trial's {err}") from None
        else:
            label = "given"
            point = space.initial_point(cfg, OmegaConf.to_container(entry, resolve=True))
        if all(point != other for _, other in points):
            points.append((label, point))
    return points


def _best_of(cfg: DictConfig, key: str, name: str) -> dict[str, Any]:
    """The values the best finished trial of sweep `name` (its newest, in this MLflow store)
    searched, for the keys this sweep searches too."""
    parent = tracking.sweep_parent(name)
    if parent is None:
        raise ConfigError(key, name, f"no sweep of that name in {cfg.tracking.uri}")
    objective = parent.data.params.get("search.objective", cfg.search.objective)
    direction = parent.data.params.get("search.direction", cfg.search.direction)
    metric = f"best_{objective}"
    finished = [
        r
        for r in tracking.trial_runs(parent.info.run_id)
        if r.info.status == "FINISHED" and math.isfinite(r.data.metrics.get(metric, math.nan))
    ]
    if not finished:
        raise ConfigError(key, name, "that sweep has no finished trial yet")
    pick = max if direction == "max" else min
    best = pick(finished, key=lambda r: r.data.metrics[metric])
    searched = [k.strip() for k in best.data.tags.get("hyperparameters", "").split(",")]
    config = OmegaConf.create(tracking.run_config(best.info.run_id))
    return {k: OmegaConf.select(config, k) for k in searched if k in cfg.search.space}


def _work(cfg: DictConfig) -> float:
    """A distributed worker: trials come from the chief's oracle, each is logged under the
    chief's parent run; returns the sweep's best so far."""
    from sweep import distributed

    distributed.wait_for_chief(cfg)
    tracking.configure(cfg.tracking)
    experiment = tracking.use_experiment(cfg.name, cfg.tracking)
    parent_id = distributed.find_parent(cfg, experiment)
    encoded = train.load(cfg)
    # a worker restarted under the same id: its predecessor died on these (it gets them back)
    tracking.close_open_trials(parent_id, worker_id=str(cfg.distributed.worker_id))
    hypermodel = AttentionHyperModel(cfg, encoded)
    # the chief's directory when shared: Hyperband continues trials from their checkpoints
    tuner = build_tuner(cfg, hypermodel, Path(cfg.sweep.dir) / cfg.name, overwrite=False)
    tags = {**tracking.standard_tags(cfg, encoded), **distributed.worker_tags(cfg)}
    tuner.parent_run_id, tuner.sweep_cfg, tuner._tags = parent_id, cfg, tags
    tuner.initial_labels = initial_points(cfg)  # the chief's oracle tries them; tag their trials
    log.info(
        "worker %s joined sweep %s (parent run %s)", cfg.distributed.worker_id, cfg.name, parent_id
    )
    try:
        tuner.search(callbacks=_callbacks(cfg))
    except Exception as err:  # the chief's oracle raises it; gRPC carries it over
        if "consecutive failures" in str(err):
            raise SweepError(
                "sweep stopped: too many consecutive failures (see the chief)"
            ) from None
        raise
    best = tracking.best_finished(parent_id, cfg.search.objective, cfg.search.direction)
    log.info("worker %s done: the chief has no trials left", cfg.distributed.worker_id)
    return float(best) if best is not None else float("nan")


def _callbacks(cfg: DictConfig) -> list[keras.callbacks.Callback]:
    callbacks: list[keras.callbacks.Callback] = [
        tracking.EpochMetrics(),
        keras.callbacks.TerminateOnNaN(),
        train.StopOnInterrupt(),
    ]
    if cfg.search.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=cfg.search.objective,
                mode=cfg.search.direction,
                patience=cfg.search.patience,
            )
        )
    return callbacks
