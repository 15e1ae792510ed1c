"""A worker whose process lives but whose trial makes no progress loses the trial like a dead
one; a long validation pass, a slow first batch (tracing) or a slow model upload is progress.

In this process, on real parts: the chief's oracle served by its own gRPC server with the
heartbeat's call beside it, the chief's monitor, Keras Tuner's gRPC client of the oracle, a
worker's heartbeat thread, and real Keras fits with the worker's `Progress` callback. The
timeouts are a second or two, so each test takes seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pytest
from keras_tuner.engine.trial import Trial, TrialStatus
from keras_tuner.src.distribute import oracle_client
from omegaconf import OmegaConf

from sweep import cluster, distributed, tracking, train
from sweep.config import compose_config
from sweep.schema import DistributedConfig
from sweep.schema.distributed import TOKEN_ENV
from sweep.space import SearchSpace
from sweep.tuner import liveness, serving
from sweep.tuner.hypermodel import AttentionHyperModel
from sweep.tuner.search import callbacks
from sweep.tuner.state import sweep_dir
from sweep.tuner.trials import SweepRun
from sweep.tuner.tuners import TunerOptions, build_tuner
from sweep.vocabulary import TRIAL_ID_TAG
from tests.conftest import (
    NO_REPLICATES,
    chief_oracle,
    copy_store,
    runs_of,
    tiny_overrides,
)

#: The chief's timeouts here: heartbeats every 0.3 s; no progress for 1.5 s loses a trial.
HEARTBEAT_S, PROGRESS_S = 5.0, 1.5
#: How long each slow step of a trial takes: well past the progress timeout.
SLOW_S = 3.0
WORKER = "w1"


@dataclass
class Sweep:
    """A chief serving its oracle in this process, and one worker's client and heartbeat."""

    oracle: Any
    client: Any
    heartbeat: liveness.Heartbeat
    kills: list[tuple[str, str]] = field(default_factory=list)  # (trial id, reason)
    logged: list[str] = field(default_factory=list)  # trial ids the worker logged FINISHED
    lost: list[str] = field(default_factory=list)  # trial ids the worker learnt it had lost


@pytest.fixture
def sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sweep]:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    oracle = chief_oracle(tmp_path, HEARTBEAT_S, progress_timeout_s=PROGRESS_S)
    address = f"127.0.0.1:{distributed.free_port()}"
    dist = OmegaConf.structured(DistributedConfig(oracle=address, connect_timeout_s=10.0))
    server, _ = serving.start_oracle(oracle, dist)
    host, port = address.split(":")
    for name, value in (
        (cluster.ORACLE_IP_ENV, host),
        (cluster.ORACLE_PORT_ENV, port),
        (cluster.TUNER_ID_ENV, WORKER),
    ):
        monkeypatch.setenv(name, value)
    client = oracle_client.OracleClient(oracle)  # Keras Tuner's, as a worker's tuner has
    line = liveness.reconnect_quickly(client, dist)
    heartbeat = liveness.Heartbeat(line, WORKER, HEARTBEAT_S, PROGRESS_S)
    monitor = serving.Monitor(oracle, "parent-run")
    swept = Sweep(oracle, client, heartbeat)

    def kill_trial_runs(parent: str, trial_id: str, worker: str, why: str, **_: Any) -> list:
        swept.kills.append((trial_id, why))
        return []

    monkeypatch.setattr(serving.tracking, "kill_trial_runs", kill_trial_runs)
    heartbeat.start()
    monitor.start()
    yield swept
    monitor.stop()
    heartbeat.stop()
    server.stop(None)


Slow = Callable[[liveness.Heartbeat], list[keras.callbacks.Callback]]


def _fit(heartbeat: liveness.Heartbeat, trial_id: str, after: list[Any]) -> float:
    """A real fit of a tiny model, the worker's `Progress` first among its callbacks; the
    objective."""
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("sgd", "binary_crossentropy", metrics=["accuracy"])
    history = model.fit(
        x,
        y,
        validation_data=(x, y),
        epochs=2,
        batch_size=8,
        verbose=0,
        callbacks=[liveness.Progress(heartbeat, trial_id), *after],
    )
    return float(history.history["val_accuracy"][-1])


def _work(sweep: Sweep, slow: Callable[[int], list[Any]], upload_s: float = 0.0) -> None:
    """The worker's loop, as the tuner runs it: ask for a trial, fit it (the i-th trial with
    `slow(i)` callbacks), check the trial is still its own, log it (the third trial's model
    upload taking `upload_s`) and report it; until the chief has no trials left."""
    client, heartbeat, number = sweep.client, sweep.heartbeat, 0
    while (trial := client.create_trial(WORKER)).status != TrialStatus.STOPPED:
        if trial.status != TrialStatus.RUNNING:
            time.sleep(0.2)  # a trial may come back to the queue
            continue
        heartbeat.hold(trial.trial_id)
        try:
            score = _fit(heartbeat, trial.trial_id, slow(number))
            if not heartbeat.still_holds():
                raise liveness.TrialLost(trial.trial_id)
            with heartbeat.working("logging the outcome"):  # as trials.py logs the model
                time.sleep(upload_s if number == 2 else 0.0)
            sweep.logged.append(trial.trial_id)
            client.update_trial(trial.trial_id, {"val_accuracy": score})
            client.end_trial(Trial(trial.hyperparameters, trial.trial_id, TrialStatus.COMPLETED))
        except liveness.TrialLost:
            sweep.lost.append(trial.trial_id)
        heartbeat.hold(None)
        number += 1


def _assert_each_completed_once(sweep: Sweep) -> None:
    oracle = sweep.oracle
    assert len(oracle.trials) == 3
    assert sorted(oracle.end_order) == sorted(oracle.trials), "each trial ended exactly once"
    assert all(t.status == TrialStatus.COMPLETED for t in oracle.trials.values())
    assert sorted(sweep.logged) == sorted(oracle.trials), "each trial logged exactly once"


class Blocks(keras.callbacks.Callback):
    """A training callback that hangs at the second batch until the chief has taken the trial
    (at most 30 s): the process lives, its heartbeat beats, the trial makes no progress."""

    def __init__(self, heartbeat: liveness.Heartbeat) -> None:
        super().__init__()
        self._heartbeat, self.held_s = heartbeat, 0.0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if batch == 1 and not self.held_s:
            started = time.monotonic()
            deadline = started + 30
            while not self._heartbeat.lost() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.held_s = time.monotonic() - started


def test_no_progress_is_judged_on_the_workers_beats_not_the_chiefs_clock() -> None:
    """Beats that stop (a starved or stopped process) are silence, for the heartbeat timeout;
    beats that keep coming at one count are no progress, for the progress timeout."""
    attendance = liveness.Attendance(heartbeat_timeout_s=5.0, progress_timeout_s=0.05)
    attendance.started(WORKER)
    attendance.heard(WORKER, 1)
    time.sleep(0.1)
    assert attendance.overdue([WORKER]) == {}, "not heard since: not yet overdue"
    attendance.heard(WORKER, 1)  # a later beat, the count unmoved
    (why,) = attendance.overdue([WORKER]).values()
    assert why.startswith(f"worker {WORKER} made no progress"), why
    attendance.heard(WORKER, 2)
    assert attendance.overdue([WORKER]) == {}


@pytest.mark.slow
def test_a_live_worker_without_progress_loses_its_trial(sweep: Sweep) -> None:
    blocks = Blocks(sweep.heartbeat)
    _work(sweep, lambda number: [blocks] if number == 0 else [])
    assert len(sweep.lost) == 1, "the hung trial was taken back, and the worker noticed"
    hung = sweep.lost[0]
    assert PROGRESS_S < blocks.held_s < HEARTBEAT_S, "taken for want of progress, not silence"
    assert len(sweep.kills) == 1 and sweep.kills[0][0] == hung
    assert sweep.kills[0][1] == (
        f"worker {WORKER} made no progress for more than {PROGRESS_S:g} s "
        f"(distributed.progress_timeout_s): trial {hung} queued again"
    )
    _assert_each_completed_once(sweep)
    assert sweep.logged.count(hung) == 1, "logged once, by the trial's second run"


class SlowValidation(keras.callbacks.Callback):
    """A first validation pass of many slow batches: SLOW_S in all, each well within the
    timeout."""

    def __init__(self) -> None:
        super().__init__()
        self.passes = 0

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.passes += 1

    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.passes == 1:
            time.sleep(SLOW_S / 8)  # 8 validation batches per pass


class SlowTracing(keras.callbacks.Callback):
    """A first training batch that takes SLOW_S (a big model's step traced and compiled)."""

    def __init__(self) -> None:
        super().__init__()
        self.traced = False

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if not self.traced:
            self.traced = True
            time.sleep(SLOW_S)


@pytest.mark.slow
def test_long_validation_slow_tracing_and_a_slow_upload_are_progress(sweep: Sweep) -> None:
    """Three trials: a validation pass of SLOW_S, a first batch of SLOW_S, a model upload of
    SLOW_S; none is taken back (each stretch is twice the progress timeout)."""
    callbacks = {0: [SlowValidation()], 1: [SlowTracing()]}
    started = time.monotonic()
    _work(sweep, lambda number: callbacks.get(number, []), upload_s=SLOW_S)
    assert time.monotonic() - started > 3 * SLOW_S
    assert sweep.lost == [] and sweep.kills == [], "no trial taken back"
    assert sweep.oracle._retry_queue == []
    _assert_each_completed_once(sweep)


class Cut:
    """A worker's line to the chief that a test can cut as SIGSTOP would: while cut, each
    heartbeat waits (the worker's heartbeat thread frozen), then goes through."""

    def __init__(self, line: liveness.Chief) -> None:
        self._line, self._open = line, threading.Event()
        self._open.set()

    def heartbeat(self, worker: str, trial_id: str, progress: int) -> bool:
        self._open.wait()
        return self._line.heartbeat(worker, trial_id, progress)

    def cut(self) -> None:
        self._open.clear()

    def mend(self) -> None:
        self._open.set()


@pytest.mark.slow
def test_a_worker_stopped_while_it_logs_leaves_its_run_killed(
    sweep: Sweep,
    tmp_path: Path,
    tiny_imdb: Path,
    migrated_store: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The soak's duplicates: a worker stopped after its pre-log claim, while it logged its
    trial's outcome, woke after the chief had taken the trial back, finished logging and ended
    its run FINISHED, beside the FINISHED run of the worker the trial went to. A real worker
    tuner here (the chief's oracle, in this process, over gRPC): its first trial's logging is
    cut off from the chief until the trial is taken back; the run keeps what it logged, ends
    KILLED, and the trial is FINISHED once, by its second run."""
    sweep.heartbeat.stop()  # the fixture's; the tuner beats its own, on a line this test cuts
    line = Cut(sweep.heartbeat._chief)
    heartbeat = liveness.Heartbeat(line, WORKER, HEARTBEAT_S)
    copy_store(migrated_store, tmp_path)
    cfg = compose_config(
        [*tiny_overrides(tmp_path, tiny_imdb), "+experiment=dim_search", *NO_REPLICATES]
    )
    monkeypatch.chdir(tmp_path)
    tracking.configure(cfg.tracking)
    experiment = tracking.use_experiment(cfg.name, cfg.tracking)
    searched = SearchSpace.of(cfg)
    hypermodel = AttentionHyperModel(cfg, train.load(cfg), searched)
    tuner = build_tuner(cfg, hypermodel, sweep_dir(cfg), TunerOptions(overwrite=True))
    assert isinstance(tuner.oracle, oracle_client.OracleClient), "a worker's tuner"
    log_outcome = tuner._log_outcome

    def stopped_while_logging(*args: Any) -> None:
        log_outcome(*args)  # its metrics are in
        if not sweep.kills:  # the first trial only
            line.cut()
            deadline = time.monotonic() + 30
            while not sweep.kills and time.monotonic() < deadline:
                time.sleep(0.05)
            line.mend()

    monkeypatch.setattr(tuner, "_log_outcome", stopped_while_logging)
    with mlflow.start_run(experiment_id=experiment, run_name="parent") as parent:
        run = SweepRun(cfg, parent.info.run_id, {}, tracking.Standing.of(cfg))
        tuner.search_in(run, callbacks(cfg), heartbeat)
    (taken, why), *_ = sweep.kills  # a cut line is silence, however short the progress timeout
    assert why.startswith(f"worker {WORKER} was silent"), why
    _, children = runs_of(str(cfg.tracking.uri), cfg.name)
    runs = [r for r in children if r.data.tags[TRIAL_ID_TAG] == taken]
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"], runs
    (killed,) = [r for r in runs if r.info.status == "KILLED"]
    assert "val_accuracy" in killed.data.metrics, "what it logged before the stop stays"
    oracle = sweep.oracle
    assert sorted(oracle.end_order) == sorted(oracle.trials) == ["0", "1", "2"]
    assert all(t.status == TrialStatus.COMPLETED for t in oracle.trials.values())
    finished = [r.data.tags[TRIAL_ID_TAG] for r in children if r.info.status == "FINISHED"]
    assert sorted(finished) == ["0", "1", "2"], "each trial logged FINISHED once"
