"""A tuner process's part in Keras Tuner's distributed mode: its role, its threads, and waiting
for what runs elsewhere (the chief's oracle, the shared MLflow tracking server).

No scheduler of our own: the chief is Keras Tuner's oracle served over gRPC, workers ask it for
trials and log each under the chief's parent run. This module turns `distributed.*` into Keras
Tuner's environment variables and lets a worker find the chief and its parent run. Starting
servers and local parallel mode live above the tuner, in `sweep.distributed`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig

from sweep import tracking
from sweep.errors import SweepError
from sweep.schema import CHIEF_WORD

log = logging.getLogger(__name__)

#: Keras Tuner's switches for its distributed mode (read when a tuner is built and searched).
TUNER_ID_ENV, ORACLE_IP_ENV, ORACLE_PORT_ENV = (
    "KERASTUNER_TUNER_ID",
    "KERASTUNER_ORACLE_IP",
    "KERASTUNER_ORACLE_PORT",
)
#: Where a local server binds unless told otherwise: never beyond this machine.
LOOPBACK = "127.0.0.1"
#: Host names that reach only this machine.
LOCAL_HOSTS = (LOOPBACK, "localhost", "::1")
#: Longest wait, in ms, before a worker tries again to reach a chief that is not there.
RECONNECT_MS = 1000


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
        # Keras Tuner makes the process whose id contains CHIEF_WORD the oracle
        os.environ[TUNER_ID_ENV] = CHIEF_WORD if dist.role == "chief" else str(dist.worker_id)
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
    import tensorflow as tf  # heavy, and only a process that trains needs it

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already started: the environment set at launch applies
        log.debug("TensorFlow already initialised; thread limits come from the environment")


def cores() -> int:
    """Cores this process may use (its CPU affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parent_tags(cfg: DictConfig) -> dict[str, str]:
    """Tags of the chief's parent run by which workers find it."""
    return {tracking.ORACLE_PORT_TAG: str(oracle_address(str(cfg.distributed.oracle))[1])}


def worker_tags(cfg: DictConfig) -> dict[str, str]:
    """Who ran a trial: the worker id (a restarted worker closes its own leftovers by it), host
    and process id."""
    return {
        tracking.WORKER_TAG: str(cfg.distributed.worker_id),
        "worker_host": socket.gethostname(),
        "worker_pid": str(os.getpid()),
    }


def oracle_channel(address: str) -> Any:
    """A gRPC channel to the chief's oracle that tries a chief not (yet, or no longer) there
    again within RECONNECT_MS: gRPC's default back-off grows to 2 minutes, so a worker would
    notice a chief that started (or restarted) after it that much later."""
    import grpc  # heavy; only a worker needs it, and Keras Tuner loads it then anyway

    return grpc.insecure_channel(
        address,
        options=[
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_MS),
            ("grpc.min_reconnect_backoff_ms", RECONNECT_MS),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_MS),
        ],
    )


def wait_for_chief(cfg: DictConfig) -> None:
    """Block until the chief's oracle accepts connections.

    The chief serves only after it has created (or resumed) the sweep's MLflow experiment and
    parent run and closed what older crashes left open, so a worker past this point never sees
    a half-made sweep, and never races the chief to create the experiment.
    """
    import grpc  # heavy; only a worker needs it, and Keras Tuner loads it then anyway

    address, timeout = str(cfg.distributed.oracle), float(cfg.distributed.connect_timeout_s)
    log.info("waiting for the chief's oracle at %s (up to %.0f s)", address, timeout)
    channel = oracle_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise SweepError(
            f"no chief answered at distributed.oracle={address} within {timeout:.0f} s: start "
            "the chief (distributed.role=chief) with the same oracle address, or check the "
            "address and firewall"
        ) from None
    finally:
        channel.close()


def find_parent(cfg: DictConfig, experiment: str) -> str:
    """The chief's parent run, looked up in the shared tracking server by sweep name and oracle
    port; retried for a while in case the server lags behind the chief."""
    port = oracle_address(str(cfg.distributed.oracle))[1]
    deadline = time.monotonic() + min(60.0, float(cfg.distributed.connect_timeout_s))
    while True:
        parent = tracking.find_sweep_parent(experiment, str(cfg.name), port)
        if parent is not None:
            _warn_local_artifacts(cfg, experiment)
            return parent
        if time.monotonic() > deadline:
            raise SweepError(
                f"the chief at {cfg.distributed.oracle} answers, but {cfg.tracking.uri} holds no "
                f"running sweep '{cfg.name}' for it: give the chief and every worker the same "
                "tracking.uri and experiment"
            )
        time.sleep(1.0)


def _warn_local_artifacts(cfg: DictConfig, experiment: str) -> None:
    """Workers on other machines cannot share an experiment whose artifacts go to a local path."""
    location = tracking.artifact_location(experiment)
    remote = urlparse(str(cfg.tracking.uri)).hostname not in LOCAL_HOSTS
    if remote and urlparse(location).scheme in ("", "file"):
        log.warning(
            "experiment %s keeps artifacts at the local path %s: workers on other machines "
            "write them to their own disks. Give the sweep a name the server has not seen "
            "(it then stores artifacts itself).",
            cfg.name,
            location,
        )


def wait_for_tracking(cfg: DictConfig) -> None:
    """Wait for the tracking server a distributed role logs to, so a server still starting
    (or a wrong address) is one clear message, not MLflow's retries."""
    timeout = float(cfg.distributed.connect_timeout_s)
    uri = str(cfg.tracking.uri).rstrip("/")
    try:
        wait_healthy(uri, timeout)
    except (SweepError, ValueError):  # no answer in time, or no http(s) address
        raise SweepError(
            f"no MLflow tracking server answered at tracking.uri={uri} within {timeout:.0f} s: "
            "start one (scripts/mlflow-server; docs/distributed.md) or check the address"
        ) from None


def wait_healthy(
    uri: str, timeout_s: float, exited: Callable[[], str | None] | None = None
) -> None:
    """Poll the server's /health until it answers OK.

    `exited`, for a server this process started, says why it died (None while it runs), so a
    server that cannot start fails at once, with its own words, instead of at the timeout.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        death = exited() if exited is not None else None
        if death is not None:
            raise SweepError(f"the MLflow server for {uri} {death}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SweepError(f"the MLflow server at {uri} did not answer within {timeout_s:.0f} s")
