"""Faults in a distributed sweep (issue 14), in this process: the chief's oracle's heartbeat
bookkeeping, with the clock moved by hand, a worker's calls cut off by the chief's death, and a
tracking URI MLflow cannot use is one line before any data is read. The same faults on real
processes (a chief and workers, the MLflow server and PostgreSQL restarted) are the cases of one
short soak: tests/test_soak.py.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import keras_tuner
import pytest
from keras_tuner.engine.trial import TrialStatus
from keras_tuner.src.distribute import oracle_chief

from sweep.config import compose_config
from sweep.errors import ConfigError
from sweep.tuner import liveness, serving
from sweep.tuner.liveness import Heartbeat
from sweep.tuner.oracles import ConsecutiveFailures, RandomOracle
from tests.conftest import chief_oracle, run_cli

# --- tracking.uri (the ones refused: tests/test_config.py's BAD_COMMAND_LINES) -----------------


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:///mlruns/mlflow.db",
        "sqlite:////tmp/mlflow.db",
        "mlruns",
        "/tmp/mlruns",
        "file:///tmp/mlruns",
        "http://127.0.0.1:5000",
        "https://mlflow.lab.internal",
        "postgresql+psycopg://mlflow@10.0.0.5:5432/mlflow",
        "mysql://mlflow@db/mlflow",
    ],
)
def test_tracking_uris_mlflow_opens_are_accepted(uri: str) -> None:
    assert compose_config([f"tracking.uri={uri}"]).tracking.uri == uri


@pytest.mark.slow  # a real process / a sweep of its own (issue 15: not in the quick loop)
def test_a_bad_tracking_uri_stops_the_command_in_one_line_before_the_data(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    missing = tmp_path / "no-such-archive.tar.gz"  # reading data first would complain of this
    result = run_cli(
        ["+experiment=smoke", f"data.path={missing}", "tracking.uri=mlflow://127.0.0.1:5000"],
        tmp_path,
        cli_env,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("config error: tracking.uri=mlflow://127.0.0.1:5000: "), lines
    assert "Traceback" not in result.stderr and str(missing) not in result.stderr
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ("distributed.heartbeat_timeout_s=0.5", "heartbeat_timeout_s=0.5: must be at least 1.0"),
        ("distributed.max_requeues=-1", "max_requeues=-1: must be at least 0"),
        ("distributed.progress_timeout_s=0", "progress_timeout_s=0.0: must be at least 1.0"),
        ("distributed.progress_timeout_s=-5", "progress_timeout_s=-5.0: must be at least 1.0"),
        ("distributed.progress_timeout_s=soon", "progress_timeout_s=soon: Value 'soon' of type"),
    ],
)
def test_bad_heartbeat_settings_are_one_line_errors(override: str, said: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"config error: distributed.{said}")) as err:
        compose_config(["+experiment=smoke", override])
    assert "\n" not in str(err.value)


# --- the chief's oracle, in this process ---------------------------------------------------------


def _silence(oracle: RandomOracle, worker: str, seconds: float) -> None:
    """Move the chief's memory of `worker` back in time, as if it had been silent so long."""
    assert oracle.attendance is not None
    oracle.attendance._heard[worker] -= seconds


def _beat(oracle: RandomOracle, worker: str, trial_id: str) -> bool:
    return bool(oracle.heartbeat(worker, trial_id, 0))


def _taken(oracle: RandomOracle) -> list[tuple[str, keras_tuner.engine.trial.Trial]]:
    return [(worker, trial) for worker, trial, _ in oracle.take_back()]


def _complete(oracle: RandomOracle, trial: keras_tuner.engine.trial.Trial) -> None:
    oracle.update_trial(trial.trial_id, {"val_accuracy": 0.5})
    trial.status = TrialStatus.COMPLETED
    oracle.end_trial(trial)


def test_a_silent_workers_trial_goes_back_to_the_queue_under_its_id(tmp_path: Path) -> None:
    oracle = chief_oracle(tmp_path)
    a, b = oracle.create_trial("a"), oracle.create_trial("b")
    assert _beat(oracle, "a", a.trial_id) and not _beat(oracle, "a", b.trial_id)
    _silence(oracle, "b", 4.0)
    assert _taken(oracle) == [], "silent for less than the timeout"
    _silence(oracle, "b", 2.0)
    assert _taken(oracle) == [("b", b)]
    assert not _beat(oracle, "b", b.trial_id), "a taken trial is no longer its worker's"
    oracle.requeue(b, "worker b was silent")
    assert oracle._retry_queue == [b.trial_id] and "b" not in oracle.tuner_ids
    assert oracle.get_trial(b.trial_id).status == TrialStatus.INVALID
    # worker b wakes up: its heartbeat and its report of the trial are refused
    assert not _beat(oracle, "b", b.trial_id)
    late = keras_tuner.engine.trial.Trial(b.hyperparameters, b.trial_id, TrialStatus.COMPLETED)
    oracle.update_trial(b.trial_id, {"val_accuracy": 0.9})
    oracle.end_trial(late)
    assert oracle._retry_queue == [b.trial_id] and oracle.end_order == []
    assert oracle.get_trial(b.trial_id).status == TrialStatus.INVALID
    assert not oracle.get_trial(b.trial_id).metrics.exists("val_accuracy")
    _complete(oracle, a)
    again = oracle.create_trial("a")
    assert again.trial_id == b.trial_id and again.status == TrialStatus.RUNNING
    _complete(oracle, again)
    assert oracle.end_order == [a.trial_id, b.trial_id]
    assert oracle.get_trial(b.trial_id).status == TrialStatus.COMPLETED


def test_a_worker_with_nothing_to_do_waits_while_a_trial_may_come_back(tmp_path: Path) -> None:
    oracle = chief_oracle(tmp_path)
    first, second, third = (oracle.create_trial(w) for w in ("a", "b", "a2"))
    _complete(oracle, second)
    _complete(oracle, third)
    # max_trials reached, but trial `first` may still come back: b waits (IDLE), not STOPPED
    assert oracle.create_trial("b").status == TrialStatus.IDLE and "b" in oracle.tuner_ids
    _silence(oracle, "a", 10.0)
    for _, trial in _taken(oracle):
        oracle.requeue(trial, "silent")
    assert oracle.create_trial("b").trial_id == first.trial_id
    _complete(oracle, first)
    assert oracle.create_trial("b").status == TrialStatus.STOPPED
    assert oracle.create_trial("a2").status == TrialStatus.STOPPED
    assert not oracle.tuner_ids and not oracle.ongoing_trials


def test_a_trial_that_loses_too_many_workers_fails(tmp_path: Path) -> None:
    oracle = chief_oracle(tmp_path, max_requeues=1)
    trial = oracle.create_trial("a")
    for worker in ("a", "b"):
        if worker == "b":
            assert oracle.create_trial("b").trial_id == trial.trial_id
        _silence(oracle, worker, 10.0)
        assert [t.trial_id for _, t in _taken(oracle)] == [trial.trial_id]
        oracle.requeue(trial, f"worker {worker} was silent")
    assert oracle.get_trial(trial.trial_id).status == TrialStatus.FAILED
    assert oracle._retry_queue == [] and oracle.end_order == [trial.trial_id]


def test_an_error_as_the_monitor_requeues_leaves_the_oracle_to_the_others(
    tmp_path: Path,
) -> None:
    """Too many failures in a row, raised as the monitor requeued a trial that had lost its
    last worker, kept Keras Tuner's lock: no worker's call was answered again (the soak found
    it)."""
    oracle = chief_oracle(tmp_path, max_requeues=0)
    oracle.max_consecutive_failed_trials = 1
    oracle.create_trial("a")
    _silence(oracle, "a", 10.0)
    raised: list[BaseException] = []

    def monitor() -> None:
        for _, taken in _taken(oracle):
            try:
                oracle.requeue(taken, "worker a was silent")
            except ConsecutiveFailures as err:
                raised.append(err)

    watch = threading.Thread(target=monitor, name="sweep-monitor")
    watch.start()
    watch.join()
    assert [type(e) for e in raised] == [ConsecutiveFailures]
    answered = threading.Event()
    threading.Thread(target=lambda: (oracle.create_trial("b"), answered.set()), daemon=True).start()
    assert answered.wait(10), "the oracle's lock was kept by the monitor's thread"


def test_a_silent_workers_trial_is_requeued_while_the_tracking_server_is_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marking the run KILLED waited for MLflow (its client retries a server that is away for
    minutes) before the trial went back to the queue, and held up every later check meanwhile
    (the soak found it): now the trial is queued at once and the mark follows."""
    oracle = chief_oracle(tmp_path)
    trial = oracle.create_trial("a")
    back, marked = threading.Event(), queue.SimpleQueue()

    def kill_trial_runs(*args: object, before: float | None = None) -> list[str]:
        back.wait(30)  # the tracking server is away until `back`
        marked.put((*args[1:3], before))
        return []

    monkeypatch.setattr(serving.tracking, "kill_trial_runs", kill_trial_runs)
    _silence(oracle, "a", 10.0)
    taken_at = time.time()
    monitor = serving.Monitor(oracle, "parent-run")
    monitor.start()  # it checks every second (a fifth of chief_oracle's 5 s timeout)
    try:
        deadline = time.monotonic() + 20
        while oracle._retry_queue != [trial.trial_id] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert oracle._retry_queue == [trial.trial_id], "queued before its run is marked"
        assert marked.empty()
        back.set()
        trial_id, worker, before = marked.get(timeout=30)
    finally:
        back.set()
        monitor.stop()
    assert (trial_id, worker) == (trial.trial_id, "a")
    assert before == pytest.approx(taken_at, abs=5), "only runs started before it was taken"


def test_a_trial_that_fails_in_training_is_not_retried(tmp_path: Path) -> None:
    oracle = chief_oracle(tmp_path, max_requeues=3)
    trial = oracle.create_trial("a")
    trial.status, trial.message = TrialStatus.INVALID, "Traceback ...\nValueError: broken"
    oracle.end_trial(trial)
    assert oracle.get_trial(trial.trial_id).status == TrialStatus.FAILED
    assert oracle._retry_queue == []


def test_a_restarted_chief_gives_running_trials_back_to_their_workers(tmp_path: Path) -> None:
    oracle = chief_oracle(tmp_path)
    a, b = oracle.create_trial("a"), oracle.create_trial("b")
    _complete(oracle, b)
    c = oracle.create_trial("b")
    restarted = chief_oracle(tmp_path)
    restarted.reload()
    assert {w: t.trial_id for w, t in restarted.ongoing_trials.items()} == {
        "a": a.trial_id,
        "b": c.trial_id,
    }
    assert restarted._retry_queue == [] and restarted.tuner_ids == {"a", "b"}
    assert _beat(restarted, "a", a.trial_id)
    # without a heartbeat, Keras Tuner's own reload queues them for anyone
    plain = RandomOracle(
        objective=keras_tuner.Objective("val_accuracy", "max"),
        hyperparameters=restarted.get_space(),
        max_trials=3,
    )
    plain._set_project_dir(str(tmp_path), "chief")
    plain.reload()
    assert sorted(plain._retry_queue) == sorted([a.trial_id, c.trial_id])


def test_a_requeued_trial_handed_out_again_survives_a_chief_restart(tmp_path: Path) -> None:
    """A trial queued again after its worker fell silent, then taken by another worker, was
    lost when the chief restarted: Keras Tuner saves who holds a trial taken from its retry
    queue but not that it runs again, and the restart dropped it as ended, out of the queue
    and given to nobody (the short soak found it)."""
    oracle = chief_oracle(tmp_path)
    trial = oracle.create_trial("a")
    _silence(oracle, "a", 10.0)
    for _, taken in _taken(oracle):
        oracle.requeue(taken, "worker a was silent")
    assert oracle.create_trial("b").trial_id == trial.trial_id
    restarted = chief_oracle(tmp_path)
    restarted.reload()
    assert {w: t.trial_id for w, t in restarted.ongoing_trials.items()} == {"b": trial.trial_id}
    assert _beat(restarted, "b", trial.trial_id), "b keeps the trial it is training"
    _complete(restarted, restarted.ongoing_trials["b"])
    assert restarted.get_trial(trial.trial_id).status == TrialStatus.COMPLETED


class _Chief:
    """Answers heartbeats as the chief's oracle would: RUNNING while `holder` holds the trial."""

    def __init__(self) -> None:
        self.holder: str | None = "0"
        self.asked: list[str] = []

    def heartbeat(self, worker: str, trial_id: str, progress: int) -> bool:
        self.asked.append(f"{worker} {trial_id}")
        return trial_id == self.holder


def test_a_worker_knows_which_hold_of_a_trial_the_chief_took_back() -> None:
    chief = _Chief()
    heartbeat = Heartbeat(chief, "w1", timeout_s=5.0)  # its thread is not started here
    heartbeat.hold("0")
    first = heartbeat._holding
    assert heartbeat.still_holds() and not heartbeat.lost()
    assert chief.asked == ["w1 0"]
    chief.holder = None  # taken back
    assert not heartbeat.still_holds() and heartbeat.lost()
    heartbeat.hold(None)
    heartbeat.hold("0")  # the same trial, given to this worker again
    chief.holder = "0"
    assert not heartbeat.lost() and heartbeat.still_holds()
    chief.holder = None
    assert first is not None and not heartbeat._ask(first)  # a late answer about the old hold
    assert not heartbeat.lost(), "an answer about an earlier hold does not mark this one"


def test_a_ticker_that_wakes_late_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A heartbeat (or the monitor) that runs late says so in the log: a trial taken from a
    live worker is then told from a bug by the timing (issue 26: the soak on a loaded
    machine)."""
    clock = iter([0.0, 10.0, 10.0, 10.2, 10.2])  # woke 9.9 s late, then on time
    monkeypatch.setattr(liveness, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    ticks: list[int] = []

    class Counting(liveness.Ticker):
        def tick(self) -> None:
            ticks.append(1)
            if len(ticks) == 2:
                self.stop()

    with caplog.at_level(logging.WARNING, logger=liveness.__name__):
        Counting("sweep-heartbeat", 0.1)._run()
    assert len(ticks) == 2
    late = [r.getMessage() for r in caplog.records]
    assert late == [
        "sweep-heartbeat woke 9.9 s late (it runs every 0.1 s): this process was held up "
        "(short of CPU, or stopped)"
    ]


class _Cut(grpc.RpcError, grpc.Call):
    """What gRPC raises for a call whose connection broke: the chief went away during it."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


class _Stub:
    def __init__(self, *errors: grpc.StatusCode) -> None:
        self.errors, self.calls = list(errors), 0

    def EndTrial(self, request: str) -> str:  # gRPC's method name
        self.calls += 1
        if self.errors:
            raise _Cut(self.errors.pop(0))
        return f"ended {request}"


def test_a_call_the_chiefs_death_cut_off_is_made_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(liveness.time, "sleep", lambda _: None)
    cut = _Stub(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)
    assert liveness.PatientStub(cut).EndTrial("3") == "ended 3" and cut.calls == 3
    refused = _Stub(grpc.StatusCode.UNKNOWN)  # the chief's oracle raised: its verdict stands
    with pytest.raises(grpc.RpcError):
        liveness.PatientStub(refused).EndTrial("3")
    assert refused.calls == 1


def test_a_worker_gone_between_trials_is_not_waited_for(tmp_path: Path) -> None:
    """Keras Tuner's chief ends once every worker it has seen was told to stop: one killed
    between two trials (after its report, before asking again) kept the short soak's chief
    waiting until the soak's time ran out. Silent there for the heartbeat timeout, it is
    forgotten; one that beats between trials (logging its last trial's standing) is not."""
    oracle = chief_oracle(tmp_path)
    a, b = oracle.create_trial("a"), oracle.create_trial("b")
    _complete(oracle, a)
    _complete(oracle, b)
    _silence(oracle, "a", 10.0)
    _silence(oracle, "b", 10.0)
    assert not _beat(oracle, "b", liveness.BETWEEN_TRIALS), "no trial to hold between trials"
    assert oracle.forget_gone() == ["a"]
    assert oracle.tuner_ids == {"b"} and oracle.forget_gone() == []
    c = oracle.create_trial("b")
    assert oracle.create_trial("a").status == TrialStatus.IDLE, "asks again: a new worker"
    assert oracle.tuner_ids == {"a", "b"}
    _complete(oracle, c)
    for worker in ("a", "b"):
        assert oracle.create_trial(worker).status == TrialStatus.STOPPED
    assert oracle_chief.exit_chief(oracle)


def test_a_worker_beats_between_trials() -> None:
    chief = _Chief()
    heartbeat = Heartbeat(chief, "w1", timeout_s=5.0)  # its thread is not started here
    heartbeat.tick()
    heartbeat.hold("0")
    heartbeat.tick()
    heartbeat.hold(None)
    heartbeat.tick()
    assert chief.asked == ["w1 ", "w1 0", "w1 "]
