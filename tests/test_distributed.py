"""Distributed sweeps: Keras Tuner's chief and workers as real processes on loopback, logging to
a real MLflow tracking server (SQLite, or PostgreSQL where it is installed)."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from benchmarks.soak.services import Postgres, Unavailable
from sweep import cluster, distributed
from sweep.__main__ import run as main_run
from sweep.config import compose_config
from sweep.distributed.child import load_child_config
from sweep.errors import ConfigError, SweepError
from sweep.schema import check_single_run
from sweep.schema.distributed import TOKEN_ENV
from tests.conftest import (
    NO_REPLICATES,
    PYTHON,
    copy_store,
    runs_of,
    store_path,
    tiny_overrides,
)

# --- config and environment --------------------------------------------------------------------


def test_roles_default_to_one_process() -> None:
    cfg = compose_config(["+experiment=smoke"])
    assert cfg.distributed.role == "none" and cfg.sweep.workers == 0


@pytest.mark.parametrize(
    ("overrides", "key", "reason"),
    [
        (
            ["distributed.role=worker", "distributed.worker_id=w1"],
            "distributed.oracle",
            "HOST:PORT",
        ),
        (
            ["distributed.role=chief", "distributed.oracle=chiefhost"],
            "distributed.oracle",
            "HOST:PORT",
        ),
        (
            ["distributed.role=chief", "distributed.oracle=h:70000"],  # no such port
            "distributed.oracle",
            "HOST:PORT",
        ),
        (
            ["distributed.role=worker", "distributed.oracle=h:8000"],
            "distributed.worker_id",
            "own id",
        ),
        (
            [
                "distributed.role=worker",
                "distributed.oracle=h:8000",
                "distributed.worker_id=chief2",
            ],
            "distributed.worker_id",
            "chief",
        ),
        (
            ["distributed.role=chief", "distributed.oracle=h:8000", "tracking.uri=sqlite:///x.db"],
            "tracking.uri",
            "tracking server",
        ),
        (["sweep.workers=2", "distributed.role=chief"], "sweep.workers", "drop distributed.role"),
        (["sweep.workers=-1"], "sweep.workers", "at least 0"),
        (["distributed.role=boss"], "distributed.role", "expected one of"),
    ],
)
def test_bad_distributed_settings_are_one_line_errors(
    overrides: list[str], key: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with a token: a chief beyond loopback needs one (tests/test_oracle_token.py)
    monkeypatch.setenv(TOKEN_ENV, secrets.token_urlsafe())
    with pytest.raises(ConfigError) as caught:
        compose_config(["+experiment=smoke", "tracking.uri=http://127.0.0.1:5000", *overrides])
    assert caught.value.key == key and reason in caught.value.reason, str(caught.value)
    named = [o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")]
    if named:  # the message names the value given (a missing one: the key alone)
        assert str(caught.value).startswith(f"config error: {key}={named[-1]}: "), caught.value


def test_a_single_run_refuses_roles_and_workers() -> None:
    with pytest.raises(ConfigError, match=r"sweep\.workers=2: needs a sweep"):
        check_single_run(compose_config(["sweep.workers=2"]))
    with pytest.raises(ConfigError, match=r"distributed\.role=chief: needs a sweep"):
        check_single_run(
            compose_config(
                [
                    "distributed.role=chief",
                    "distributed.oracle=127.0.0.1:8000",
                    "tracking.uri=http://127.0.0.1:5000",
                ]
            )
        )


def test_roles_set_keras_tuners_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    base = ["+experiment=smoke", "tracking.uri=http://127.0.0.1:5000"]
    where = "distributed.oracle=10.0.0.5:8000"
    monkeypatch.setenv(TOKEN_ENV, secrets.token_urlsafe())  # beyond loopback: a token
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert cluster.activate(compose_config([*base, "distributed.role=chief", where])) == "chief"
    assert os.environ["KERASTUNER_TUNER_ID"] == "chief"
    assert (os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"]) == (
        "10.0.0.5",
        "8000",
    )
    worker = compose_config([*base, "distributed.role=worker", where, "distributed.worker_id=gpu1"])
    assert cluster.activate(worker) == "worker"
    assert os.environ["KERASTUNER_TUNER_ID"] == "gpu1"
    # a plain run must not be turned into a worker by a leftover environment
    assert cluster.activate(compose_config(base)) == "none"
    assert "KERASTUNER_ORACLE_IP" not in os.environ and "KERASTUNER_TUNER_ID" not in os.environ


def test_child_processes_get_the_launchers_exact_config(tmp_path: Path) -> None:
    cfg = compose_config(["+experiment=smoke", "model.dropout=0.3"])
    cfg.search.space = {}  # a space built in code, not in conf/
    space = {"train.batch_size": {"type": "choice", "values": [16, 48]}}
    OmegaConf.set_struct(cfg, False)
    cfg = OmegaConf.merge(cfg, {"search": {"space": space}})
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    child = load_child_config(
        tmp_path / "config.yaml",
        [
            "distributed.role=worker",
            "distributed.worker_id=worker1",
            "distributed.oracle=127.0.0.1:9000",
            "tracking.uri=http://127.0.0.1:5000",
        ],
    )
    assert child.model.dropout == 0.3
    assert list(child.search.space) == ["train.batch_size"]
    assert child.search.space["train.batch_size"]["values"] == [16, 48]
    assert (child.distributed.role, child.distributed.worker_id) == ("worker", "worker1")
    with pytest.raises(Exception, match="no_such_key"):
        load_child_config(tmp_path / "config.yaml", ["no_such_key=1"])


def test_server_recipe_binds_loopback_and_keeps_mlflows_protections() -> None:
    command = distributed.server_command("sqlite:////tmp/x.db", "/tmp/artifacts")
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert "--disable-security-middleware" not in command
    assert "--allowed-hosts" not in command  # MLflow's default: loopback and private networks
    named = distributed.server_command(
        "postgresql://mlflow@db/mlflow",
        "s3://bucket/mlflow",
        host="10.0.0.5",
        allowed_hosts="ml:5000",
    )
    hosts = named[named.index("--allowed-hosts") + 1].split(",")
    assert "ml:5000" in hosts and "127.0.0.1:*" in hosts and "*" not in hosts
    with pytest.raises(ValueError, match="host checking off"):
        distributed.server_command("sqlite:///x.db", "a", allowed_hosts="ml:5000,*")


def test_worker_gives_up_clearly_when_no_chief_answers() -> None:
    from sweep.errors import SweepError

    cfg = compose_config(
        [
            "+experiment=smoke",
            "tracking.uri=http://127.0.0.1:5000",
            "distributed.role=worker",
            "distributed.worker_id=w1",
            f"distributed.oracle=127.0.0.1:{distributed.free_port()}",
            "distributed.connect_timeout_s=1",
        ]
    )
    with pytest.raises(SweepError, match=r"no chief answered at distributed\.oracle=127\.0\.0\.1:"):
        cluster.wait_for_chief(cfg)


def test_each_process_closes_only_runs_it_may_close(tmp_path: Path, migrated_store: Path) -> None:
    """Who may mark what KILLED: a restarted worker its own trials; a (re)starting chief only
    runs outside its sweep; the chief at the end every trial still open."""
    from sweep import tracking

    cfg = compose_config([f"tracking.uri={copy_store(migrated_store, tmp_path)}"])
    tracking.configure(cfg.tracking)
    experiment = tracking.use_experiment("dist", cfg.tracking)
    client = MlflowClient()

    def run(parent: str | None = None, **tags: str) -> str:
        if parent:
            tags["mlflow.parentRunId"] = parent
        return client.create_run(experiment, tags=tags).info.run_id

    old = run(sweep="dist")  # an earlier sweep's parent a crash left RUNNING
    parent = run(sweep="dist", oracle_port="8000")
    a1 = run(parent, worker_id="a", trial_id="1")
    b2 = run(parent, worker_id="b", trial_id="2")
    client.log_metric(b2, "best_val_accuracy", 0.75)
    client.set_terminated(b2, "FINISHED")
    a3 = run(parent, worker_id="a", trial_id="3")
    c4 = run(parent, worker_id="c", trial_id="4")

    def status(run_id: str) -> str:
        return client.get_run(run_id).info.status

    assert tracking.find_sweep_parent(experiment, "dist", 8000) == parent
    assert tracking.find_sweep_parent(experiment, "dist", 8001) is None
    assert sorted(tracking.close_open_trials(parent, worker_id="a")) == sorted([a1, a3])
    assert status(c4) == "RUNNING" and status(b2) == "FINISHED"
    assert tracking.close_stale_runs_outside(experiment, parent) == [old]
    assert status(parent) == status(c4) == "RUNNING"
    assert tracking.close_open_trials(parent) == [c4]
    assert status(parent) == "RUNNING", "the chief ends its own parent itself"
    assert tracking.best_finished(parent, "val_accuracy", "max") == 0.75
    assert tracking.trials_done(parent) == 1


def test_the_chief_marks_only_the_run_a_silent_worker_left(
    tmp_path: Path, migrated_store: Path
) -> None:
    """The chief marks a taken trial's run KILLED after it has queued the trial again, so the
    same worker may hold a new, live run of it by then: only runs started before the take."""
    from sweep import tracking

    cfg = compose_config([f"tracking.uri={copy_store(migrated_store, tmp_path)}"])
    tracking.configure(cfg.tracking)
    experiment = tracking.use_experiment("dist", cfg.tracking)
    client = MlflowClient()
    parent = client.create_run(experiment).info.run_id
    tags = {"mlflow.parentRunId": parent, "worker_id": "a", "trial_id": "5"}
    taken_at = time.time()
    left = client.create_run(experiment, start_time=int(taken_at * 1000) - 5000, tags=tags)
    again = client.create_run(experiment, start_time=int(taken_at * 1000) + 1000, tags=tags)
    assert tracking.kill_trial_runs(parent, "5", "a", "silent", before=taken_at) == [
        left.info.run_id
    ]
    assert client.get_run(again.info.run_id).info.status == "RUNNING"


# --- servers ------------------------------------------------------------------------------------


@pytest.fixture
def postgres_store() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on loopback (trust auth, its own socket directory), as the
    soak runs one (benchmarks/soak/services.py)."""
    try:
        import psycopg  # noqa: F401 - the driver MLflow's server needs
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[dev]' brings psycopg[binary])")
    try:
        cluster = Postgres()
    except Unavailable as missing:
        pytest.skip(str(missing))
    try:
        yield cluster.create()
    finally:
        cluster.destroy()


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _sweep_args(work: Path, data: Path, *extra: str) -> list[str]:
    base = [o for o in tiny_overrides(work, data) if not o.startswith("tracking.uri=")]
    # replicates (on in dim_search) are not what these tests are about: trials only
    return [*base, "+experiment=dim_search", "search.patience=0", *NO_REPLICATES, *extra]


# --- chief and workers ---------------------------------------------------------------------------

#: Worker a's progress timeout (s): longer than a tiny trial's set-up on a loaded machine.
PROGRESS_S = 6
#: `python -m sweep` whose first fit hangs HANG_S in a callback after its second batch: the
#: process lives and its heartbeat beats, but its trial makes no progress (issue 23).
HANG = f"""
import runpy, sys, time
import keras
from sweep import train

class Hang(keras.callbacks.Callback):
    hung = False

    def on_train_batch_end(self, batch, logs=None):
        if batch == 1 and not Hang.hung:
            Hang.hung = True
            time.sleep({PROGRESS_S * 2.5})

fit = train.fit
train.fit = lambda *a, **k: fit(*a, **{{**k, "callbacks": [*k.get("callbacks", []), Hang()]}})
sys.argv[0] = "sweep"
runpy.run_module("sweep", run_name="__main__")
"""


@pytest.mark.slow
def test_chief_and_two_workers_log_every_trial_once_on_one_server(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tiny_imdb: Path,
    migrated_store: Path,
    cli_env: dict[str, str],
) -> None:
    """The team recipe: a chief and two workers started by hand, one tracking server on
    PostgreSQL (SQLite where PostgreSQL is not installed: a server on SQLite is also local
    parallel mode's, which the worker-killed test below runs, so CI runs only PostgreSQL).
    Worker a's first fit hangs in a callback (HANG): alive and beating, it makes no progress,
    so after `distributed.progress_timeout_s` its trial is taken back and worker b finishes it;
    every trial is FINISHED exactly once."""
    try:
        store = request.getfixturevalue("postgres_store")
    except pytest.skip.Exception:
        store = copy_store(migrated_store, tmp_path)  # the server starts on a ready store
    trials = 3
    server = distributed.start_server(
        store, str(tmp_path / "server-artifacts"), log_path=tmp_path / "server.log"
    )
    processes: dict[str, subprocess.Popen] = {}
    env = {**cli_env, TOKEN_ENV: secrets.token_urlsafe()}  # the chief asks every call for it
    try:
        args = _sweep_args(
            tmp_path,
            tiny_imdb,
            f"search.max_trials={trials}",
            "train.epochs=1",
            f"tracking.uri={server.uri}",
            f"distributed.oracle=127.0.0.1:{distributed.free_port()}",
            f"distributed.progress_timeout_s={PROGRESS_S}",
        )
        roles = {
            "worker-a": ["distributed.role=worker", "distributed.worker_id=worker-a"],
            "worker-b": ["distributed.role=worker", "distributed.worker_id=worker-b"],
            "chief": ["distributed.role=chief"],  # last: workers wait for it
        }
        for name, role in roles.items():
            start = ["-c", HANG] if name == "worker-a" else ["-m", "sweep"]
            with (tmp_path / f"{name}.log").open("wb") as out:
                processes[name] = subprocess.Popen(
                    [PYTHON, *start, *args, *role],
                    cwd=tmp_path,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        for name in ("chief", "worker-b"):
            code = processes[name].wait(timeout=300)
            assert code == 0, f"{name} exited {code}:\n{_tail(tmp_path / f'{name}.log')}"
        # worker a wakes from its hang, says it lost its trial and asks for the next; if the
        # sweep ended meanwhile it waits on the chief (docs/distributed.md: stop it)
        deadline = time.monotonic() + 120
        while "was taken back by the chief" not in _tail(tmp_path / "worker-a.log", 100_000):
            assert time.monotonic() < deadline, _tail(tmp_path / "worker-a.log")
            time.sleep(0.5)
        try:
            assert processes["worker-a"].wait(timeout=10) == 0, _tail(tmp_path / "worker-a.log")
        except subprocess.TimeoutExpired:
            processes["worker-a"].terminate()
        assert "refused calls" not in _tail(tmp_path / "chief.log", 100_000)

        parents, children = runs_of(server.uri, "dim_search")
        client = MlflowClient(server.uri)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert parents[0].data.tags["sweep"] == "dim_search"
        finished = [r for r in children if r.info.status == "FINISHED"]
        ids = Counter(r.data.tags["trial_id"] for r in finished)
        assert len(finished) == trials and set(ids) == {str(i) for i in range(trials)}, ids
        (hung,) = [r for r in children if r.info.status != "FINISHED"]  # worker a's first
        assert hung.info.status == "KILLED" and hung.data.tags["worker_id"] == "worker-a"
        assert "worker worker-a made no progress" in hung.data.tags["kill_reason"]
        retried = [r for r in finished if r.data.tags["trial_id"] == hung.data.tags["trial_id"]]
        assert [r.data.tags["worker_id"] for r in retried] == ["worker-b"]
        assert {r.data.tags["worker_id"] for r in children} <= {"worker-a", "worker-b"}
        assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
        artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
        assert "leaderboard.csv" in artifacts  # uploaded through the server to its artifact root
        assert any((tmp_path / "server-artifacts").rglob("leaderboard.csv"))
        assert "val_accuracy" in client.get_run(children[0].info.run_id).data.metrics
        # the oracle token is in no console, param, tag nor artifact
        token = env[TOKEN_ENV]
        for name in processes:
            assert token not in (tmp_path / f"{name}.log").read_text(errors="replace"), name
        for run in [*parents, *children]:
            recorded = [*run.data.params.values(), *run.data.tags.values()]
            assert not [value for value in recorded if token in value], run.info.run_id
        for path in (tmp_path / "server-artifacts").rglob("*"):
            assert not path.is_file() or token.encode() not in path.read_bytes(), path

        # the server's DNS-rebinding protection is on: a foreign Host header is refused
        request_ = urllib.request.Request(
            f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=1",
            headers={"Host": "attacker.example.com"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request_, timeout=10)
        assert refused.value.code in (400, 403)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        server.stop()


def _running_trial(db: Path) -> tuple[str, str, int] | None:
    """(trial id, worker id, pid) of a trial that is RUNNING and already training."""
    try:
        _, children = runs_of(f"sqlite:///{db}", "dim_search")
    except Exception:  # the server holds the SQLite write lock a moment: look again
        return None
    for run in children:
        tags = run.data.tags
        if (
            run.info.status == "RUNNING"
            and "worker_pid" in tags
            and "val_accuracy" in run.data.metrics
        ):
            return tags["trial_id"], tags["worker_id"], int(tags["worker_pid"])
    return None


@pytest.mark.slow
def test_a_worker_killed_mid_trial_loses_only_that_trial(
    tmp_path: Path,
    tiny_imdb: Path,
    migrated_store: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two workers, two trials of 15 epochs (long enough to be seen training): one worker is
    killed mid-trial, restarted, and trains that trial again. The launcher runs here (a
    process of its own is ~5 s of CPU more); a thread kills the worker it started."""
    trials, db = 2, store_path(tmp_path)
    args = _sweep_args(
        tmp_path,
        tiny_imdb,
        f"search.max_trials={trials}",
        f"tracking.uri=sqlite:///{db}",  # local parallel mode puts a server in front of it
        "train.epochs=15",
        "sweep.workers=2",
    )
    # This test reads the store while the sweep writes it: a ready store, so the two never
    # race to migrate a fresh SQLite file (the sweep serialises its own processes with a lock).
    copy_store(migrated_store, tmp_path)
    victims: list[tuple[str, str, int]] = []
    swept = threading.Event()

    def kill_one_training_worker() -> None:
        deadline = time.monotonic() + 240
        while not swept.is_set() and time.monotonic() < deadline:
            victim = _running_trial(db)
            if victim is not None:
                os.kill(victim[2], signal.SIGKILL)  # a worker process the launcher started
                victims.append(victim)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_one_training_worker, daemon=True)
    monkeypatch.chdir(tmp_path)
    killer.start()
    try:
        with caplog.at_level(logging.WARNING, logger="sweep.distributed.launcher"):
            main_run(compose_config(args))
    finally:
        swept.set()
        killer.join(timeout=10)
    assert victims, "no trial seen training"
    ((trial_id, worker_id, pid),) = victims
    assert f"{worker_id} died (exit -9); restarting it" in caplog.text
    parents, children = runs_of(f"sqlite:///{db}", "dim_search")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert not [r for r in children if r.info.status == "RUNNING"]
    finished = Counter(r.data.tags["trial_id"] for r in children if r.info.status == "FINISHED")
    assert set(finished) == {str(i) for i in range(trials)}, finished
    assert max(finished.values()) == 1, f"a trial was logged FINISHED twice: {finished}"
    killed = [r for r in children if r.info.status == "KILLED"]
    assert [(r.data.tags["trial_id"], r.data.tags["worker_id"]) for r in killed] == [
        (trial_id, worker_id)
    ], "only the killed worker's trial is lost, and it is marked KILLED"
    retried = next(
        r for r in children if r.info.status == "FINISHED" and r.data.tags["trial_id"] == trial_id
    )
    assert retried.data.tags["worker_id"] == worker_id  # the restarted worker got it back
    assert int(retried.data.tags["worker_pid"]) != pid
    assert len(children) == trials + 1


@pytest.mark.slow
def test_consecutive_failures_stop_a_local_parallel_sweep_cleanly(
    tmp_path: Path,
    tiny_imdb: Path,
    migrated_store: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The launcher runs here (the server, chief and worker it starts are processes; how a
    sweep's error ends a real process, exit 2 and one line: tests/test_train.py)."""
    db = store_path(tmp_path)
    copy_store(migrated_store, tmp_path)
    args = _sweep_args(
        tmp_path,
        tiny_imdb,
        "search.max_trials=3",
        "search.max_consecutive_failures=2",
        "train.optimizer=sgd",
        "train.learning_rate=1e38",  # every trial's loss turns NaN
        f"tracking.uri=sqlite:///{db}",
        "sweep.workers=1",
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SweepError, match=r"^worker0 stopped with an error"):
        main_run(compose_config(args))
    assert "too many consecutive failures" in capfd.readouterr().err
    parents, children = runs_of(f"sqlite:///{db}", "dim_search")
    assert [r.info.status for r in children] == ["FAILED", "FAILED"]
    assert [p.info.status for p in parents] == ["KILLED"], "the stopped chief closed its parent"
