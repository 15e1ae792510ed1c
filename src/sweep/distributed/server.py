"""MLflow tracking servers as the recipe runs them (`scripts/mlflow-server`): a database store,
artifacts proxied to one shared root, bound to one chosen interface, MLflow's protections on."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from sweep.cluster import LOOPBACK, wait_healthy

log = logging.getLogger(__name__)

#: Host headers of this machine's own clients, kept when --allowed-hosts names others.
LOOPBACK_HOSTS = ("localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*")
#: How long a freshly started MLflow server may take (it migrates a new database first).
SERVER_START_S = 180.0


def server_command(
    backend_store_uri: str,
    artifacts_destination: str,
    *,
    host: str = LOOPBACK,
    port: int = 5000,
    allowed_hosts: str | None = None,
    workers: int = 1,
    auth: bool = False,
) -> list[str]:
    """`mlflow server` as the recipe runs it: a database backend, artifacts proxied by the
    server to one shared root (workers need no shared disk), bound to one chosen interface;
    with `auth`, behind MLflow's own login (its basic-auth app, set up by `auth.BasicAuth`).

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
    if auth:
        command += ["--app-name", "basic-auth"]
    return command


def server_env() -> dict[str, str]:
    # MLflow's background job runner serves GenAI features a sweep does not use
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def run_foreground(command: list[str], env: dict[str, str]) -> int:
    """Run a server as this process's child until it exits, so that this process can remove
    what it made for it afterwards: Ctrl-C reaches both (the terminal signals the group) and a
    SIGTERM or SIGINT sent to this process alone is passed on. Returns its exit status."""
    process = subprocess.Popen(command, env=env)
    previous = signal.signal(signal.SIGTERM, lambda *_: process.send_signal(signal.SIGTERM))
    try:
        while True:
            try:
                code = process.wait()
                return code if code >= 0 else 128 - code
            except KeyboardInterrupt:
                process.send_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)


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

    def exited(self) -> str | None:
        """Why the server is gone (its exit code and last words); None while it runs."""
        if self.process.poll() is None:
            return None
        return f"exited with {self.process.returncode}:\n{self.log_tail()}"

    def wait(self, timeout_s: float = SERVER_START_S) -> None:
        """Until the server answers /health; at once if it died."""
        wait_healthy(self.uri, timeout_s, self.exited)


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
            server.wait(wait_s)
        except BaseException:
            server.stop()
            raise
        log.info("MLflow tracking server at %s (store %s)", server.uri, backend_store_uri)
    return server
