"""The chief's part of a distributed search: Keras Tuner's oracle servicer (as
`oracle_chief.start_server`, pinned by tests/test_pins.py) behind the oracle's token
(`cluster.oracle_server`), the heartbeat's call beside it (`liveness`), and the `Monitor` that
acts on the chief's `liveness.Attendance`; it ends a second after the last worker left rather
than Keras Tuner's 20 s.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import grpc
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_chief
from omegaconf import DictConfig

from sweep import cluster, tracking
from sweep.tuner import liveness
from sweep.tuner.oracles import ConsecutiveFailures, SweepOracle

log = logging.getLogger(__name__)

#: How often the chief checks whether its last worker has left.
END_POLL_S = 1.0


class Monitor(liveness.Ticker):
    """The chief's watch for overdue workers (silent, or without progress): a daemon thread
    that, a few times per timeout, takes their trials back and requeues them at once; another
    marks their runs KILLED with the reason, in the order taken, so a tracking server that is
    away (MLflow's client retries for minutes) delays only those marks, never a requeue or the
    next check."""

    def __init__(self, oracle: SweepOracle, parent_run_id: str) -> None:
        self._oracle, self._parent = oracle, parent_run_id
        attendance = oracle.attendance
        super().__init__("sweep-monitor", attendance.interval() if attendance else 1.0)
        self._marks: queue.SimpleQueue[tuple[str, str, str, float]] = queue.SimpleQueue()
        self._marker = threading.Thread(target=self._mark, name="sweep-monitor-marks", daemon=True)

    def start(self) -> None:
        super().start()
        self._marker.start()

    def tick(self) -> None:
        try:
            self.check()
        except Exception:  # never let one bad check end the watch
            log.exception("checking for overdue workers failed")

    def check(self) -> None:
        """Take back and requeue the trial of every overdue worker; its run is marked KILLED
        next, by the marking thread. Stop waiting for workers gone between trials."""
        for worker, trial, overdue in self._oracle.take_back():
            taken_at = time.time()
            why = f"{overdue}: trial {trial.trial_id} queued again"
            log.warning("%s", why)
            try:
                self._oracle.requeue(trial, why)
            except ConsecutiveFailures as err:  # the trial lost too many workers: FAILED
                log.error("%s", err)
            self._marks.put((trial.trial_id, worker, why, taken_at))
        for worker in self._oracle.forget_gone():
            log.warning(
                "worker %s was silent between trials for longer than "
                "distributed.heartbeat_timeout_s: no longer waited for",
                worker,
            )

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
    TLS of `cluster.oracle_server`) and the heartbeat's call; returns the started server and the
    servicer."""
    server = cluster.oracle_server(dist)
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    liveness.add_heartbeat_service(server, oracle)
    server.start()
    return server, servicer


def serve(oracle: SweepOracle, parent_run_id: str, dist: DictConfig) -> None:
    """The chief's part of the search: serve the oracle to workers on `distributed.oracle`
    until every worker has been told to stop, taking trials back from overdue workers."""
    _server, servicer = start_oracle(oracle, dist)  # held: gRPC stops a server it collects
    monitor = Monitor(oracle, parent_run_id)
    monitor.start()
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(oracle)):
            time.sleep(END_POLL_S)
    finally:
        monitor.stop()  # the server ends with the process, as Keras Tuner's does
