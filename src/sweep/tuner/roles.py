"""One process's part in a sweep, decided once from `distributed.role`.

A lone process and a distributed chief own the sweep's parent run: they create or resume it,
close it, and say why the search ended. A worker logs its trials under the chief's. Every step
where the three differ is a method here; `search.run` calls the same steps for each.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar

import grpc
import keras
from keras_tuner.errors import FatalError
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweep import cluster, tracking
from sweep.errors import SweepError, first_line
from sweep.schema import CHIEF_WORD
from sweep.tuner import confirm, liveness, replicates, serving
from sweep.tuner.hypermodel import AttentionHyperModel
from sweep.tuner.oracles import ConsecutiveFailures, SweepOracle
from sweep.tuner.state import SweepState, resume_or_start
from sweep.tuner.trials import SweepRun, TrialTracking
from sweep.tuner.tuners import TunerOptions
from sweep.vocabulary import STOP_REASON_TAG, SWEEP_TAG

log = logging.getLogger(__name__)

#: How gRPC prefixes the text of an exception the chief's servicer raised.
GRPC_APPLICATION = "Exception calling application: "

Initial = list[tuple[str, dict[str, Any]]]


class Found(Protocol):
    """What a process found of its sweep before it starts (`Role.existing_parent`)."""

    @property
    def parent_run_id(self) -> str | None:
        """The parent run to log under; None: a sweep to start."""


@dataclass(frozen=True)
class Joined:
    """What a worker finds: the chief's parent run, open while the chief serves."""

    parent_run_id: str


F = TypeVar("F", bound=Found)


class Role(ABC, Generic[F]):
    """The steps of a sweep that depend on the process's role; `F`: what it finds of the sweep
    before it starts, handed back to it when the parent run opens."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def who(self) -> str:
        """How this process signs its lines in a distributed sweep: the chief (as the owner of
        the parent run, a lone process is its own), or the worker's id."""
        return CHIEF_WORD

    @abstractmethod
    def connect(self) -> None:
        """Wait for what runs elsewhere (the tracking server, the chief)."""

    @abstractmethod
    def existing_parent(self, experiment: str) -> F:
        """The parent run to log under when there is one already (the owner of the parent run
        reads the sweep's state file here, and refuses a changed one)."""

    @abstractmethod
    def close_leftovers(self, experiment: str, parent_id: str | None) -> None:
        """Mark KILLED what earlier crashes left RUNNING, of the runs this process may close."""

    @abstractmethod
    def tuner_options(self, parent_id: str | None, initial: Initial) -> TunerOptions:
        """How `build_tuner` sets up this role's tuner and oracle."""

    def trial_tags(self) -> dict[str, str]:
        """Tags this process adds to each trial it runs."""
        return {}

    @abstractmethod
    def parent_run(
        self, experiment: str, found: F, tags: dict[str, str]
    ) -> AbstractContextManager[str]:
        """The parent run the trials are logged under, open while the search runs; its id."""

    @abstractmethod
    def search(
        self, tuner: TrialTracking, sweep: SweepRun, callbacks: list[keras.callbacks.Callback]
    ) -> None:
        """Keras Tuner's search; what stops it for good becomes a SweepError."""

    def replicate(
        self, sweep: SweepRun, hypermodel: AttentionHyperModel, callbacks: list[Any]
    ) -> None:
        """Seed repeats of the leaders (`search.replicates`), then the confirmation stage
        (`search.confirm`): run by a lone process only."""
        return

    @abstractmethod
    def summarise(self, oracle: SweepOracle, sweep: SweepRun) -> float:
        """Report how the search went; returns the best objective value so far."""


class Alone(Role[SweepState]):
    """The whole sweep in this process (`distributed.role=none`): it owns the parent run."""

    def connect(self) -> None:
        """Nothing runs elsewhere."""

    def existing_parent(self, experiment: str) -> SweepState:
        return resume_or_start(self.cfg, experiment)

    def close_leftovers(self, experiment: str, parent_id: str | None) -> None:
        tracking.close_stale_runs(experiment)

    def tuner_options(self, parent_id: str | None, initial: Initial) -> TunerOptions:
        return TunerOptions(overwrite=parent_id is None, initial=[point for _, point in initial])

    def parent_tags(self) -> dict[str, str]:
        return {}

    @contextmanager
    def parent_run(self, experiment: str, found: SweepState, tags: dict[str, str]) -> Iterator[str]:
        """The sweep's parent run, created (its settings logged, its state saved) or resumed."""
        name, parent_id = str(self.cfg.name), found.parent_run_id
        with tracking.tracked_run(
            run_id=parent_id,
            experiment_id=experiment,
            run_name=None if parent_id else f"{name}-sweep",
            tags={**tags, SWEEP_TAG: name, **self.parent_tags()},
        ) as parent:
            if parent_id is None:
                tracking.log_sweep_settings(self.cfg)
                found.save(parent.info.run_id)
            yield parent.info.run_id

    def search(
        self, tuner: TrialTracking, sweep: SweepRun, callbacks: list[keras.callbacks.Callback]
    ) -> None:
        """The search; a stop the user must act on is a SweepError (the parent run FAILED)."""
        tuner.oracle.start_clock()
        try:
            self.run_search(tuner, sweep, callbacks)
        except FatalError as err:  # raised by TrialTracking.run_trial: tracking went away
            raise SweepError(f"sweep stopped: {first_line(err)}") from None
        except ConsecutiveFailures as err:
            MlflowClient().set_tag(sweep.parent_run_id, STOP_REASON_TAG, str(err))
            raise SweepError(f"sweep stopped: {err}") from None
        except Exception as err:
            if tracking.unreachable(err):
                raise SweepError(f"sweep stopped: {tracking.gone_message(err)}") from None
            raise

    def run_search(
        self, tuner: TrialTracking, sweep: SweepRun, callbacks: list[keras.callbacks.Callback]
    ) -> None:
        """Keras Tuner's search, each trial trained and logged by this process."""
        tuner.search_in(sweep, callbacks)

    def replicate(
        self, sweep: SweepRun, hypermodel: AttentionHyperModel, callbacks: list[Any]
    ) -> None:
        replicates.run(sweep, hypermodel, callbacks)
        confirm.run(sweep, hypermodel, callbacks)

    def summarise(self, oracle: SweepOracle, sweep: SweepRun) -> float:
        """Why the search ended (a tag; a line when re-running goes on), the leaderboard."""
        cfg, parent_id = self.cfg, sweep.parent_run_id
        reason = _stop_reason(oracle, str(cfg.search.tuner))
        MlflowClient().set_tag(parent_id, STOP_REASON_TAG, reason)
        if oracle.stop_reason:
            log.info(
                "sweep %s stopped: %s; re-run the same command to go on (with a fresh budget)",
                cfg.name,
                reason,
            )
        best = tracking.log_leaderboard(parent_id, sweep.standing)
        shown = "-" if best is None else f"{best:.4f}"
        log.info("sweep %s done: best %s = %s", cfg.name, cfg.search.objective, shown)
        return float(best) if best is not None else math.nan


class Chief(Alone):
    """Keras Tuner's chief (`distributed.role=chief`): serves trials to workers over gRPC and
    trains none; owns the parent run like a lone process."""

    def connect(self) -> None:
        cluster.wait_for_tracking(self.cfg)

    def close_leftovers(self, experiment: str, parent_id: str | None) -> None:
        # live workers may be on this sweep's trials: leave those open
        tracking.close_stale_runs_outside(experiment, parent_id)

    def parent_tags(self) -> dict[str, str]:
        return cluster.parent_tags(self.cfg)

    def tuner_options(self, parent_id: str | None, initial: Initial) -> TunerOptions:
        # trials of workers that fall silent, or make no progress, go back to the queue
        dist = self.cfg.distributed
        timeouts = (float(dist.heartbeat_timeout_s), int(dist.max_requeues))
        watch = (*timeouts, _progress_timeout(dist))
        return replace(super().tuner_options(parent_id, initial), watch=watch)

    def run_search(
        self, tuner: TrialTracking, sweep: SweepRun, callbacks: list[keras.callbacks.Callback]
    ) -> None:
        """Serve the oracle to the workers until each has been told to stop: the chief trains
        no trial (its tuner's state saved first, as Keras Tuner's chief does)."""
        tuner.save()
        serving.serve(tuner.oracle, sweep.parent_run_id, self.cfg.distributed)

    def replicate(
        self, sweep: SweepRun, hypermodel: AttentionHyperModel, callbacks: list[Any]
    ) -> None:
        search = self.cfg.search
        if search.replicates.enabled or search.confirm.enabled:  # the chief trains nothing
            log.info(
                "search.replicates/confirm: the chief trains no model; once the sweep is done, "
                "re-run the same command without distributed.role to run them"
            )

    def summarise(self, oracle: SweepOracle, sweep: SweepRun) -> float:
        # every trial has ended: one still RUNNING lost its worker
        tracking.close_open_trials(sweep.parent_run_id)
        return super().summarise(oracle, sweep)


class Worker(Role[Joined]):
    """A distributed worker (`distributed.role=worker`): trials come from the chief's oracle,
    each is logged under the chief's parent run."""

    def who(self) -> str:
        return str(self.cfg.distributed.worker_id)

    def connect(self) -> None:
        cluster.wait_for_tracking(self.cfg)
        cluster.wait_for_chief(self.cfg)

    def existing_parent(self, experiment: str) -> Joined:
        return Joined(cluster.find_parent(self.cfg, experiment))

    def close_leftovers(self, experiment: str, parent_id: str | None) -> None:
        # a worker restarted under the same id: its predecessor died on these (it gets them back)
        tracking.close_open_trials(str(parent_id), worker_id=str(self.cfg.distributed.worker_id))

    def tuner_options(self, parent_id: str | None, initial: Initial) -> TunerOptions:
        # the chief's directory when shared: Hyperband continues trials from their checkpoints;
        # the chief's oracle tries the initial points (this one is its gRPC client)
        return TunerOptions(overwrite=False)

    def trial_tags(self) -> dict[str, str]:
        return cluster.worker_tags(self.cfg)

    @contextmanager
    def parent_run(self, experiment: str, found: Joined, tags: dict[str, str]) -> Iterator[str]:
        """The chief's parent run, as found: the chief opens and closes it."""
        log.info(
            "worker %s joined sweep %s (parent run %s)",
            self.who(),
            self.cfg.name,
            found.parent_run_id,
        )
        yield found.parent_run_id

    def search(
        self, tuner: TrialTracking, sweep: SweepRun, callbacks: list[keras.callbacks.Callback]
    ) -> None:
        """The search, beating a heartbeat to the chief while a trial is held; the chief's oracle
        raising (too many failures in a row) stops it."""
        dist = self.cfg.distributed
        line = liveness.reconnect_quickly(tuner.oracle, dist)
        timeouts = (float(dist.heartbeat_timeout_s), _progress_timeout(dist))
        heartbeat = liveness.Heartbeat(line, self.who(), *timeouts)
        try:
            tuner.search_in(sweep, callbacks, heartbeat)
        except grpc.RpcError as err:
            said = _chief_said(err)
            if said is None:  # no answer: not the chief's verdict, the launcher may restart us
                raise
            raise SweepError(f"sweep stopped: {said} (see the chief)") from None

    def summarise(self, oracle: SweepOracle, sweep: SweepRun) -> float:
        objective = sweep.objective
        best = tracking.best_finished(sweep.parent_run_id, objective.name, objective.direction)
        log.info("worker %s done: the chief has no trials left", self.who())
        return float(best) if best is not None else math.nan


#: `distributed.role` -> what the process does.
ROLES: dict[str, type[Role[Any]]] = {"none": Alone, "chief": Chief, "worker": Worker}


def role_of(cfg: DictConfig) -> Role[Any]:
    """This process's role, with Keras Tuner's environment set for it: before any tuner is
    built, since Keras Tuner reads it then."""
    role = ROLES[str(cfg.distributed.role)](cfg)
    cluster.activate(cfg)
    return role


def _progress_timeout(dist: DictConfig) -> float | None:
    """`distributed.progress_timeout_s` in seconds; None: progress is not watched."""
    timeout = dist.get("progress_timeout_s")
    return None if timeout is None else float(timeout)


def _chief_said(err: grpc.RpcError) -> str | None:
    """What the chief's oracle raised, as gRPC carried it (status UNKNOWN: an exception in the
    servicer); None when the call failed otherwise (no chief, a timeout)."""
    if not isinstance(err, grpc.Call) or err.code() != grpc.StatusCode.UNKNOWN:
        return None
    return first_line(str(err.details() or "")).removeprefix(GRPC_APPLICATION)


def _stop_reason(oracle: SweepOracle, tuner: str) -> str:
    """Why the search ended, in words, for the parent run's `stop_reason` tag."""
    if oracle.stop_reason:
        return oracle.stop_reason
    n = len(oracle.trials)
    max_trials = getattr(oracle, "max_trials", None)
    if max_trials and n >= max_trials:
        return f"max_trials {max_trials} reached"
    return f"the {tuner} tuner has no further trials after {n}"
