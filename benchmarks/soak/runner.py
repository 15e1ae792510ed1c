"""One soak, start to end: PostgreSQL, the MLflow server with its login and a user for the sweep,
the chief and K workers; then the faults of a seeded plan, each after its wait, while the crew is
supervised (a process that ends unmeant is noted and started again, as a restart policy would);
then the sweep's end, the ledger read from MLflow and the chief's record, and everything it
started stopped and removed, whatever happened."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

from benchmarks.soak.crew import CHIEF, Crew, last_words
from benchmarks.soak.faults import KINDS, POSTGRES_RESTART, Fault, Plan
from benchmarks.soak.injector import Injector
from benchmarks.soak.ledger import Ledger, check
from benchmarks.soak.record import SweepRecord, delays, mlflow_runs, with_oracle
from benchmarks.soak.services import (
    PASSWORD_ENV,
    USERNAME_ENV,
    LoginServer,
    Postgres,
    environment,
)
from sweep.cluster import thread_env
from sweep.distributed import free_port
from sweep.schema.distributed import TOKEN_ENV
from sweep.vocabulary import WORKER_TAG

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "aclImdb_v1_labeled.tar.gz"
#: The sweep's experiment (created by the admin, EDIT for the sweep's user) and that user.
EXPERIMENT, SWEEPER = "soak", "sweeper"
OBJECTIVE = "val_accuracy"
#: A trial may lose its worker this often before it counts as FAILED: no injected fault may
#: make a trial run out of retries (the issue's rule); a real crash loop still ends.
MAX_REQUEUES = 1000
#: Unmeant exits (crashes) after which the soak gives up: something is broken, not flaky.
MAX_EXITS = 50
#: A process that exits unmeant this many times in a row, each time within QUICK_EXIT_S of its
#: start, is in a crash loop (a bad command line, a missing service): the soak gives up.
CRASH_LOOP, QUICK_EXIT_S = 3, 120.0
#: The soak's own look at MLflow (which workers are busy) does not wait out a server that is
#: away: MLflow's client would retry for minutes.
QUICK_ANSWER = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
#: Two searched keys, one continuous: a random search of hundreds of distinct trials.
SPACE = (
    "search.space={train.learning_rate: {type: float, min: 0.001, max: 0.03, sampling: log}, "
    "model.attention.output_dim: {type: choice, values: [4, 8, 16]}}"
)
#: A tiny trial on a slice of the real data: one epoch of a small model.
TINY = (
    "data.num_words=2000",
    "data.seq_len=32",
    "model.embedding_dim=8",
    "train.epochs=1",
    "train.batch_size=64",
    "train.verbose=0",
)


@dataclass(frozen=True)
class Settings:
    """One soak's size, bounds and seed."""

    trials: int = 200
    workers: int = 6
    faults: int = 50
    seed: int = 0
    heartbeat_s: float = 20.0
    min_gap_s: float = 15.0
    max_gap_s: float = 45.0
    max_minutes: float = 180.0
    data: Path = DEFAULT_DATA
    limit: int | None = 400
    kinds: tuple[str, ...] = KINDS
    fixed_order: bool = False  # faults in `kinds`' order, cycled (a test's script)
    postgres: bool = True  # False: a SQLite store (no PostgreSQL restarts)
    server_workers: int = 2
    work: Path | None = None  # None: a new temporary directory, removed at the end
    overrides: tuple[str, ...] = ()  # more sweep overrides, last
    env: tuple[tuple[str, str], ...] = ()  # more environment for the sweep's processes

    def plan(self) -> Plan:
        if not self.postgres and POSTGRES_RESTART in self.kinds:
            raise ValueError("postgres_restart needs the PostgreSQL store")
        return Plan(
            self.faults, self.seed, self.min_gap_s, self.max_gap_s, self.kinds, self.fixed_order
        )


@dataclass
class Result:
    """A soak's ledger, with what produced it."""

    ledger: Ledger
    settings: Settings
    seconds: float
    work: Path
    record: SweepRecord


def sweep_args(settings: Settings, work: Path, uri: str, oracle: str) -> list[str]:
    """The command line every process of the sweep gets (the role comes after)."""
    limit = "null" if settings.limit is None else str(settings.limit)
    return [
        "+experiment=smoke",
        f"name={EXPERIMENT}",
        f"data.path={settings.data}",
        f"data.limit={limit}",
        f"data.cache_dir={work / 'cache'}",
        *TINY,
        "search.tuner=random",
        f"search.max_trials={settings.trials}",
        "search.patience=0",
        f"search.max_consecutive_failures={MAX_REQUEUES}",
        SPACE,
        f"tracking.uri={uri}",
        "tracking.log_models=none",
        "tracking.log_figures=false",  # a run's figures are ~1 s of CPU, not what this tests
        f"tracking.artifact_root={work / 'mlruns'}",
        f"sweep.dir={work / 'sweeps'}",
        f"distributed.oracle={oracle}",
        f"distributed.heartbeat_timeout_s={settings.heartbeat_s:g}",
        f"distributed.max_requeues={MAX_REQUEUES}",
        "distributed.threads=1",
        *settings.overrides,
    ]


@dataclass
class Supervisor:
    """Passes time while watching the crew: a process that ended unmeant is noted (a line in
    the ledger) and started again, unless the sweep is over."""

    crew: Crew
    deadline: float
    started: float = field(default_factory=time.time)
    exits: list[str] = field(default_factory=list)
    quick: Counter[str] = field(default_factory=Counter)  # exits in a row soon after a start

    def tick(self) -> None:
        for member, code in self.crew.exits():
            if code == 0:  # the chief ended the sweep, or a worker was told there is no more
                continue
            line = (
                f"{member.name} exited {code} at +{time.time() - self.started:.0f} s: "
                f"{last_words(member.log_path)}"
            )
            log.warning("%s", line)
            self.exits.append(line)
            soon = time.monotonic() - member.started < QUICK_EXIT_S
            self.quick[member.name] = self.quick[member.name] + 1 if soon else 0
            if len(self.exits) > MAX_EXITS or self.quick[member.name] >= CRASH_LOOP:
                raise RuntimeError(f"{len(self.exits)} unmeant exits: giving up ({line})")
            if not self.crew.chief_done():
                self.crew.start(member.name)

    def wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            self.tick()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.5, left))

    def wait_until(self, done: Callable[[], bool], seconds: float, what: str) -> None:
        end = time.monotonic() + seconds
        while not done():
            if time.monotonic() > end:
                raise TimeoutError(f"no {what} within {seconds:.0f} s")
            self.wait(0.5)

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _busy(uri: str) -> Callable[[], set[str]]:
    """Which workers have a trial run going on, as MLflow says (none while it cannot say)."""

    def busy() -> set[str]:
        client = MlflowClient(uri)
        try:
            with environment(**QUICK_ANSWER):
                found = client.get_experiment_by_name(EXPERIMENT)
                runs = client.search_runs(
                    [found.experiment_id], "attributes.status = 'RUNNING'", max_results=200
                )
        except Exception:  # the server or its database is away (a fault): no preference
            return set()
        return {r.data.tags[WORKER_TAG] for r in runs if WORKER_TAG in r.data.tags}

    return busy


def soak(settings: Settings) -> Result:
    """Run one soak; its ledger. Everything started is stopped, and a temporary work directory
    removed, whatever happens."""
    plan = settings.plan()  # a bad plan fails before anything starts
    began = time.monotonic()
    work = settings.work or Path(tempfile.mkdtemp(prefix="sweep-soak-"))
    with contextlib.ExitStack() as cleanup:
        if settings.work is None:
            cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        postgres = None
        if settings.postgres:
            postgres = Postgres()
            cleanup.callback(postgres.destroy)
            store = postgres.create()
        else:
            store = f"sqlite:///{work / 'mlflow.db'}"
        server = LoginServer(store, work / "server", workers=settings.server_workers)
        cleanup.callback(server.stop)
        server.start()
        password = server.add_sweeper(SWEEPER, EXPERIMENT)
        cleanup.enter_context(environment(**{USERNAME_ENV: SWEEPER, PASSWORD_ENV: password}))
        crew = _crew(settings, work, server.uri)
        cleanup.callback(crew.close)
        supervisor = Supervisor(crew, began + settings.max_minutes * 60)
        injector = Injector(
            crew,
            server,
            postgres,
            settings.heartbeat_s,
            supervisor.wait,
            supervisor.wait_until,
            _busy(server.uri),
        )
        faults = _run(plan, crew, supervisor, injector)
        ended = crew.chief_done()
        crew.close()  # anything left (a soak out of time) closes its runs first
        record = _record(work, server.uri)
    held_up = delays(work / "logs")
    ledger = check(record, faults, settings.trials, supervisor.exits, held_up, ended)
    return Result(ledger, settings, time.monotonic() - began, work, record)


def _crew(settings: Settings, work: Path, uri: str) -> Crew:
    """The chief and `settings.workers` workers, started (the workers wait for the chief)."""
    oracle = f"127.0.0.1:{free_port()}"
    env = {**os.environ, **thread_env(1), TOKEN_ENV: secrets.token_urlsafe(), **dict(settings.env)}
    crew = Crew(work, sweep_args(settings, work, uri, oracle), env, oracle)
    crew.start(CHIEF)
    for i in range(settings.workers):
        crew.start(f"worker-{i}")
    return crew


def _run(plan: Plan, crew: Crew, supervisor: Supervisor, injector: Injector) -> list[Fault]:
    """The plan's faults, each after its wait, until they are all in, the sweep ends or time
    is up; then the sweep's end (or the time bound). The faults injected."""
    supervisor.wait_until(lambda: bool(injector.busy()), supervisor.left(), "first trial")
    faults: list[Fault] = []
    for gap, kind, rng in plan.steps():
        supervisor.wait(min(gap, max(0.0, supervisor.left())))
        if crew.chief_done() or supervisor.left() <= 0:
            break
        fault = injector.inject(kind, rng)
        if fault is not None:
            faults.append(fault)
    with contextlib.suppress(TimeoutError):  # out of time: the ledger says INCOMPLETE
        supervisor.wait_until(crew.chief_done, max(1.0, supervisor.left()), "end of the sweep")
        supervisor.wait_until(lambda: not crew.workers(), 120.0, "workers leaving")
    return faults


def _record(work: Path, uri: str) -> SweepRecord:
    """What MLflow and the chief's project directory hold of the sweep."""
    record = mlflow_runs(MlflowClient(uri), EXPERIMENT, OBJECTIVE)
    return with_oracle(record, work / "sweeps" / EXPERIMENT / "tuner")
