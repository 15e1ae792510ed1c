"""Local parallel mode (`sweep.workers=N`): a chief and N workers as processes on this machine,
behind a local tracking server when the store is SQLite; workers that die are restarted. The
chief's oracle listens on loopback and asks for a token of its own, made for each launch and
handed to the children in their environment, never on a command line."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sweep import tracking
from sweep.cluster import LOOPBACK, cores, thread_env
from sweep.distributed.server import (
    SERVER_START_S,
    TrackingServer,
    free_port,
    local_store_uri,
    start_server,
)
from sweep.errors import USER_ERROR_EXIT, SweepError
from sweep.schema.distributed import TOKEN_ENV
from sweep.tuner import recorded_best

log = logging.getLogger(__name__)


@dataclass
class _Child:
    name: str
    overrides: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    restarts: int = 0


def launch(cfg: DictConfig) -> float:
    """Local parallel mode: a chief and `sweep.workers` workers as processes on this machine;
    returns the sweep's best objective value.

    A worker that dies is restarted with the same id, so the chief hands it back its trial; the
    chief failing, a worker's user error, or a worker dying more than `distributed.max_restarts`
    times stops everything. With a SQLite store (concurrent writers would hit 'database is
    locked') a tracking server on loopback fronts the same store for the sweep's duration.
    """
    n = int(cfg.sweep.workers)
    threads = int(cfg.distributed.threads or max(1, cores() // n))
    with tempfile.TemporaryDirectory(prefix=f"sweep-{cfg.name}-") as tmp:
        server = _local_server(cfg, Path(tmp))
        children: list[_Child] = []
        try:  # `finally` stops the server and every child, whatever fails
            uri = server.uri if server is not None else str(cfg.tracking.uri)
            log.info(
                "local parallel sweep: a chief and %d worker(s), %d TensorFlow thread(s) each, "
                "tracking at %s",
                n,
                threads,
                uri,
            )
            config_file = Path(tmp) / "config.yaml"
            config_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
            _start_children(children, config_file, uri, n, threads)
            if server is not None:
                server.wait(SERVER_START_S)
            _supervise(config_file, children[0], children[1:], int(cfg.distributed.max_restarts))
        except KeyboardInterrupt:
            # Ctrl-C reached the children too: let them close their runs before any signal
            _stop_children(children, settle_s=10.0)
            raise
        finally:
            _stop_children(children)
            if server is not None:
                server.stop()
    return recorded_best(cfg)


def _local_server(cfg: DictConfig, tmp: Path) -> TrackingServer | None:
    """A tracking server in front of a local store, started without waiting: it starts while
    TensorFlow starts in the children, who wait for it. None for a tracking server's URI."""
    if not tracking.is_local_store(str(cfg.tracking.uri)):
        return None
    # created here so its artifacts live where a one-process sweep puts them
    tracking.configure(cfg.tracking)
    tracking.use_experiment(str(cfg.name), cfg.tracking)
    return start_server(
        local_store_uri(str(cfg.tracking.uri)),
        str(Path(cfg.tracking.artifact_root).resolve()),
        log_path=tmp / "mlflow-server.log",
        wait_s=None,
    )


def _start_children(
    children: list[_Child], config_file: Path, uri: str, workers: int, threads: int
) -> None:
    """The chief (first; it trains nothing, so one thread) and the workers, each added to
    `children` as it starts, so a failure to start one still stops the others. They share a
    token made here (the chief refuses calls without it); on loopback, no TLS."""
    common = [
        f"distributed.oracle={LOOPBACK}:{free_port()}",
        f"tracking.uri={uri}",
        "sweep.workers=0",
        *(f"distributed.{key}=null" for key in ("token_file", "tls_cert", "tls_key", "tls_ca")),
    ]
    token = secrets.token_urlsafe()
    children.append(_spawn(config_file, "chief", [*common, "distributed.role=chief"], 1, token))
    for i in range(workers):
        overrides = [*common, "distributed.role=worker", f"distributed.worker_id=worker{i}"]
        children.append(_spawn(config_file, f"worker{i}", overrides, threads, token))


def _spawn(config_file: Path, name: str, overrides: list[str], threads: int, token: str) -> _Child:
    overrides = [*overrides, f"distributed.threads={threads}"]
    env = {**os.environ, **thread_env(threads), TOKEN_ENV: token}
    return _Child(name, overrides, env, _popen(config_file, overrides, env))


def _popen(config_file: Path, overrides: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "sweep.distributed", "child", str(config_file), *overrides]
    return subprocess.Popen(command, env=env)


def _supervise(config_file: Path, chief: _Child, workers: list[_Child], max_restarts: int) -> None:
    """Wait for the chief; restart workers that die meanwhile (the chief gives them their trial
    back); stop on anything a restart cannot fix."""
    while True:
        code = chief.process.poll()
        if code is not None:
            if code != 0:
                raise SweepError(f"the chief stopped (exit {code}); see its log above")
            for worker in workers:  # every worker has been told to stop by now
                _wait(worker)
            return
        for worker in workers:
            code = worker.process.poll()
            if code not in (None, 0):
                _restart(config_file, worker, code, max_restarts)
        time.sleep(0.5)


def _restart(config_file: Path, worker: _Child, code: int, max_restarts: int) -> None:
    """Start a dead worker again under its id, unless it died of a user error or too often."""
    if code == USER_ERROR_EXIT:
        raise SweepError(f"{worker.name} stopped with an error; see its log above")
    if worker.restarts >= max_restarts:
        raise SweepError(
            f"{worker.name} died {worker.restarts + 1} times (last exit {code}); "
            "stopping the sweep (distributed.max_restarts)"
        )
    worker.restarts += 1
    log.warning(
        "%s died (exit %s); restarting it (%d/%d): it retries the trial it was on",
        worker.name,
        code,
        worker.restarts,
        max_restarts,
    )
    worker.process = _popen(config_file, worker.overrides, worker.env)


def _wait(child: _Child, timeout_s: float = 60.0) -> None:
    try:
        code = child.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop after the sweep ended", child.name)
        return
    if code != 0:
        log.warning("%s exited with %s after the sweep ended", child.name, code)


def _stop_children(children: list[_Child], grace_s: float = 20.0, settle_s: float = 0.0) -> None:
    """Interrupt what still runs (each marks its open trial KILLED), then kill stragglers;
    `settle_s` first gives children already interrupted time to finish on their own."""
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline and any(c.process.poll() is None for c in children):
        time.sleep(0.2)
    running = [c for c in children if c.process.poll() is None]
    for child in running:
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for child in running:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
