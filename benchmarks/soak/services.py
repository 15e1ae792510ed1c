"""The soak's servers: a throwaway PostgreSQL cluster and the recipe's MLflow tracking server
with its login (`scripts/mlflow-server --auth`), each on a loopback port of its own, each able to
stop and start again on the same port and data (the faults the injector makes of them)."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

from sweep.cluster import wait_healthy
from sweep.distributed import SERVER_START_S, free_port
from sweep.distributed.auth import ADMIN_PASSWORD_ENV, SECRET_KEY_ENV

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
#: Where Debian's `postgresql` package puts initdb and pg_ctl (searched after PATH).
PG_BIN_GLOB = "usr/lib/postgresql/*/bin"
#: MLflow's client reads a login from these (the sweep's processes and this one).
USERNAME_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"


def pg_tool(name: str) -> str | None:
    """A PostgreSQL program on PATH, else in Debian's versioned folder; None if absent."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/").glob(f"{PG_BIN_GLOB}/{name}"))
    return str(candidates[-1]) if candidates else None


class Unavailable(RuntimeError):
    """What a service needs is not on this machine (PostgreSQL, or a user to run it as)."""


def postgres_tools() -> tuple[str, str, list[str], pwd.struct_passwd | None]:
    """initdb, pg_ctl, the command prefix that runs them, and the user they run as when this
    process is root (PostgreSQL refuses to run as root); Unavailable, saying what is missing."""
    initdb, pg_ctl = pg_tool("initdb"), pg_tool("pg_ctl")
    if not (initdb and pg_ctl):
        raise Unavailable("PostgreSQL is not installed (initdb/pg_ctl; Debian: postgresql)")
    if os.geteuid() != 0:
        return initdb, pg_ctl, [], None
    runuser = shutil.which("runuser")
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        owner = None
    if owner is None or runuser is None:
        raise Unavailable("running as root without a 'postgres' user (or runuser)")
    return initdb, pg_ctl, [runuser, "-u", "postgres", "--"], owner


@dataclass
class Postgres:
    """A PostgreSQL cluster of its own in a new temporary directory on a loopback port (trust
    login, a socket directory of its own, no fsync), its database `mlflow` for the tracking
    store. As root it runs as the `postgres` user, since PostgreSQL refuses to run as root (the
    directory is not under another temporary one, whose mode would keep that user out)."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sweep-pg-")))
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        try:
            self.initdb, self.pg_ctl, self.as_user, owner = postgres_tools()
        except Unavailable:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        if owner is not None:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)

    @property
    def uri(self) -> str:
        return f"postgresql+psycopg://mlflow@127.0.0.1:{self.port}/mlflow"

    def _run(self, *command: str, timeout_s: float = 120.0) -> None:
        subprocess.run(
            [*self.as_user, *command],
            cwd=self.root,
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )

    def create(self) -> str:
        """A new cluster, started, with an empty database `mlflow`; its SQLAlchemy URI."""
        import psycopg  # the PostgreSQL driver: only where a cluster runs

        self._run(
            self.initdb,
            "-D",
            str(self.data),
            "-U",
            "mlflow",
            "--auth=trust",
            "--no-locale",
            "-E",
            "UTF8",
        )
        self.start()
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="mlflow", dbname="postgres", autocommit=True
        ) as connection:
            connection.execute("CREATE DATABASE mlflow")
        return self.uri

    @property
    def data(self) -> Path:
        return self.root / "data"

    def start(self) -> None:
        options = f"-k {self.root} -p {self.port} -h 127.0.0.1 -c fsync=off"
        log_file = str(self.root / "log")
        self._run(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", log_file, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster: `fast` (clients disconnected, a clean shutdown) or `immediate` (as
        a crash: recovery at the next start)."""
        if (self.data / "postmaster.pid").exists():
            self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop", timeout_s=60)

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class LoginServer:
    """`scripts/mlflow-server --auth` on a loopback port, as the recipe runs it: the admin's
    password in a file only this user reads, Flask's secret key in its environment, artifacts
    proxied to `root/artifacts`. `start` again after `stop` comes back on the same port."""

    store: str
    root: Path
    workers: int = 1
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.admin_password = secrets.token_urlsafe(18)
        self.password_file = self.root / "admin-password"
        self.password_file.write_text(self.admin_password + "\n")
        self.password_file.chmod(0o600)
        self._secret_key = secrets.token_hex(16)
        self.starts = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [
            *(str(ROOT / "scripts" / "mlflow-server"), "--auth", "--port", str(self.port)),
            *("--workers", str(self.workers), "--backend-store-uri", self.store),
            *("--artifacts-destination", str(self.root / "artifacts")),
            *("--admin-password-file", str(self.password_file)),
        ]

    def start(self, wait_s: float | None = SERVER_START_S) -> None:
        """Start the server (its output appended to server.log); wait until it answers unless
        `wait_s` is None (the caller waits with `answers`)."""
        env = {k: v for k, v in os.environ.items() if k not in (USERNAME_ENV, PASSWORD_ENV)}
        env |= {"PYTHON": sys.executable, SECRET_KEY_ENV: self._secret_key}
        env.pop(ADMIN_PASSWORD_ENV, None)  # from the file
        self.starts += 1
        with (self.root / "server.log").open("ab") as out:
            self.process = subprocess.Popen(
                self._command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        if wait_s is not None:
            wait_healthy(self.uri, wait_s, self._exited)

    def answers(self) -> bool:
        """Whether the server answers /health now (a dead server raises, with its log)."""
        death = self._exited()
        if death is not None:
            raise RuntimeError(f"the MLflow server {death}")
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _exited(self) -> str | None:
        if self.process is None or self.process.poll() is None:
            return None
        tail = (self.root / "server.log").read_text(errors="replace")[-3000:]
        return f"exited with {self.process.returncode}:\n{tail}"

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop the server and its workers (SIGTERM to its process group, then SIGKILL)."""
        process = self.process
        if process is None:
            return
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(timeout=grace_s)
        _signal_group(process, signal.SIGKILL)  # any server worker that outlived it
        self.process = None

    def add_sweeper(self, user: str, experiment: str) -> str:
        """As the admin: a user with EDIT on a new experiment `experiment`; its password."""
        from mlflow.server import get_app_client  # MLflow's server app: only where one runs

        password = secrets.token_urlsafe(18)
        with environment(**{USERNAME_ENV: "admin", PASSWORD_ENV: self.admin_password}):
            users = get_app_client("basic-auth", tracking_uri=self.uri)
            users.create_user(user, password)
            created = MlflowClient(self.uri).create_experiment(experiment)
            users.grant_user_permission(user, "experiment", created, "EDIT")
        return password


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """This process's environment with `values` set, for the block (MLflow's client reads its
    login and retry settings from there at each request)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
