"""Distributed sweeps on Keras Tuner's own chief/worker engine, logged to one MLflow server.

No scheduler of our own. The chief is Keras Tuner's oracle served over gRPC: it hands out trials
and trains none. Workers ask it for trials and log each one under the chief's parent run on a
shared MLflow tracking server. This module turns `distributed.*` into Keras Tuner's environment
variables, lets a worker find the chief's parent run, starts MLflow tracking servers
(`scripts/mlflow-server`), and runs local parallel mode (`sweep.workers=N`): a chief and N
workers as processes on this machine, behind a local tracking server when the store is SQLite.

    python -m sweep.distributed serve [--port 5000 ...]   # a tracking server (the script)
    python -m sweep.distributed child CONFIG KEY=VALUE... # one process of local parallel mode
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

#: Keras Tuner's switches for its distributed mode (read when a tuner is built and searched).
TUNER_ID_ENV, ORACLE_IP_ENV, ORACLE_PORT_ENV = (
    "KERASTUNER_TUNER_ID",
    "KERASTUNER_ORACLE_IP",
    "KERASTUNER_ORACLE_PORT",
)
#: The chief's tuner id: Keras Tuner makes any process whose id contains "chief" the oracle.
CHIEF_ID = "chief"
#: Where a local tracking server binds unless told otherwise: never beyond this machine.
LOOPBACK = "127.0.0.1"
#: Host headers of this machine's own clients, kept when --allowed-hosts names others.
LOOPBACK_HOSTS = ("localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*")
#: How long a freshly started MLflow server may take (it migrates a new database first).
SERVER_START_S = 180.0
#: Exit code of `python -m sweep` for a user error (bad config, data, sweep): not worth a retry.
USER_ERROR_EXIT = 2


def _sweep_error(message: str) -> Exception:
    # imported late: `serve` must not start TensorFlow, which `sweep.tuner` imports
    from sweep.errors import SweepError

    return SweepError(message)


# --- roles -------------------------------------------------------------------------------------


def oracle_address(value: str) -> tuple[str, int]:
    """(host, port) of `distributed.oracle`, already checked by the schema."""
    host, _, port = value.rpartition(":")
    return host, int(port)


def activate(cfg: DictConfig) -> str:
    """Set Keras Tuner's distributed environment for this process's role; returns the role.

    Keras Tuner reads these variables when the tuner is built (a worker's oracle becomes a gRPC
    client) and searched (the chief serves instead of training), so this runs before both.
    """
    dist = cfg.distributed
    names = (TUNER_ID_ENV, ORACLE_IP_ENV, ORACLE_PORT_ENV)
    if dist.role == "none":
        stray = [name for name in names if name in os.environ]
        if stray:
            log.warning("ignoring %s: set distributed.role to run distributed", ", ".join(stray))
            for name in stray:
                del os.environ[name]
    else:
        host, port = oracle_address(str(dist.oracle))
        os.environ[TUNER_ID_ENV] = CHIEF_ID if dist.role == "chief" else str(dist.worker_id)
        os.environ[ORACLE_IP_ENV], os.environ[ORACLE_PORT_ENV] = host, str(port)
    if dist.threads:
        limit_threads(int(dist.threads))
    return str(dist.role)


def thread_env(threads: int) -> dict[str, str]:
    """Environment that caps TensorFlow (and OpenMP) at `threads` threads in a new process."""
    return {
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
    }


def limit_threads(threads: int) -> None:
    """Cap this process's TensorFlow threads, so processes sharing a machine do not fight over
    its cores (the environment covers a process not yet started; the setters this one)."""
    os.environ.update(thread_env(threads))
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already started: the environment set at launch applies
        log.debug("TensorFlow already initialised; thread limits come from the environment")


def parent_tags(cfg: DictConfig) -> dict[str, str]:
    """Tags of the chief's parent run by which workers find it."""
    from sweep import tracking

    if cfg.distributed.role != "chief":
        return {}
    return {tracking.ORACLE_PORT_TAG: str(oracle_address(str(cfg.distributed.oracle))[1])}


def worker_tags(cfg: DictConfig) -> dict[str, str]:
    """Who ran a trial: the worker id (a restarted worker closes its own leftovers by it), host
    and process id."""
    from sweep import tracking

    return {
        tracking.WORKER_TAG: str(cfg.distributed.worker_id),
        "worker_host": socket.gethostname(),
        "worker_pid": str(os.getpid()),
    }


def wait_for_chief(cfg: DictConfig) -> None:
    """Block until the chief's oracle accepts connections.

    The chief serves only after it has created (or resumed) the sweep's MLflow experiment and
    parent run and closed what older crashes left open, so a worker past this point never sees
    a half-made sweep, and never races the chief to create the experiment.
    """
    import grpc

    address, timeout = str(cfg.distributed.oracle), float(cfg.distributed.connect_timeout_s)
    log.info("waiting for the chief's oracle at %s (up to %.0f s)", address, timeout)
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise _sweep_error(
            f"no chief answered at distributed.oracle={address} within {timeout:.0f} s: start "
            "the chief (distributed.role=chief) with the same oracle address, or check the "
            "address and firewall"
        ) from None
    finally:
        channel.close()


def find_parent(cfg: DictConfig, experiment: str) -> str:
    """The chief's parent run, looked up in the shared tracking server by sweep name and oracle
    port; retried for a while in case the server lags behind the chief."""
    from sweep import tracking

    port = oracle_address(str(cfg.distributed.oracle))[1]
    deadline = time.monotonic() + min(60.0, float(cfg.distributed.connect_timeout_s))
    while True:
        parent = tracking.find_sweep_parent(experiment, str(cfg.name), port)
        if parent is not None:
            location = tracking.artifact_location(experiment)
            remote = urlparse(str(cfg.tracking.uri)).hostname not in (LOOPBACK, "localhost", "::1")
            if remote and urlparse(location).scheme in ("", "file"):
                log.warning(
                    "experiment %s keeps artifacts at the local path %s: workers on other "
                    "machines write them to their own disks. Give the sweep a name the server "
                    "has not seen (it then stores artifacts itself).",
                    cfg.name,
                    location,
                )
            return parent
        if time.monotonic() > deadline:
            raise _sweep_error(
                f"the chief at {cfg.distributed.oracle} answers, but {cfg.tracking.uri} holds no "
                f"running sweep '{cfg.name}' for it: give the chief and every worker the same "
                "tracking.uri and experiment"
            )
        time.sleep(1.0)


# --- tracking server ---------------------------------------------------------------------------


def server_command(
    backend_store_uri: str,
    artifacts_destination: str,
    *,
    host: str = LOOPBACK,
    port: int = 5000,
    allowed_hosts: str | None = None,
    workers: int = 1,
) -> list[str]:
    """`mlflow server` as the recipe runs it: a database backend, artifacts proxied by the
    server to one shared root (workers need no shared disk), bound to one chosen interface.

    MLflow's host-header and CORS protections stay on: `allowed_hosts` only adds the names
    clients use to reach the server (loopback stays allowed); the security middleware is never
    disabled, and a wildcard, which would switch host checking off, is refused.
    """
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_destination,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if allowed_hosts:
        names = [h.strip() for h in allowed_hosts.split(",") if h.strip()]
        if any(h == "*" for h in names):
            raise ValueError("--allowed-hosts '*' turns MLflow's host checking off; name the hosts")
        # MLflow replaces its defaults with the list given: keep this machine's own clients
        command += ["--allowed-hosts", ",".join([*names, *LOOPBACK_HOSTS])]
    return command


def server_env() -> dict[str, str]:
    # MLflow's background job runner serves GenAI features a sweep does not use
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on now (the OS picks it), for a local server or oracle."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def local_store_uri(uri: str) -> str:
    """A local store URI with an absolute path, so a server started elsewhere finds it."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    if parsed.scheme in ("file", ""):
        return Path(parsed.path or uri).resolve().as_uri()
    return uri


@dataclass
class TrackingServer:
    """A `mlflow server` process this process started, in its own process group."""

    process: subprocess.Popen[bytes]
    uri: str
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    def stop(self, grace_s: float = 15.0) -> None:
        """Stop the server and the workers it forked (its own process group)."""
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait(timeout=grace_s)
        # the server's own workers may outlive it by a moment; end them with it
        _signal_group(self.process, signal.SIGKILL)
        if self._log is not None:
            self._log.close()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def wait_for_tracking(cfg: DictConfig) -> None:
    """Wait for the tracking server a distributed role logs to, so a server still starting
    (or a wrong address) is one clear message, not MLflow's retries."""
    timeout = float(cfg.distributed.connect_timeout_s)
    uri = str(cfg.tracking.uri).rstrip("/")
    try:
        wait_healthy(uri, None, timeout)
    except Exception:
        raise _sweep_error(
            f"no MLflow tracking server answered at tracking.uri={uri} within {timeout:.0f} s: "
            "start one (scripts/mlflow-server; docs/distributed.md) or check the address"
        ) from None


def _signal_group(process: subprocess.Popen[Any], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def start_server(
    backend_store_uri: str,
    artifacts_destination: str,
    *,
    host: str = LOOPBACK,
    port: int | None = None,
    log_path: Path,
    wait_s: float | None = SERVER_START_S,
) -> TrackingServer:
    """Start a tracking server; wait until it answers /health unless `wait_s` is None (the
    caller has other start-up to overlap with the server's, and waits later)."""
    port = port or free_port(host)
    command = server_command(backend_store_uri, artifacts_destination, host=host, port=port)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = log_path.open("ab")
    process = subprocess.Popen(
        command, stdout=out, stderr=subprocess.STDOUT, env=server_env(), start_new_session=True
    )
    server = TrackingServer(process, f"http://{host}:{port}", log_path, out)
    if wait_s is not None:
        try:
            wait_healthy(server.uri, server, wait_s)
        except BaseException:
            server.stop()
            raise
        log.info("MLflow tracking server at %s (store %s)", server.uri, backend_store_uri)
    return server


def wait_healthy(uri: str, server: TrackingServer | None, timeout_s: float) -> None:
    """Poll the server's /health until it answers OK; fail early if `server` (ours) died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server is not None and server.process.poll() is not None:
            raise _sweep_error(
                f"the MLflow server for {uri} exited with {server.process.returncode}:\n"
                + server.log_tail()
            )
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise _sweep_error(f"the MLflow server at {uri} did not answer within {timeout_s:.0f} s")


# --- local parallel mode -----------------------------------------------------------------------


def cores() -> int:
    """Cores this process may use (its CPU affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class _Child:
    name: str
    overrides: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    restarts: int = 0


def launch(cfg: DictConfig) -> float:
    """Local parallel mode: a chief and `sweep.workers` workers as processes on this machine.

    A worker that dies is restarted with the same id, so the chief hands it back its trial; the
    chief failing, a worker's user error, or a worker dying more than `distributed.max_restarts`
    times stops everything. With a SQLite store (concurrent writers would hit 'database is
    locked') a tracking server on loopback fronts the same store for the sweep's duration.
    """
    from sweep import tracking
    from sweep.tuner import STATE_FILE

    n = int(cfg.sweep.workers)
    threads = int(cfg.distributed.threads or max(1, cores() // n))
    with tempfile.TemporaryDirectory(prefix=f"sweep-{cfg.name}-") as tmp:
        server = None
        if tracking.is_local_store(str(cfg.tracking.uri)):
            # created here so its artifacts live where a one-process sweep puts them
            tracking.configure(cfg.tracking)
            tracking.use_experiment(str(cfg.name), cfg.tracking)
            server = start_server(
                local_store_uri(str(cfg.tracking.uri)),
                str(Path(cfg.tracking.artifact_root).resolve()),
                log_path=Path(tmp) / "mlflow-server.log",
                wait_s=None,  # it starts while TensorFlow starts in the children, who wait for it
            )
        children: list[_Child] = []
        try:  # `finally` stops the server and every child, whatever fails
            uri = server.uri if server is not None else str(cfg.tracking.uri)
            config_file = Path(tmp) / "config.yaml"
            config_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
            common = [
                f"distributed.oracle={LOOPBACK}:{free_port()}",
                f"tracking.uri={uri}",
                "sweep.workers=0",
            ]
            log.info(
                "local parallel sweep: a chief and %d worker(s), %d TensorFlow thread(s) each, "
                "tracking at %s",
                n,
                threads,
                uri,
            )
            chief = _spawn(config_file, "chief", [*common, "distributed.role=chief"], 1)
            children.append(chief)
            for i in range(n):
                overrides = [*common, "distributed.role=worker", f"distributed.worker_id=worker{i}"]
                children.append(_spawn(config_file, f"worker{i}", overrides, threads))
            if server is not None:
                wait_healthy(server.uri, server, SERVER_START_S)
            _supervise(config_file, chief, children[1:], int(cfg.distributed.max_restarts))
        except KeyboardInterrupt:
            # Ctrl-C reached the children too: let them close their runs before any signal
            _stop_children(children, settle_s=10.0)
            raise
        finally:
            _stop_children(children)
            if server is not None:
                server.stop()
    state = Path(cfg.sweep.dir) / str(cfg.name) / STATE_FILE
    tracking.configure(cfg.tracking)
    best = tracking.run_metric(
        json.loads(state.read_text())["parent_run_id"], f"best_{cfg.search.objective}"
    )
    return float(best) if best is not None else float("nan")


def _spawn(config_file: Path, name: str, overrides: list[str], threads: int) -> _Child:
    overrides = [*overrides, f"distributed.threads={threads}"]
    env = {**os.environ, **thread_env(threads)}
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
                raise _sweep_error(f"the chief stopped (exit {code}); see its log above")
            for worker in workers:  # every worker has been told to stop by now
                _wait(worker)
            return
        for worker in workers:
            code = worker.process.poll()
            if code in (None, 0):
                continue
            if code == USER_ERROR_EXIT:
                raise _sweep_error(f"{worker.name} stopped with an error; see its log above")
            if worker.restarts >= max_restarts:
                raise _sweep_error(
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
        time.sleep(0.5)


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


def load_child_config(config_file: str | Path, overrides: Sequence[str]) -> DictConfig:
    """The launcher's resolved config (exactly what it was given, even built in code) with one
    process's role on top, typed by the schema like a composed one."""
    from sweep.schema import Config

    loaded = OmegaConf.merge(
        OmegaConf.structured(Config),
        OmegaConf.load(config_file),
        OmegaConf.from_dotlist(list(overrides)),
    )
    assert isinstance(loaded, DictConfig)
    return loaded


def _child_main(config_file: str, overrides: Sequence[str]) -> int:
    """One process of local parallel mode."""
    from sweep.schema import validate

    cfg = load_child_config(config_file, overrides)
    who = cfg.distributed.worker_id if cfg.distributed.role == "worker" else CHIEF_ID
    logging.basicConfig(
        level=logging.INFO,
        format=f"[%(asctime)s][{who}][%(name)s][%(levelname)s] - %(message)s",
        force=True,
    )
    from sweep.errors import UserError
    from sweep.tuner import run

    try:
        validate(cfg)
        run(cfg)
    except UserError as err:
        sys.stderr.write(f"{who}: {err}\n")
        return USER_ERROR_EXIT
    except KeyboardInterrupt:  # the launcher (or Ctrl-C) stops us; open runs are closed KILLED
        return 128 + signal.SIGINT
    return 0


# --- command line ------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    """Run a tracking server in the foreground (Ctrl-C stops it)."""
    store = local_store_uri(args.backend_store_uri)
    parsed = urlparse(store)
    if parsed.scheme == "sqlite":
        Path(parsed.path).parent.mkdir(parents=True, exist_ok=True)
    artifacts = args.artifacts_destination
    if "://" not in artifacts:
        artifacts = str(Path(artifacts).resolve())
    try:
        command = server_command(
            store,
            artifacts,
            host=args.host,
            port=args.port,
            allowed_hosts=args.allowed_hosts,
            workers=args.workers,
        )
    except ValueError as err:
        log.error("%s", err)
        return USER_ERROR_EXIT
    host = f"[{args.host}]" if ":" in args.host else args.host
    log.info("tracking server for sweeps: tracking.uri=http://%s:%d", host, args.port)
    if args.host not in (LOOPBACK, "localhost", "::1") and not args.allowed_hosts:
        log.info(
            "bound to %s: clients reaching it by a DNS name need --allowed-hosts NAME:%d",
            args.host,
            args.port,
        )
    os.execve(command[0], command, server_env())
    return 0  # not reached


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.distributed", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run an MLflow tracking server for sweeps",
        description="An MLflow tracking server for distributed sweeps: a database store, "
        "artifacts proxied to one shared root, bound to one interface (loopback by default).",
    )
    serve.add_argument(
        "--backend-store-uri",
        default="sqlite:///mlruns/mlflow.db",
        help="runs and metrics: postgresql://USER:PASSWORD@HOST:5432/DB for a team, "
        "SQLite for trying it out (default: %(default)s)",
    )
    serve.add_argument(
        "--artifacts-destination",
        default="mlruns/server-artifacts",
        help="shared artifact root the server writes to: a directory or s3://... "
        "(default: %(default)s)",
    )
    serve.add_argument("--host", default=LOOPBACK, help="interface to bind (default: %(default)s)")
    serve.add_argument("--port", type=int, default=5000, help="(default: %(default)s)")
    serve.add_argument(
        "--allowed-hosts",
        default=None,
        help="extra Host headers to accept, e.g. mlflow.lab.internal:5000 (MLflow already "
        "accepts localhost and private IPs)",
    )
    serve.add_argument("--workers", type=int, default=1, help="server processes (default: 1)")
    child = commands.add_parser("child", help="internal: one process of sweep.workers=N")
    child.add_argument("config")
    child.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.command == "serve":
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        return _serve(args)
    return _child_main(args.config, args.overrides)


if __name__ == "__main__":
    sys.exit(main())
