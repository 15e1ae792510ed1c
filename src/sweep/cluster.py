"""A tuner process's part in Keras Tuner's distributed mode: its role, its threads, and waiting
for what runs elsewhere (the chief's oracle, the shared MLflow tracking server).

No scheduler of our own: the chief is Keras Tuner's oracle served over gRPC, workers ask it for
trials and log each under the chief's parent run. This module turns `distributed.*` into Keras
Tuner's environment variables, lets a worker find the chief and its parent run, and holds both
ends of the oracle's transport: the channel a worker calls it on and the server the chief
serves it from, each carrying (or checking) the oracle's token on every call, over TLS when
configured. Starting MLflow servers and local parallel mode live above the tuner, in
`sweep.distributed`.
"""

from __future__ import annotations

import collections
import hmac
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
from omegaconf import DictConfig

from sweep import tracking
from sweep.errors import SweepError
from sweep.schema import CHIEF_WORD
from sweep.schema.distributed import LOCAL_HOSTS, TOKEN_SOURCES, oracle_token
from sweep.schema.distributed import LOOPBACK as LOOPBACK  # where local servers bind
from sweep.vocabulary import ORACLE_PORT_TAG, WORKER_HOST_TAG, WORKER_PID_TAG, WORKER_TAG

log = logging.getLogger(__name__)

#: Keras Tuner's switches for its distributed mode (read when a tuner is built and searched).
TUNER_ID_ENV, ORACLE_IP_ENV, ORACLE_PORT_ENV = (
    "KERASTUNER_TUNER_ID",
    "KERASTUNER_ORACLE_IP",
    "KERASTUNER_ORACLE_PORT",
)
#: Longest wait, in ms, before a worker tries again to reach a chief that is not there.
RECONNECT_MS = 1000
#: The gRPC metadata key that carries the oracle's token on every call to the chief.
TOKEN_KEY = "sweep-oracle-token"
#: Keras Tuner's cheapest oracle call (it reads the search space): a worker's token check.
GET_SPACE = "/keras_tuner.Oracle/GetSpace"


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
    return {ORACLE_PORT_TAG: str(oracle_address(str(cfg.distributed.oracle))[1])}


def worker_tags(cfg: DictConfig) -> dict[str, str]:
    """Who ran a trial: the worker id (a restarted worker closes its own leftovers by it), host
    and process id."""
    return {
        WORKER_TAG: str(cfg.distributed.worker_id),
        WORKER_HOST_TAG: socket.gethostname(),
        WORKER_PID_TAG: str(os.getpid()),
    }


class TokenRefused(SweepError):
    """The chief refused this worker's calls: it sent no token, or not the chief's."""

    def __init__(self, dist: DictConfig) -> None:
        said = (
            "this worker sends no token"
            if oracle_token(dist) is None
            else "the chief refused this worker's token"
        )
        super().__init__(
            f"{said} (distributed.oracle={dist.oracle}): give it the chief's token in "
            f"{TOKEN_SOURCES}"
        )


class _Details(
    collections.namedtuple(
        "_Details",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    """A call's details with the token added (gRPC's own are read-only)."""


class _SendToken(grpc.UnaryUnaryClientInterceptor):
    """Adds the oracle's token to every call on a channel (all of Keras Tuner's are unary)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = (*(details.metadata or ()), (TOKEN_KEY, self._token))
        return continuation(
            _Details(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                details.wait_for_ready,
                details.compression,
            ),
            request,
        )


class TokenCheck(grpc.ServerInterceptor):
    """The chief's gate: a call without the oracle's token, or with another, ends
    UNAUTHENTICATED before the oracle sees it; each refused address is logged once."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._refused: set[str] = set()
        self._lock = threading.Lock()
        self._deny = grpc.unary_unary_rpc_method_handler(self._refuse)

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        metadata = details.invocation_metadata or ()
        given = next((value for key, value in metadata if key == TOKEN_KEY), "")
        if hmac.compare_digest(str(given).encode(), self._token):
            return continuation(details)
        return self._deny

    def _refuse(self, request: bytes, context: grpc.ServicerContext) -> None:
        host = context.peer().rpartition(":")[0]  # "ipv4:10.0.0.7:52311": not the port
        with self._lock:
            first = host not in self._refused
            self._refused.add(host)
        if first:
            log.warning(
                "refused calls to the oracle from %s: no token, or not this chief's (%s); "
                "further refusals from there are not logged",
                host,
                TOKEN_SOURCES,
            )
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "no valid oracle token")


def oracle_channel(dist: DictConfig) -> grpc.Channel:
    """A gRPC channel to the chief's oracle that carries the oracle's token on every call (TLS
    with `distributed.tls_ca`), and tries a chief not (yet, or no longer) there again within
    RECONNECT_MS: gRPC's default back-off grows to 2 minutes, so a worker would notice a chief
    that started (or restarted) after it that much later."""
    address = str(dist.oracle)
    options = [
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_MS),
        ("grpc.min_reconnect_backoff_ms", RECONNECT_MS),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_MS),
    ]
    if dist.get("tls_ca"):
        ca = Path(str(dist.tls_ca)).expanduser().read_bytes()
        credentials = grpc.ssl_channel_credentials(root_certificates=ca)
        channel = grpc.secure_channel(address, credentials, options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    token = oracle_token(dist)
    return channel if token is None else grpc.intercept_channel(channel, _SendToken(token))


def oracle_server(dist: DictConfig) -> grpc.Server:
    """The chief's gRPC server on `distributed.oracle`, not started: every call checked for the
    oracle's token (without one the schema allows loopback only), TLS with `distributed.tls_cert`
    and `tls_key`. One thread, as Keras Tuner's own: the oracle answers one call at a time."""
    token = oracle_token(dist)
    interceptors = [] if token is None else [TokenCheck(token)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), interceptors=interceptors)
    if dist.get("tls_cert"):
        pair = (
            Path(str(dist.tls_key)).expanduser().read_bytes(),
            Path(str(dist.tls_cert)).expanduser().read_bytes(),
        )
        server.add_secure_port(str(dist.oracle), grpc.ssl_server_credentials([pair]))
    else:
        server.add_insecure_port(str(dist.oracle))
    return server


def check_token(channel: grpc.Channel, dist: DictConfig, timeout_s: float) -> None:
    """Make one cheap call to the chief (it reads the search space), so a worker whose token the
    chief refuses stops now, in one line, before it loads data or trains."""
    try:
        channel.unary_unary(GET_SPACE)(b"", timeout=timeout_s)
    except grpc.RpcError as err:
        code = err.code() if isinstance(err, grpc.Call) else None
        if code == grpc.StatusCode.UNAUTHENTICATED:
            raise TokenRefused(dist) from None
        raise SweepError(
            f"the chief at distributed.oracle={dist.oracle} failed a first call ({code}): is "
            "a sweep's chief serving there?"
        ) from None


def wait_for_chief(cfg: DictConfig) -> None:
    """Block until the chief's oracle accepts connections, and this worker's token.

    The chief serves only after it has created (or resumed) the sweep's MLflow experiment and
    parent run and closed what older crashes left open, so a worker past this point never sees
    a half-made sweep, and never races the chief to create the experiment.
    """
    address, timeout = str(cfg.distributed.oracle), float(cfg.distributed.connect_timeout_s)
    log.info("waiting for the chief's oracle at %s (up to %.0f s)", address, timeout)
    channel = oracle_channel(cfg.distributed)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        check_token(channel, cfg.distributed, timeout)
    except grpc.FutureTimeoutError:
        raise SweepError(
            f"no chief answered at distributed.oracle={address} within {timeout:.0f} s: start "
            "the chief (distributed.role=chief) with the same oracle address, or check the "
            "address, firewall and TLS settings (a chief with distributed.tls_cert needs "
            "distributed.tls_ca on its workers)"
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
