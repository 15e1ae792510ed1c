"""Liveness in a distributed sweep: a worker proves it is alive while it holds a trial, and the
chief gives the trial of a worker silent for `distributed.heartbeat_timeout_s` to another.

Keras Tuner 1.4.8 has no heartbeat: a worker that dies keeps its trial, and the chief waits for
it forever. This adds one through the chief's own oracle, no other service:

- a worker's `Heartbeat` thread calls the oracle's `create_trial` with `WORKER@TRIAL` a few
  times per timeout while the worker holds a trial; the answer says whether it still does;
- the chief's `Monitor` thread takes the trials of workers silent for longer than the timeout,
  marks their runs KILLED with the reason (tag `kill_reason`), and sends them back to the queue
  by Keras Tuner's retry path (same trial id), for any live worker to take;
- a worker that learns its trial was taken stops training at the next batch, and neither
  reports nor logs it (`StopWhenLost`, and `Heartbeat.still_holds` before it logs).

`serve` is the chief's part: Keras Tuner's oracle servicer (as `oracle_chief.start_server`,
pinned by tests/test_pins.py) behind the oracle's token (`cluster.oracle_server`), with the
monitor, ending a second after the last worker left rather than Keras Tuner's 20 s.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import grpc
import keras
from keras_tuner.engine.trial import TrialStatus
from keras_tuner.errors import FatalError
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_chief
from omegaconf import DictConfig

from sweep import cluster, tracking
from sweep.errors import first_line
from sweep.tuner.oracles import HEARTBEAT_MARK, ConsecutiveFailures, SweepOracle

log = logging.getLogger(__name__)

#: Heartbeats a worker sends per timeout (and checks the chief makes), so one late beat is not
#: taken for silence.
BEATS_PER_TIMEOUT = 5
#: A ticker that wakes this many intervals late, or a heartbeat that takes as long, says so (a
#: worker's heartbeats then reached the chief late: the log tells starvation from a bug).
LATE_INTERVALS = 2.5
#: How often the chief checks whether its last worker has left.
END_POLL_S = 1.0


def beat_interval(timeout_s: float) -> float:
    """Seconds between a worker's heartbeats, and between the chief's checks for silence."""
    return timeout_s / BEATS_PER_TIMEOUT


class TrialLost(tracking.Superseded):
    """The chief took this worker's trial back (the worker was silent for too long) and queued
    it for any worker: it is neither reported nor logged here; its run ends KILLED."""

    def __init__(self, trial_id: str) -> None:
        super().__init__(
            f"trial {trial_id} was taken back by the chief after this worker was silent for "
            "longer than distributed.heartbeat_timeout_s"
        )


class Duplicate(tracking.Superseded):
    """Another run of the sweep logged this trial FINISHED while this one trained it: that
    result is reported, and this run ends KILLED (a trial is logged FINISHED once)."""

    def __init__(self, trial_id: str, result: dict[str, float]) -> None:
        super().__init__(f"trial {trial_id} was logged FINISHED by another run meanwhile")
        self.result = result


@dataclass(frozen=True)
class Holding:
    """One assignment of a trial to this worker (a trial taken back may come to it again)."""

    trial_id: str
    number: int


class Ticker:
    """A daemon thread that calls `tick` every `interval` seconds until `stop`."""

    def __init__(self, name: str, interval: float) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            due = time.monotonic() + self._interval
            if self._stop.wait(self._interval):
                return
            late = time.monotonic() - due
            if late > LATE_INTERVALS * self._interval:  # in the log: starved, not a bug
                log.warning(
                    "%s woke %.1f s late (it runs every %.1f s): this process was held up "
                    "(short of CPU, or stopped)",
                    self._thread.name,
                    late,
                    self._interval,
                )
            self.tick()

    def tick(self) -> None:
        raise NotImplementedError


class Heartbeat(Ticker):
    """A worker's proof of life: a daemon thread tells the chief's oracle, a few times per
    timeout, that this worker still holds its current trial, and remembers when the chief says
    it no longer does."""

    def __init__(self, oracle: Any, worker_id: str, timeout_s: float) -> None:
        super().__init__("sweep-heartbeat", beat_interval(timeout_s))
        self._oracle, self._worker = oracle, worker_id  # the worker's gRPC client of the oracle
        self._holding: Holding | None = None  # the trial this worker holds now
        self._lost: Holding | None = None  # the last holding the chief took back
        self._count = itertools.count()

    def hold(self, trial_id: str | None) -> None:
        """This worker now holds `trial_id` (None: no trial)."""
        self._holding = None if trial_id is None else Holding(trial_id, next(self._count))

    def lost(self) -> bool:
        """Whether the chief has taken the trial this worker holds back from it."""
        return self._holding is not None and self._lost == self._holding

    def still_holds(self) -> bool:
        """Whether the chief still counts this worker's trial as its own (asking it now, which
        also counts as a heartbeat; a chief that is away is waited for, as Keras Tuner does)."""
        holding = self._holding
        return holding is not None and self._ask(holding)

    def _ask(self, holding: Holding) -> bool:
        if self._lost == holding:
            return False
        answer = self._oracle.create_trial(f"{self._worker}{HEARTBEAT_MARK}{holding.trial_id}")
        if answer.trial_id == holding.trial_id and answer.status == TrialStatus.RUNNING:
            return True
        self._lost = holding  # an answer about an earlier holding marks that one only
        return False

    def tick(self) -> None:
        holding = self._holding
        if holding is None:
            return
        started = time.monotonic()
        try:
            held = self._ask(holding)
        except (grpc.RpcError, ChiefRefused) as err:  # away, or refusing (the search's next
            # call says so in one line): training goes on
            log.debug("heartbeat for trial %s: %s", holding.trial_id, first_line(str(err)))
            return
        took = time.monotonic() - started
        answer = "held" if held else "taken back"
        if took > LATE_INTERVALS * self._interval:  # the chief away, slow, or out of reach
            log.warning("heartbeat for trial %s took %.1f s (%s)", holding.trial_id, took, answer)
        else:
            log.debug("heartbeat for trial %s: %s after %.2f s", holding.trial_id, answer, took)


def reconnect_quickly(oracle: Any, dist: DictConfig) -> None:
    """Give a worker's gRPC client of the oracle the channel `cluster.oracle_channel` makes: it
    carries the oracle's token on every call (heartbeats too), and tries a chief that went
    away again every second or so: with gRPC's default back-off, a worker could reach a
    restarted chief only after the chief had given its trial away. A call the chief's death cut
    off is made again once it is back (`PatientStub`)."""
    stub = protos.get_service_grpc().OracleStub(cluster.oracle_channel(dist))
    oracle.stub = PatientStub(stub, dist)


class ChiefRefused(cluster.TokenRefused, FatalError):
    """The chief refused a call of this worker's (a chief restarted with another token): the
    one line of `TokenRefused`, and fatal to Keras Tuner, which stops the search rather than
    failing the trial."""


class PatientStub:
    """The oracle's gRPC stub, making a call again when the chief went away during it (gRPC
    says UNAVAILABLE; Keras Tuner's calls wait for a chief that is away only before they
    start). Each call is safe to repeat: a worker gets the trial it holds again, metrics are
    set again, and the chief ignores the report of a trial it has ended already. A call the
    chief refuses for its token (UNAUTHENTICATED) is `ChiefRefused`, one line."""

    def __init__(self, stub: Any, dist: DictConfig | None = None) -> None:
        self._stub, self._dist = stub, dist

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def patiently(*args: Any, **kwargs: Any) -> Any:
            while True:
                try:
                    return method(*args, **kwargs)
                except grpc.RpcError as err:
                    code = err.code() if isinstance(err, grpc.Call) else None
                    if code == grpc.StatusCode.UNAUTHENTICATED and self._dist is not None:
                        raise ChiefRefused(self._dist) from None
                    if code != grpc.StatusCode.UNAVAILABLE:
                        raise
                    log.info("the chief went away during %s; calling again once it is back", name)
                    time.sleep(cluster.RECONNECT_MS / 1000)

        return patiently


class StopWhenLost(keras.callbacks.Callback):
    """Ends a trial's training at the next batch once the chief has given it to another worker."""

    def __init__(self, heartbeat: Heartbeat, trial_id: str) -> None:
        super().__init__()
        self._heartbeat, self._trial_id = heartbeat, trial_id

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._heartbeat.lost():
            raise TrialLost(self._trial_id)

    def __deepcopy__(self, memo: dict[int, Any]) -> StopWhenLost:
        # Keras Tuner copies a trial's callbacks; this one shares the worker's heartbeat
        return self


class Monitor(Ticker):
    """The chief's watch for silent workers: a daemon thread that, a few times per timeout,
    takes their trials back and requeues them at once; another marks their runs KILLED with
    the reason, in the order taken, so a tracking server that is away (MLflow's client retries
    for minutes) delays only those marks, never a requeue or the next check."""

    def __init__(self, oracle: SweepOracle, parent_run_id: str) -> None:
        self._oracle, self._parent = oracle, parent_run_id
        self._timeout = float(oracle.heartbeat_timeout or 0.0)
        super().__init__("sweep-monitor", beat_interval(self._timeout))
        self._marks: queue.SimpleQueue[tuple[str, str, str, float]] = queue.SimpleQueue()
        self._marker = threading.Thread(target=self._mark, name="sweep-monitor-marks", daemon=True)

    def start(self) -> None:
        super().start()
        self._marker.start()

    def tick(self) -> None:
        try:
            self.check()
        except Exception:  # never let one bad check end the watch
            log.exception("checking for silent workers failed")

    def check(self) -> None:
        """Take back and requeue the trial of every worker silent for longer than the timeout;
        its run is marked KILLED next, by the marking thread."""
        for worker, trial in self._oracle.take_from_silent():
            taken_at = time.time()
            why = (
                f"worker {worker} was silent for more than {self._timeout:g} s "
                f"(distributed.heartbeat_timeout_s): trial {trial.trial_id} queued again"
            )
            log.warning("%s", why)
            try:
                self._oracle.requeue(trial, why)
            except ConsecutiveFailures as err:  # the trial lost too many workers: FAILED
                log.error("%s", err)
            self._marks.put((trial.trial_id, worker, why, taken_at))

    def _mark(self) -> None:
        """Mark each taken trial's run KILLED: only runs started before it was taken, since
        the trial may have come back to the same worker meanwhile."""
        while True:
            trial_id, worker, why, taken_at = self._marks.get()
            try:
                tracking.kill_trial_runs(self._parent, trial_id, worker, why, before=taken_at)
            except Exception as err:  # the run is closed at the end of the sweep instead
                log.warning("could not mark trial %s's run KILLED: %s", trial_id, err)


def start_oracle(
    oracle: SweepOracle, dist: DictConfig
) -> tuple[grpc.Server, oracle_chief.OracleServicer]:
    """Serve the oracle on `distributed.oracle` (Keras Tuner's servicer, behind the token and
    TLS of `cluster.oracle_server`); returns the started server and the servicer."""
    server = cluster.oracle_server(dist)
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.start()
    return server, servicer


def serve(oracle: SweepOracle, parent_run_id: str, dist: DictConfig) -> None:
    """The chief's part of the search: serve the oracle to workers on `distributed.oracle`
    until every worker has been told to stop, taking trials back from workers that fall
    silent."""
    _server, servicer = start_oracle(oracle, dist)  # held: gRPC stops a server it collects
    monitor = Monitor(oracle, parent_run_id)
    monitor.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(END_POLL_S)
    finally:
        monitor.stop()  # the server ends with the process, as Keras Tuner's does
