"""Liveness in a distributed sweep, both halves of one protocol: a worker proves, while it holds
a trial, that it is alive and making progress; the chief takes the trial of a worker silent for
`distributed.heartbeat_timeout_s`, or without progress for `distributed.progress_timeout_s`, and
gives it to another.

Keras Tuner 1.4.8 has no heartbeat: a worker that dies keeps its trial, and the chief waits for
it forever. This adds one on the chief's own server and port, no other service:

- a worker's `Heartbeat` thread calls the chief's `sweep.Liveness/Heartbeat` method (its own
  gRPC call beside Keras Tuner's service, behind the same token: `ChiefLine`,
  `add_heartbeat_service`) a few times per timeout while it holds a trial, with its count of
  progress; the answer says whether it still holds the trial;
- progress is a counter that `Progress` (a Keras callback) moves at each training, validation
  and prediction batch; while a step with no batches is in flight (tracing a step function at
  a loop's first batch, logging the model: `Heartbeat.working`), each heartbeat moves it;
- the chief's `Attendance` keeps when each worker was last heard of and last moved its count,
  and names those overdue; `serving.Monitor` takes their trials back, marks their runs KILLED
  with the reason (tag `kill_reason`), and queues them again by Keras Tuner's retry path;
- a worker that learns its trial was taken stops at the next batch, and neither reports nor
  logs it (`Progress`, and `Heartbeat.still_holds` before it logs);
- between trials a heartbeat names no trial (`BETWEEN_TRIALS`); the chief stops waiting for a
  worker silent that long there (Keras Tuner's chief waits for every worker it has seen).
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import keras
from keras_tuner.errors import FatalError
from keras_tuner.src import protos
from omegaconf import DictConfig

from sweep import cluster, tracking
from sweep.errors import first_line

log = logging.getLogger(__name__)

#: Heartbeats a worker sends (and checks the chief makes) per timeout: one late beat is no silence.
BEATS_PER_TIMEOUT = 5
#: A ticker or a heartbeat this many intervals late says so (the log tells starvation from a bug).
LATE_INTERVALS = 2.5
#: The heartbeat's own gRPC service and method, served beside Keras Tuner's on the chief's port.
SERVICE, METHOD = "sweep.Liveness", "Heartbeat"
#: What a loop's first batch does besides the batch: trace the step function.
TRACING = "tracing"
#: The trial id a heartbeat names while its worker holds none: alive, between two trials.
BETWEEN_TRIALS = ""


def beat_interval(heartbeat_timeout_s: float, progress_timeout_s: float | None = None) -> float:
    """Seconds between a worker's heartbeats, and between the chief's checks: a fifth of the
    shorter timeout."""
    shortest = min(heartbeat_timeout_s, progress_timeout_s or heartbeat_timeout_s)
    return shortest / BEATS_PER_TIMEOUT


class TrialLost(tracking.Superseded):
    """The chief took this worker's trial back (silent, or no progress, for too long) and queued
    it for any worker: it is neither reported nor logged here; its run ends KILLED."""

    def __init__(self, trial_id: str) -> None:
        super().__init__(
            f"trial {trial_id} was taken back by the chief after this worker was silent, or "
            "made no progress, for too long (distributed.heartbeat_timeout_s, "
            "progress_timeout_s)"
        )


class Duplicate(tracking.Superseded):
    """Another run of the sweep logged this trial FINISHED while this one trained it: that
    result is reported, and this run ends KILLED (a trial is logged FINISHED once)."""

    def __init__(self, trial_id: str, result: dict[str, float]) -> None:
        super().__init__(f"trial {trial_id} was logged FINISHED by another run meanwhile")
        self.result = result


class Chief(Protocol):
    """The chief's side of a heartbeat: the chief's oracle itself, or a worker's `ChiefLine`."""

    def heartbeat(self, worker: str, trial_id: str, progress: int) -> bool:
        """Whether `worker` still holds `trial_id`; records it heard of, with its progress."""
        ...


# --- the chief's half ---------------------------------------------------------------------------


@dataclass
class Attendance:
    """The chief's record of the workers that hold trials: when each was last heard of, and
    when its progress count last moved; which are overdue, and why."""

    heartbeat_timeout_s: float
    progress_timeout_s: float | None = None
    _heard: dict[str, float] = field(default_factory=dict)  # worker -> monotonic time
    _moved: dict[str, tuple[int | None, float]] = field(default_factory=dict)  # (count, when)

    def interval(self) -> float:
        """How often the chief checks for overdue workers."""
        return beat_interval(self.heartbeat_timeout_s, self.progress_timeout_s)

    def started(self, worker: str) -> None:
        """`worker` was given a trial (or its own again): both clocks start now."""
        now = time.monotonic()
        self._heard[worker], self._moved[worker] = now, (None, now)

    def heard(self, worker: str, progress: int | None = None) -> None:
        """`worker` called; with a heartbeat's `progress`, its count as the worker sent it."""
        now = time.monotonic()
        self._heard[worker] = now
        count, _ = self._moved.get(worker, (None, now))
        if progress is not None and progress != count:
            self._moved[worker] = (progress, now)

    def silent(self, workers: Iterable[str]) -> list[str]:
        """Of `workers` (between trials), those silent for longer than the heartbeat timeout."""
        now, timeout = time.monotonic(), self.heartbeat_timeout_s
        return [w for w in workers if now - self._heard.setdefault(w, now) > timeout]

    def forget(self, worker: str) -> None:
        self._heard.pop(worker, None)
        self._moved.pop(worker, None)

    def overdue(self, workers: Iterable[str]) -> dict[str, str]:
        """Of `workers` (those holding trials), each silent or without progress for longer than
        its timeout, with why; a worker never heard of is timed from now (a restarted chief).
        No progress is judged on the worker's own beats (first to last at one count): beats
        delayed (a starved process) are silence, the heartbeat timeout's to judge."""
        now, late = time.monotonic(), {}
        for worker in workers:
            heard = self._heard.setdefault(worker, now)
            silent, still = now - heard, heard - self._moved.setdefault(worker, (None, now))[1]
            if silent > self.heartbeat_timeout_s:
                late[worker] = (
                    f"worker {worker} was silent for more than {self.heartbeat_timeout_s:g} s "
                    "(distributed.heartbeat_timeout_s)"
                )
            elif self.progress_timeout_s is not None and still > self.progress_timeout_s:
                late[worker] = (
                    f"worker {worker} made no progress for more than "
                    f"{self.progress_timeout_s:g} s (distributed.progress_timeout_s)"
                )
        return late


def add_heartbeat_service(server: grpc.Server, chief: Chief) -> None:
    """Serve `sweep.Liveness/Heartbeat` on the chief's server, beside Keras Tuner's service: a
    heartbeat is its own call, not a tuner id (the server's token check covers it too)."""

    def beat(request: bytes, context: grpc.ServicerContext) -> bytes:
        worker, trial_id, progress = json.loads(request)
        return b"1" if chief.heartbeat(str(worker), str(trial_id), int(progress)) else b"0"

    handler = grpc.unary_unary_rpc_method_handler(beat)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),)
    )


# --- the worker's half ----------------------------------------------------------------------------


class ChiefLine:
    """A worker's end of `sweep.Liveness/Heartbeat`, on its channel to the chief."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub  # has `Heartbeat(request: bytes) -> bytes` (a `PatientStub`)

    def heartbeat(self, worker: str, trial_id: str, progress: int) -> bool:
        answer = self._stub.Heartbeat(json.dumps([worker, trial_id, progress]).encode())
        return bool(answer == b"1")


def reconnect_quickly(oracle: Any, dist: DictConfig) -> ChiefLine:
    """Give a worker's gRPC client of the oracle the channel `cluster.oracle_channel` makes, and
    return the heartbeat's line on it: it carries the oracle's token on every call, and tries a
    chief that went away again every second or so (with gRPC's default back-off, a worker could
    reach a restarted chief only after the chief had given its trial away). A call the chief's
    death cut off is made again once it is back (`PatientStub`)."""
    channel = cluster.oracle_channel(dist)
    oracle.stub = PatientStub(protos.get_service_grpc().OracleStub(channel), dist)
    heartbeat = channel.unary_unary(f"/{SERVICE}/{METHOD}")
    return ChiefLine(PatientStub(_HeartbeatStub(heartbeat), dist))


@dataclass(frozen=True)
class _HeartbeatStub:
    Heartbeat: Any  # the gRPC method, named as a generated stub names it


class ChiefRefused(cluster.TokenRefused, FatalError):
    """The chief refused a call of this worker's (a chief restarted with another token): the
    one line of `TokenRefused`, and fatal to Keras Tuner, which stops the search rather than
    failing the trial."""


class PatientStub:
    """A gRPC stub that makes a call again when the chief went away during it (gRPC says
    UNAVAILABLE; Keras Tuner's calls wait for a chief that is away only before they start).
    Each call is safe to repeat: a worker gets the trial it holds again, metrics are set again,
    the chief ignores the report of a trial it has ended already, a heartbeat is a heartbeat. A
    call the chief refuses for its token (UNAUTHENTICATED) is `ChiefRefused`, one line."""

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
    """A worker's proof of life and progress: a daemon thread tells the chief, a few times per
    timeout, that this worker still holds its current trial and how far it has got, and
    remembers when the chief says it no longer holds it."""

    def __init__(
        self,
        chief: Chief,
        worker_id: str,
        timeout_s: float,
        progress_timeout_s: float | None = None,
    ) -> None:
        super().__init__("sweep-heartbeat", beat_interval(timeout_s, progress_timeout_s))
        self._chief, self._worker = chief, worker_id
        self._holding: Holding | None = None  # the trial this worker holds now
        self._lost: Holding | None = None  # the last holding the chief took back
        self._count = itertools.count()
        self._steps = itertools.count(1)  # progress: one step per batch or beat while working
        self._progress = 0
        self._working: set[str] = set()  # steps in flight that have no batches

    def hold(self, trial_id: str | None) -> None:
        """This worker now holds `trial_id` (None: no trial)."""
        self._working = set()
        self._holding = None if trial_id is None else Holding(trial_id, next(self._count))

    def step(self) -> None:
        """The trial made progress (a batch)."""
        self._progress = next(self._steps)

    def busy(self, what: str) -> None:
        """`what` is in flight: until `done(what)`, each heartbeat counts as progress."""
        self._working.add(what)

    def done(self, what: str) -> None:
        self._working.discard(what)
        self.step()

    @contextmanager
    def working(self, what: str) -> Iterator[None]:
        """`busy` while the block runs (logging the model: tracing it, uploading it); MLflow's
        client bounds those by its own timeouts and retries."""
        self.busy(what)
        try:
            yield
        finally:
            self.done(what)

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
        if self._working:
            self.step()
        if self._chief.heartbeat(self._worker, holding.trial_id, self._progress):
            return True
        self._lost = holding  # an answer about an earlier holding marks that one only
        return False

    def tick(self) -> None:
        holding = self._holding
        if holding is None:
            self._between_trials()
            return
        started = time.monotonic()
        try:
            held = self._ask(holding)
        except (grpc.RpcError, cluster.TokenRefused) as err:  # away, or refusing (the search's
            # next call says so in one line): training goes on
            log.debug("heartbeat for trial %s: %s", holding.trial_id, first_line(str(err)))
            return
        took = time.monotonic() - started
        answer = "held" if held else "taken back"
        if took > LATE_INTERVALS * self._interval:  # the chief away, slow, or out of reach
            log.warning("heartbeat for trial %s took %.1f s (%s)", holding.trial_id, took, answer)
        else:
            log.debug("heartbeat for trial %s: %s after %.2f s", holding.trial_id, answer, took)

    def _between_trials(self) -> None:
        """Alive, holding no trial (logging the last one's standing, or waiting for the next)."""
        try:
            self._chief.heartbeat(self._worker, BETWEEN_TRIALS, self._progress)
        except (grpc.RpcError, cluster.TokenRefused) as err:
            log.debug("heartbeat between trials: %s", first_line(str(err)))


class Progress(keras.callbacks.Callback):
    """A trial's progress for its heartbeat: each training, validation and prediction batch,
    and a loop's first batch (which traces its step function) as in flight; ends the trial at
    the next training or validation batch once the chief has given it to another worker. First
    among the callbacks: one that blocks after it stops the count."""

    def __init__(self, heartbeat: Heartbeat, trial_id: str) -> None:
        super().__init__()
        self._heartbeat, self._trial_id = heartbeat, trial_id

    def _begin(self, logs: dict[str, Any] | None = None) -> None:
        self._heartbeat.busy(TRACING)

    def _batch(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._heartbeat.done(TRACING)
        if self._heartbeat.lost():
            raise TrialLost(self._trial_id)

    def on_predict_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._heartbeat.done(TRACING)

    on_train_begin = on_test_begin = on_predict_begin = _begin
    on_train_batch_end = on_test_batch_end = _batch

    def __deepcopy__(self, memo: dict[int, Any]) -> Progress:
        # Keras Tuner copies a trial's callbacks; this one shares the worker's heartbeat
        return self
