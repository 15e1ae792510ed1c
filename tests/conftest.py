"""Shared fixtures: a tiny learnable IMDB tree, configs shrunk to seconds, isolated stores, and
one tiny sweep per session whose MLflow record tests read instead of each running their own.

What keeps the suite fast (issue 15): temporary directories in RAM where a tmpfs exists (the
SQLite store syncs at every commit), an MLflow store migrated once and copied per test (a fresh
one costs 1-3 s of schema migrations), the objects imports made frozen out of the garbage
collector's walks (Keras runs a full collection at every trial), and one sweep per session
(`swept`) read by the tests that only need a finished sweep's record.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service import utils as mlflow_tracking
from omegaconf import DictConfig, OmegaConf

from sweep.config import check_config, compose_config
from sweep.errors import USER_ERROR_EXIT
from sweep.vocabulary import PARENT_TAG

#: The real dataset, beside the checkout (../shared/data), for integration tests.
REAL_DATA = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / ("aclImdb_v1_labeled.tar.gz")
)
#: Artifacts every tracked run (single run or trial) carries.
RUN_ARTIFACTS = {"config.yaml", "learning_curves.png", "attention_heatmap.png", "model_summary.txt"}
POSITIVE = ["great", "wonderful", "superb", "loved", "brilliant", "moving"]
NEGATIVE = ["awful", "boring", "terrible", "hated", "dull", "waste"]
FILLER = ["the", "movie", "film", "plot", "actor", "scene", "story", "it", "was", "and", "a"]
#: A space of three attention widths, tried in this order by the grid tuner.
DIMS = {"model.attention.output_dim": {"type": "choice", "values": [4, 8, 12]}}
#: The session sweep's space: two attention widths.
SWEPT_DIMS = {"model.attention.output_dim": {"type": "choice", "values": [4, 12]}}
#: For tests of shipped experiments that re-run their leaders (dim_search) about something else.
NO_REPLICATES = ("search.replicates.enabled=false",)
#: Where a tmpfs keeps temporary files in RAM (Linux).
RAM_DISK = Path("/dev/shm")


# --- the session -------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """tmp_path in RAM where there is a tmpfs: MLflow's SQLite store syncs every commit, which
    costs a sweep seconds of waiting on a disk (pyproject keeps only failed tests' dirs)."""
    if (
        config.option.basetemp is None
        and "PYTEST_DEBUG_TEMPROOT" not in os.environ
        and RAM_DISK.is_dir()
        and os.access(RAM_DISK, os.W_OK)
    ):
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(RAM_DISK)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist, each worker's first share of the suite starts with slow tests.

    `--dist worksteal` hands each worker one contiguous share, and an idle worker steals the
    tail of another's queue: a slow test met late (alphabetically, the soak) would run alone
    at the end. Here the slow tests' modules are dealt to the shares (most tests first, to the
    share with fewest), each share then filled with quick tests in their order: the quick tests
    at every queue's end are what idle workers steal, and they balance the end of the run."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    slow_modules: dict[str, list[pytest.Item]] = {}
    quick: list[pytest.Item] = []
    for item in items:
        if item.get_closest_marker("slow"):
            slow_modules.setdefault(item.nodeid.split("::")[0], []).append(item)
        else:
            quick.append(item)
    if workers < 2 or not slow_modules:
        return
    shares: list[list[pytest.Item]] = [[] for _ in range(workers)]
    for group in sorted(slow_modules.values(), key=len, reverse=True):
        min(shares, key=len).extend(group)
    ordered, left = [], len(items)
    for k, share in enumerate(shares):
        size = left // (workers - k)  # xdist's worksteal: the pending tests split evenly
        fill = max(0, size - len(share))
        ordered += share + quick[:fill]
        quick, left = quick[fill:], left - size
    items[:] = ordered + quick


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what importing TensorFlow, Keras and MLflow created: Keras' clear_session() runs a
    full garbage collection at every trial, which otherwise walks all of it (~0.5 s a trial)."""
    gc.collect()
    gc.freeze()


# --- data and configs ----------------------------------------------------------------------------


def write_tiny_imdb(root: Path, per_class: int = 100, seed: int = 0) -> Path:
    """An aclImdb/ tree whose sentiment is carried by a few words, so a model learns it fast."""
    rng = random.Random(seed)
    for split in ("train", "test"):
        for label, words in (("pos", POSITIVE), ("neg", NEGATIVE)):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                tokens = [rng.choice(FILLER) for _ in range(rng.randint(8, 30))]
                for _ in range(3):
                    tokens.insert(rng.randrange(len(tokens)), rng.choice(words))
                rating = rng.choice([8, 9, 10] if label == "pos" else [1, 2, 3])
                (folder / f"{i}_{rating}.txt").write_text(" ".join(tokens) + " <br /><br />.")
    return root / "aclImdb"


@pytest.fixture(scope="session")
def tiny_imdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_imdb(tmp_path_factory.mktemp("data"))


def tiny_overrides(work: Path, data_path: Path) -> list[str]:
    """Overrides that make any config run in seconds, writing only under `work`."""
    return [
        f"data.path={data_path}",
        "data.limit=null",
        "data.num_words=64",
        "data.seq_len=16",
        f"data.cache_dir={work / 'cache'}",
        "model.embedding_dim=8",
        "model.attention.output_dim=8",
        "train.epochs=2",
        "train.batch_size=32",
        "train.learning_rate=0.03",
        "train.verbose=0",
        f"tracking.uri=sqlite:///{store_path(work)}",
        f"tracking.artifact_root={work / 'mlruns' / 'artifacts'}",
        "tracking.log_models=none",
        "tracking.log_figures=false",  # ~1 s of CPU a run; the runs that check them turn them on
        f"sweep.dir={work / 'sweeps'}",
    ]


def with_space(cfg: DictConfig, space: dict) -> DictConfig:
    """`cfg` with `space` as its whole search space, validated like a composed config."""
    cfg.search.space = {}
    OmegaConf.set_struct(cfg, False)
    cfg = OmegaConf.merge(cfg, {"search": {"space": space}})
    OmegaConf.set_struct(cfg, True)
    check_config(cfg)
    return cfg


@pytest.fixture
def make_config(tmp_path: Path, tiny_imdb: Path, migrated_store: Path) -> Callable[..., DictConfig]:
    """Compose `conf/` like `python -m sweep`, shrunk to tiny data under tmp_path, whose MLflow
    store is a copy of the migrated empty one."""
    copy_store(migrated_store, tmp_path)

    def make(*overrides: str) -> DictConfig:
        return compose_config([*tiny_overrides(tmp_path, tiny_imdb), *overrides])

    return make


@pytest.fixture
def make_sweep(make_config: Callable[..., DictConfig]) -> Callable[..., DictConfig]:
    """The smoke experiment on tiny data with `space` as its whole search space."""

    def make(space: dict, *overrides: str) -> DictConfig:
        return with_space(make_config("+experiment=smoke", "search.patience=0", *overrides), space)

    return make


# --- MLflow stores and records -------------------------------------------------------------------


def store_path(work: Path) -> Path:
    """The SQLite file of `work`'s MLflow store (tiny_overrides' tracking.uri)."""
    return work / "mlruns" / "mlflow.db"


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, its schema migrated once (1-3 s) for every test to copy."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments(max_results=1)
    return db


def copy_store(template: Path, work: Path) -> str:
    """Give `work` a ready MLflow store, a copy of `template` (milliseconds); its tracking URI."""
    store_path(work).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, store_path(work))
    return f"sqlite:///{store_path(work)}"


def runs_of(uri: str, experiment: str) -> tuple[list[Run], list[Run]]:
    """(parents, children) of an experiment, read back from the store at `uri`; ([], []) while
    the experiment does not exist."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return [], []
    runs = client.search_runs([found.experiment_id], max_results=1000)
    return (
        [r for r in runs if PARENT_TAG not in r.data.tags],
        [r for r in runs if PARENT_TAG in r.data.tags],
    )


def sweep_runs(cfg: DictConfig) -> tuple[list[Run], list[Run]]:
    """(parents, children) of the sweep `cfg` names, in the store it logs to."""
    return runs_of(str(cfg.tracking.uri), str(cfg.name))


def assert_complete_record(cfg: DictConfig, expected_trials: int) -> None:
    """One parent; each of `expected_trials` trials FINISHED exactly once; nothing left RUNNING."""
    parents, children = sweep_runs(cfg)
    assert len(parents) == 1
    finished = [r for r in children if r.info.status == "FINISHED"]
    ids = Counter(r.data.tags["trial_id"] for r in finished)
    assert len(ids) == expected_trials, ids
    assert max(ids.values()) == 1, f"a finished trial was logged twice: {ids}"
    assert not [r for r in [*parents, *children] if r.info.status == "RUNNING"]


class Interrupt:
    """Ctrl-C in the middle of the n-th fit, as a user would press it."""

    def __init__(self, at_fit: int) -> None:
        self.calls, self.at_fit = 0, at_fit

    def __call__(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def fit(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == self.at_fit:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        return fit


def relocate_store(db: Path, old: str, new: str) -> None:
    """Rewrite every path under `old` that an MLflow SQLite store holds (artifact locations and
    URIs, in whatever table) to lie under `new`, so a copied store is self-contained."""
    with sqlite3.connect(db) as connection:
        tables = [
            t for (t,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        for table in tables:
            columns = connection.execute(f'PRAGMA table_info("{table}")').fetchall()
            for column in (
                c[1] for c in columns if any(t in c[2].upper() for t in ("CHAR", "TEXT"))
            ):
                connection.execute(
                    f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                    f'WHERE instr("{column}", ?) > 0',
                    (old, new, old),
                )
    connection.close()


#: Files a run's artifacts or a sweep's state hold paths in (configs, tables, tuner state).
TEXT_SUFFIXES = {".yaml", ".yml", ".json", ".txt", ".csv", ".md", ""}


def relocate_files(work: Path, old: str, new: str) -> None:
    """Rewrite the paths under `old` in the text files under `work` (a logged config.yaml
    names its store, for one) to lie under `new`."""
    for path in work.rglob("*"):
        if path.is_file() and path.suffix in TEXT_SUFFIXES and path != store_path(work):
            text = path.read_bytes()
            if old.encode() in text:
                path.write_bytes(text.replace(old.encode(), new.encode()))


def forget_artifact_locations() -> None:
    """MLflow caches each run's (and logged model's) artifact location by id for the whole
    process; a copied store holds the same ids at another place."""
    mlflow_tracking._artifact_repos_cache.clear()


@pytest.fixture(autouse=True)
def _artifact_locations_per_test() -> Iterator[None]:
    """No test resolves a run's artifacts to where another test's copy of a store put them."""
    yield
    forget_artifact_locations()


# --- the session's sweep -------------------------------------------------------------------------


@dataclass(frozen=True)
class Swept:
    """A finished sweep: its config, the best score `tuner.run` returned, and its work dir."""

    cfg: DictConfig
    best: float
    work: Path
    data: Path
    overrides: tuple[str, ...]

    @property
    def uri(self) -> str:
        return str(self.cfg.tracking.uri)

    def runs(self) -> tuple[list[Run], list[Run]]:
        return sweep_runs(self.cfg)

    def config(self, work: Path, *overrides: str, space: dict | None = None) -> DictConfig:
        """The same sweep's config with its files under `work`, `overrides` on top, and its
        space (or `space`) as the whole search space."""
        composed = compose_config([*tiny_overrides(work, self.data), *self.overrides, *overrides])
        return with_space(composed, space or OmegaConf.to_container(self.cfg.search.space))

    def copy(self, work: Path, *overrides: str, space: dict | None = None) -> DictConfig:
        """A copy of the whole sweep (store, artifacts, tuner state, cache) under `work`, for a
        test that writes to it; the config that resumes it there."""
        shutil.copytree(self.work, work, dirs_exist_ok=True)
        relocate_store(store_path(work), str(self.work), str(work))
        relocate_files(work, str(self.work), str(work))
        forget_artifact_locations()
        return self.config(work, *overrides, space=space)


#: How the session's sweep is configured (beyond tiny_overrides and SWEPT_DIMS).
SWEPT = (
    "+experiment=smoke",
    "search.patience=0",
    "search.tuner=grid",
    "search.max_trials=2",
    "search.executions_per_trial=2",
    "tracking.log_models=best",
    "tracking.log_figures=true",
)


@pytest.fixture(scope="session")
def swept(tmp_path_factory: pytest.TempPathFactory, tiny_imdb: Path, migrated_store: Path) -> Swept:
    """One tiny sweep for the whole session: the smoke experiment as a grid over two attention
    widths, two executions (seeds) each, the best model logged. Tests only READ its record; a
    test that writes to a sweep works on `swept.copy(tmp_path)`. Under pytest-xdist the first
    worker to need it runs it (~15 s of CPU); the others copy its record."""
    work = tmp_path_factory.mktemp("swept")
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return _sweep_once(work, tiny_imdb, migrated_store)
    shared = tmp_path_factory.getbasetemp().parent  # this session's, every worker's
    with (shared / "swept.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        made = shared / "swept.json"
        if made.exists():
            first = json.loads(made.read_text())
            return _copy_sweep(first, work, tiny_imdb)
        done = _sweep_once(work, tiny_imdb, migrated_store)
        made.write_text(json.dumps({"work": str(work), "data": str(tiny_imdb), "best": done.best}))
        return done


def _sweep_once(work: Path, tiny_imdb: Path, migrated_store: Path) -> Swept:
    """The session's sweep, run in `work`."""
    from sweep.tuner import run as sweep_run

    copy_store(migrated_store, work)
    cfg = with_space(compose_config([*tiny_overrides(work, tiny_imdb), *SWEPT]), SWEPT_DIMS)
    best = sweep_run(cfg)
    return Swept(cfg, best, work, tiny_imdb, SWEPT)


def _copy_sweep(first: dict[str, Any], work: Path, tiny_imdb: Path) -> Swept:
    """Another worker's session sweep (`_sweep_once`'s work, data and best), copied into
    `work`, its paths (store, artifacts, tuner state, logged configs) rewritten to this
    worker's."""
    shutil.copytree(first["work"], work, dirs_exist_ok=True)
    for old, new in ((first["work"], str(work)), (first["data"], str(tiny_imdb))):
        relocate_store(store_path(work), old, new)
        relocate_files(work, old, new)
    forget_artifact_locations()
    cfg = with_space(compose_config([*tiny_overrides(work, tiny_imdb), *SWEPT]), SWEPT_DIMS)
    return Swept(cfg, float(first["best"]), work, tiny_imdb, SWEPT)


# --- processes -----------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running `python -m sweep` in a subprocess from tmp_path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parents[1] / "src"), env.get("PYTHONPATH", "")]
    )
    # the package's own defaults: a quiet console, which the tests' line counts rely on
    for name in ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"):
        env.pop(name, None)
    return env


PYTHON = sys.executable


def run_python(
    argv: Sequence[str], cwd: Path, env: dict[str, str], timeout: int = 300
) -> subprocess.CompletedProcess:
    """`python ARGV` (a script and its arguments, or `-m MODULE ...`), output captured."""
    return subprocess.run(
        [PYTHON, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def run_cli(
    args: Sequence[str],
    cwd: Path,
    env: dict[str, str],
    module: str = "sweep",
    timeout: int = 300,
) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` as a user runs it, output captured."""
    return run_python(["-m", module, *args], cwd, env, timeout)


def run_module_noting_imports(
    module: str, args: Sequence[str], cwd: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`python -m MODULE ARGS` (run by `runpy`), and which of TensorFlow and Keras it imported:
    its stdout's last line. A command that builds no model should load neither (seconds)."""
    script = (
        "import runpy, sys\n"
        f"sys.argv = [{module!r}, *sys.argv[1:]]\n"
        "try:\n"
        f"    runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
        "finally:\n"
        "    print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))\n"
    )
    result = run_python(["-c", script, *args], cwd, env)
    return result, json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"'))


def own_lines(stderr: str) -> list[str]:
    """The non-blank stderr lines: the harness's own, since TensorFlow's start-up chatter is
    kept off the console (`sweep.quiet`); any that came back would count against a test."""
    return [line for line in stderr.splitlines() if line.strip()]


def user_experiment(work: Path, name: str, body: str) -> Path:
    """A user's own experiment file in a --config-dir beside conf/; the dir."""
    folder = work / "my_conf" / "experiment"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /search: tuner\n" + body
    )
    return folder.parent


def assert_nothing_ran(work: Path) -> None:
    """Bad input costs nothing: no MLflow store or run, no data read (tiny_overrides' paths)."""
    assert not (work / "mlruns").exists(), "no MLflow run may be created for bad input"
    assert not (work / "cache").exists(), "no data may be read for bad input"


def assert_rejected(result: subprocess.CompletedProcess, starts: str, work: Path) -> None:
    """A real process refused its command line: exit 2, one stderr line, nothing ran."""
    lines = own_lines(result.stderr)
    assert result.returncode == USER_ERROR_EXIT, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(starts), lines[0]
    assert_nothing_ran(work)


@pytest.fixture
def refused(
    tmp_path: Path,
    tiny_imdb: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., str]:
    """`python -m sweep [OPTIONS] ARGS` (tiny_overrides before ARGS) in this process, for a
    command line that must be refused: `sweep.cli` exits 2 with one stderr line and starts no
    job; returns the line. What only a real process shows (no TensorFlow line) has its own
    tests (test_reliability)."""
    from sweep import cli

    def refuse(*args: str, options: Sequence[str] = ()) -> str:
        monkeypatch.chdir(tmp_path)
        argv = ["sweep", *options, *tiny_overrides(tmp_path, tiny_imdb), *args]
        monkeypatch.setattr(sys, "argv", argv)
        jobs: list[DictConfig] = []
        with pytest.raises(SystemExit) as exited:
            cli.main(jobs.append)
        lines = own_lines(capsys.readouterr().err)
        assert exited.value.code == USER_ERROR_EXIT, lines
        assert len(lines) == 1, lines
        assert not jobs, "a job started"
        assert_nothing_ran(tmp_path)
        return lines[0]

    return refuse


def nested(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A config tree from dotted keys ({"a.b": 1} -> {"a": {"b": 1}}), as a run logs it."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def chief_oracle(
    directory: Path,
    timeout_s: float = 5.0,
    max_requeues: int = 3,
    progress_timeout_s: float | None = None,
) -> Any:
    """A chief's Keras Tuner oracle in this process (random search over one choice, heartbeats
    on, progress watched with `progress_timeout_s`), its state under `directory`."""
    import keras_tuner

    from sweep.tuner.oracles import RandomOracle

    hp = keras_tuner.HyperParameters()
    hp.Choice("x", [1, 2, 3, 4, 5, 6])
    oracle = RandomOracle(
        objective=keras_tuner.Objective("val_accuracy", "max"),
        hyperparameters=hp,
        max_trials=3,
        seed=1,
    )
    oracle.watch(timeout_s, max_requeues, progress_timeout_s)
    oracle._set_project_dir(str(directory), "chief")
    return oracle


class Servers:
    """Servers a test starts (`mlflow ui`, `mlflow models serve`...), each in its own process
    group (they run their workers as children), all stopped with their groups at its end."""

    def __init__(self, work: Path) -> None:
        self.work, self.processes = work, list[subprocess.Popen]()

    def start(
        self,
        command: Sequence[str],
        probe: str,
        name: str,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 180.0,
    ) -> None:
        """Start `command` in the test's directory, its output in NAME.log; return once the URL
        `probe` answers 200, fail with the log's end if it dies or never does."""
        log_path = self.work / f"{name}.log"
        with log_path.open("w") as log:
            process = subprocess.Popen(
                list(command),
                cwd=self.work,
                env=None if env is None else dict(env),
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.processes.append(process)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(probe, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"{name} did not start: {log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    """`Servers` started under tmp_path, stopped at the test's end."""
    started = Servers(tmp_path)
    yield started
    started.stop()
