"""Hostile input and faults, with a real MLflow store and, where the fault is about processes
(a server going away, two writers, what a user's terminal shows), real processes: every bad
input is one line naming the key and value, before anything is read, trained or logged."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from sweep import tracking
from sweep.__main__ import run as main_run
from sweep.config import compose_config
from sweep.distributed import server_env
from sweep.errors import ConfigError
from tests.conftest import (
    NO_REPLICATES,
    PYTHON,
    assert_rejected,
    copy_store,
    own_lines,
    run_cli,
    runs_of,
    store_path,
    tiny_overrides,
    user_experiment,
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "starts"),
    [
        (["model.attention.output_dim=0"], "config error: model.attention.output_dim=0:"),
        (["+experiment=no_such_sweep"], "config error: experiment=no_such_sweep: no such"),
    ],
    ids=["value", "experiment"],
)
def test_a_real_process_refuses_bad_input_in_one_line(
    tmp_path: Path, tiny_imdb: Path, cli_env: dict[str, str], argv: list[str], starts: str
) -> None:
    """As a user sees it: exit 2 and one stderr line, nothing written (every kind of bad
    value: tests/test_config.py, in-process). Under a second: TensorFlow is not loaded."""
    result = run_cli([*tiny_overrides(tmp_path, tiny_imdb), *argv], tmp_path, cli_env)
    assert_rejected(result, starts, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "code"), [(["train.epochs=0"], 2), (["tracking.uri=mlflow://x"], 2), (["--help"], 0)]
)
def test_a_command_line_is_checked_before_tensorflow_loads(argv: list[str], code: int) -> None:
    """`python -m sweep`'s checks come first: a refused command line (or --help) is answered
    without importing TensorFlow, Keras or MLflow, seconds of start-up."""
    script = (
        "import runpy, sys\n"
        f"sys.argv = ['sweep', *{argv!r}]\n"
        "try:\n"
        "    runpy.run_module('sweep', run_name='__main__')\n"
        "except SystemExit as done:\n"
        "    heavy = ('tensorflow', 'keras', 'keras_tuner', 'mlflow')\n"
        "    print(done.code or 0, sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    out = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == f"{code} []", out


def test_search_space_values_are_data_never_code(
    refused: Callable[..., str], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    conf = user_experiment(
        tmp_path,
        "inject",
        f"""name: inject
search:
  space:
    model.attention.initializer:
      type: choice
      values:
        - glorot_uniform
        - {{_target_: os.system, command: "touch {marker}"}}
        - {{class_name: system, module: os, config: {{command: "touch {marker}"}}}}
""",
    )
    line = refused("+experiment=inject", options=["--config-dir", str(conf)])
    assert line.startswith("config error: search.space.model.attention.initializer.values=")
    assert not marker.exists(), "a config value was executed"


@pytest.mark.parametrize(
    ("override", "starts"),
    [
        (
            "tracking.uri=sqlite:////sys/attention-sweep/mlflow.db",
            "config error: tracking.uri=sqlite:////sys/attention-sweep/mlflow.db: cannot write",
        ),
        (
            "tracking.artifact_root=/sys/attention-sweep-artifacts",
            "config error: tracking.artifact_root=/sys/attention-sweep-artifacts: cannot write",
        ),
    ],
)
def test_read_only_store_fails_before_training(
    make_config: Callable[..., DictConfig], tmp_path: Path, override: str, starts: str
) -> None:
    if not Path("/sys").is_dir() or _writable(Path("/sys")):
        pytest.skip("needs a read-only /sys to stand for a read-only disk")
    with pytest.raises(ConfigError) as err:
        main_run(make_config(override))
    assert str(err.value).startswith(starts) and "\n" not in str(err.value), str(err.value)
    assert not (tmp_path / "cache").exists(), "nothing may be read or trained"


def _writable(folder: Path) -> bool:
    try:
        (folder / "attention-sweep-probe").mkdir()
    except OSError:
        return False
    (folder / "attention-sweep-probe").rmdir()
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_server_at_start_is_one_line(
    make_config: Callable[..., DictConfig], tmp_path: Path
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError) as err:
        main_run(make_config(f"tracking.uri={uri}"))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"config error: tracking.uri={uri}: no MLflow tracking server")
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_two_sweeps_on_one_fresh_sqlite_store_lose_nothing(
    tmp_path: Path, tiny_imdb: Path, cli_env: dict[str, str]
) -> None:
    """Both start on a store that does not exist yet: the schema-migration race and "database
    is locked" are the known ways this fails."""
    common = [
        *tiny_overrides(tmp_path, tiny_imdb),
        "+experiment=smoke",
        "search.tuner=grid",
        "search.max_trials=2",
        "search.patience=0",
    ]
    processes = [
        subprocess.Popen(
            [PYTHON, "-m", "sweep", *common, f"name=concurrent_{i}"],
            cwd=tmp_path,
            env=cli_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
    uri = f"sqlite:///{store_path(tmp_path)}"
    client = MlflowClient(uri)
    for i in range(2):
        parents, children = runs_of(uri, f"concurrent_{i}")
        assert len(parents) == 1 and len(children) == 2
        assert Counter(r.info.status for r in [*parents, *children]) == {"FINISHED": 3}
        for child in children:
            steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy")]
            assert sorted(steps) == [0, 1], "a metric was lost"


class MlflowServer:
    """A real `mlflow server` on loopback (SQLite backend, local artifact store)."""

    def __init__(self, work: Path) -> None:
        self.work, self.port = work, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [
            str(Path(PYTHON).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.work / 'server.db'}",
            "--artifacts-destination",
            str(self.work / "server-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        log = (self.work / "server.log").open("a")
        # its own process group: `mlflow server` runs the web server as its child
        self.process = subprocess.Popen(  # as scripts/mlflow-server: no GenAI job runner
            command,
            cwd=self.work,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env=server_env(),
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        raise AssertionError((self.work / "server.log").read_text()[-3000:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


@pytest.mark.slow
def test_tracking_server_going_away_mid_sweep_loses_nothing(
    tmp_path: Path, tiny_imdb: Path, migrated_store: Path, cli_env: dict[str, str]
) -> None:
    """Documented behaviour: the sweep stops with a clear message, finished trials stay logged,
    and re-running once the server is back (here: a resume needs no process of its own)
    retries the interrupted trial. The grid's first trial trains 1 epoch, its second 30 (long
    enough to be still training when the server goes)."""
    shutil.copyfile(migrated_store, tmp_path / "server.db")  # the server starts on a ready store
    server = MlflowServer(tmp_path)
    server.start()
    env = {**cli_env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    args = [
        *tiny_overrides(tmp_path, tiny_imdb),
        "+experiment=dim_search",
        *NO_REPLICATES,
        "search.space={train.epochs: {type: choice, values: [1, 30]}}",
        "search.max_trials=2",
        "search.patience=0",
        f"tracking.uri={server.uri}",
    ]
    try:
        sweep = subprocess.Popen(
            [PYTHON, "-m", "sweep", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        client = MlflowClient(server.uri)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and sweep.poll() is None:
            experiment = client.get_experiment_by_name("dim_search")
            if experiment is not None and client.search_runs(
                [experiment.experiment_id], "tags.trial_id != '' and attributes.status = 'FINISHED'"
            ):
                break
            time.sleep(0.5)
        assert sweep.poll() is None, "the sweep ended before the server could go away"
        server.stop()
        _, err = sweep.communicate(timeout=300)
        lines = own_lines(err)
        assert sweep.returncode == 2, err[-3000:]
        assert lines[-1].startswith("sweep stopped: the MLflow tracking server stopped answering")

        server.start()
        main_run(compose_config(args))  # the same command, in this process: a resume
        experiment = client.get_experiment_by_name("dim_search").experiment_id
        runs = client.search_runs([experiment])
        finished = Counter(
            r.data.tags.get("trial_id")
            for r in runs
            if r.info.status == "FINISHED" and "mlflow.parentRunId" in r.data.tags
        )
        assert set(finished) == {"0", "1"} and max(finished.values()) == 1, finished
        assert not [r for r in runs if r.info.status == "RUNNING"]
    finally:
        server.stop()


def test_only_runs_of_dead_processes_are_closed(tmp_path: Path, migrated_store: Path) -> None:
    """A restart closes what a crash left RUNNING, never a run another live process writes."""
    uri = copy_store(migrated_store, tmp_path)
    tracking.configure(OmegaConf.create({"uri": uri, "artifact_root": str(tmp_path / "art")}))
    client = MlflowClient(uri)
    experiment = client.create_experiment("stale")
    dead_pid = subprocess.Popen(["true"])
    dead_pid.wait()
    host = socket.gethostname()
    live = client.create_run(experiment, tags={"host": host, "pid": str(os.getpid())})
    crashed = client.create_run(experiment, tags={"host": host, "pid": str(dead_pid.pid)})
    untagged = client.create_run(experiment)
    closed = tracking.close_stale_runs(experiment)
    assert set(closed) == {crashed.info.run_id, untagged.info.run_id}
    assert client.get_run(live.info.run_id).info.status == "RUNNING"
    assert client.get_run(crashed.info.run_id).info.status == "KILLED"
    assert client.get_run(untagged.info.run_id).info.status == "KILLED"
