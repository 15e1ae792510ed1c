"""The team server's login: `scripts/mlflow-server` runs MLflow's own basic-auth app, and a sweep
proves its login (MLflow's MLFLOW_TRACKING_* variables) may read and write before it reads any
data, refusing in one line otherwise, and records the password nowhere.

One real server with a login serves the module; the quick tests check the pieces in-process.
"""

from __future__ import annotations

import base64
import configparser
import functools
import os
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweep import cluster, distributed
from sweep.__main__ import run as main_run
from sweep.distributed import __main__ as serve_main
from sweep.distributed import auth
from sweep.errors import USER_ERROR_EXIT, ConfigError
from sweep.tracking.store import PASSWORD_ENV, TOKEN_ENV, USERNAME_ENV
from tests.conftest import (
    PYTHON,
    run_cli,
    runs_of,
    tiny_overrides,
)

ROOT = Path(__file__).resolve().parents[1]
#: Every variable that carries a login, to a server (MLflow's client) or from one (its admin).
LOGIN_ENV = (USERNAME_ENV, PASSWORD_ENV, TOKEN_ENV, auth.ADMIN_PASSWORD_ENV, auth.SECRET_KEY_ENV)
#: The sweep's experiment, created by the admin: a user gets only basic-auth's default (READ).
EXPERIMENT = "smoke"


# --- the pieces, in-process ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "shown", "advice"),
    [
        (
            "http://bob:s3cret-pw@127.0.0.1:5000",
            "http://bob:***@127.0.0.1:5000",
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment",
        ),
        (
            "postgresql+psycopg://mlflow:s3cret-pw@db:5432/mlflow",
            "postgresql+psycopg://mlflow:***@db:5432/mlflow",
            "PGPASSWORD or ~/.pgpass",
        ),
    ],
    ids=["server", "database"],
)
def test_a_password_in_the_tracking_uri_is_refused_and_never_shown(
    refused: Callable[..., str], uri: str, shown: str, advice: str
) -> None:
    """The config, tracking.uri with it, is logged with every run (config.yaml)."""
    line = refused(f"tracking.uri={uri}")
    assert line.startswith(f"config error: tracking.uri={shown}: has a password in it"), line
    assert advice in line and "s3cret-pw" not in line


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--host", "10.0.0.5"], {auth.SECRET_KEY_ENV: "k"}, "needs MLFLOW_AUTH_ADMIN_PASSWORD"),
        (["--auth"], {auth.ADMIN_PASSWORD_ENV: "a-good-long-password"}, "needs MLFLOW_FLASK"),
        (
            ["--host", "0.0.0.0"],
            {auth.ADMIN_PASSWORD_ENV: "password1234", auth.SECRET_KEY_ENV: "k"},
            "the admin password is MLflow's old default 'password1234'",
        ),
        (
            ["--auth"],
            {auth.ADMIN_PASSWORD_ENV: "short", auth.SECRET_KEY_ENV: "k"},
            "at least 12",
        ),
    ],
    ids=["no-admin-password", "no-secret-key", "mlflows-old-default", "short"],
)
def test_a_server_with_a_login_refuses_to_start_without_its_secrets(
    args: list[str],
    env: dict[str, str],
    says: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Anything but loopback always has the login; loopback has it when asked (--auth)."""
    for name in LOGIN_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def started(*_: object) -> None:
        raise AssertionError("a server started")

    monkeypatch.setattr(serve_main.os, "execve", started)
    monkeypatch.setattr(serve_main, "run_foreground", started)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = serve_main.main(["serve", "--backend-store-uri", store, *args])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert code == USER_ERROR_EXIT
    assert len(errors) == 1 and says in errors[0], errors
    assert "\n" not in errors[0]


def test_the_auth_config_mlflow_reads_holds_no_password_and_only_its_owner_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.server.auth.config import read_auth_config

    password_file = tmp_path / "admin-password"
    password_file.write_text("from-a-file-0123456789\n")
    password_file.chmod(0o600)
    monkeypatch.setenv(auth.SECRET_KEY_ENV, "key")
    monkeypatch.delenv(auth.ADMIN_PASSWORD_ENV, raising=False)
    monkeypatch.delenv(auth.ADMIN_USER_ENV, raising=False)
    login = auth.BasicAuth.from_environment(
        f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}", password_file=str(password_file)
    )
    config = login.write_config(tmp_path)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "from-a-file" not in config.read_text()
    for name, value in login.env(config).items():
        monkeypatch.setenv(name, value)
    read = read_auth_config()  # as the server reads it (the password from the environment)
    assert read.database_uri == f"sqlite:///{tmp_path / 'store' / auth.AUTH_DB_NAME}"
    assert (read.admin_username, read.admin_password) == ("admin", "from-a-file-0123456789")
    assert read.default_permission == "READ"
    assert "from-a-file" not in repr(login)


def test_the_users_live_beside_the_store() -> None:
    postgres = "postgresql+psycopg://mlflow@db:5432/mlflow"
    assert auth.auth_database_uri(postgres) == postgres  # own tables, own migration table
    assert auth.auth_database_uri("sqlite:////srv/mlruns/mlflow.db") == (
        "sqlite:////srv/mlruns/mlflow-auth.db"
    )
    escaped = configparser.ConfigParser()
    uri = "postgresql://mlflow@db/ml%2Dflow"  # configparser would read '%2D' as interpolation
    login = auth.BasicAuth(uri, "admin", "p" * 12, "k")
    escaped.read_string(
        "\n".join(line for line in _config_lines(login) if not line.startswith("#"))
    )
    assert escaped["mlflow"]["database_uri"] == uri


def _config_lines(login: auth.BasicAuth) -> list[str]:
    with tempfile.TemporaryDirectory() as private:
        return login.write_config(Path(private)).read_text().splitlines()


def test_the_server_runs_mlflows_basic_auth_app_when_asked() -> None:
    plain = distributed.server_command("sqlite:////tmp/x.db", "/tmp/artifacts")
    assert "--app-name" not in plain
    command = distributed.server_command("sqlite:////tmp/x.db", "/tmp/artifacts", auth=True)
    assert command[command.index("--app-name") + 1] == "basic-auth"


@contextmanager
def _request(user: str, password: str) -> Iterator[None]:
    """A request to the tracking API with this basic-auth login, as MLflow's server sees it."""
    from flask import Flask

    login = base64.b64encode(f"{user}:{password}".encode()).decode()
    with Flask(__name__).test_request_context(
        "/api/2.0/mlflow/runs/get", headers={"Authorization": f"Basic {login}"}
    ):
        yield


def _starlette_request(user: str, password: str) -> Any:
    """An artifact upload as MLflow's FastAPI routes see it, with this basic-auth login."""
    from starlette.requests import Request

    login = base64.b64encode(f"{user}:{password}".encode()).decode()
    return Request(
        {
            "type": "http",
            "method": "PUT",
            "scheme": "http",
            "server": ("127.0.0.1", 5000),
            "path": "/api/2.0/mlflow-artifacts/artifacts/1/run/artifacts/curves.png",
            "query_string": b"",
            "headers": [(b"authorization", f"Basic {login}".encode())],
        }
    )


def test_a_users_database_away_is_answered_503_not_a_refused_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With PostgreSQL restarting, MLflow refused right logins (401, which clients do not retry:
    a trial FAILED, a worker stopped, on artifact uploads; the soak found both). The server's
    check (the auth config's authorization_function) makes it an error MLflow answers 503."""
    from cachetools import TTLCache
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
    from mlflow.server import auth as mlflow_auth
    from mlflow.server.auth import sqlalchemy_store
    from werkzeug.datastructures import Authorization
    from werkzeug.security import generate_password_hash

    from sweep.distributed import login

    cheap = functools.partial(generate_password_hash, method="pbkdf2:sha256:1")  # fast checks
    monkeypatch.setattr(sqlalchemy_store, "generate_password_hash", cheap)
    store = sqlalchemy_store.SqlAlchemyStore()
    store.init_db(f"sqlite:///{tmp_path / 'auth.db'}")
    store.create_user("trainer", "a-good-long-password")
    monkeypatch.setattr(mlflow_auth, "store", store)
    monkeypatch.setattr(mlflow_auth, "_USER_AUTH_CACHE", TTLCache(maxsize=16, ttl=60))
    configured = mlflow_auth.auth_config._replace(
        authorization_function=auth.AUTHORIZATION_FUNCTION
    )
    monkeypatch.setattr(mlflow_auth, "auth_config", configured)
    looked_up = store.get_user

    def database_away(username: str) -> None:
        # what MLflow's store raises for a database error (mlflow.store.db.utils)
        raise MlflowException("the database system is shutting down", TEMPORARILY_UNAVAILABLE)

    monkeypatch.setattr(store, "get_user", database_away)
    with _request("trainer", "a-good-long-password"):
        assert mlflow_auth.authenticate_request_basic_auth().status_code == 401, "MLflow's own"
        assert mlflow_auth._before_request().status_code == 503
    monkeypatch.setattr(store, "get_user", looked_up)
    with _request("trainer", "a-good-long-password"):
        assert isinstance(login.authenticate_request(), Authorization)  # and in MLflow's cache
    # FastAPI's routes (artifact uploads): MLflow's bridge looks the user up after any check,
    # and takes a database error for no such user, even for a login its cache vouches for
    monkeypatch.setattr(store, "get_user", database_away)
    upload = _starlette_request("trainer", "a-good-long-password")
    mlflow_own = configured._replace(
        authorization_function=mlflow_auth.DEFAULT_AUTHORIZATION_FUNCTION
    )
    monkeypatch.setattr(mlflow_auth, "auth_config", mlflow_own)
    assert mlflow_auth._authenticate_custom_for_fastapi(upload) is None, "MLflow's: a 401"
    monkeypatch.setattr(mlflow_auth, "auth_config", configured)
    with pytest.raises(MlflowException) as away:  # the middleware answers it 503
        mlflow_auth._authenticate_custom_for_fastapi(upload)
    assert away.value.get_http_status_code() == 503
    monkeypatch.setattr(store, "get_user", looked_up)
    for user, password in (("trainer", "wrong-password-123"), ("nobody", "a-good-long-password")):
        mlflow_auth._USER_AUTH_CACHE.clear()
        with _request(user, password):
            assert login.authenticate_request().status_code == 401, (user, password)


# --- one real server with a login ----------------------------------------------------------------


@dataclass
class AuthServer:
    """`scripts/mlflow-server --auth` as a team runs it, with its users' passwords."""

    uri: str
    root: Path
    passwords: dict[str, str]

    def env(self, user: str | None, password: str | None = None) -> dict[str, str]:
        """A client's environment logging in as `user` (its password unless one is given)."""
        env = {k: v for k, v in os.environ.items() if k not in LOGIN_ENV}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
        for name in ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"):
            env.pop(name, None)  # the package's own quiet console, as tests/conftest.py's cli_env
        if user is not None:
            env[USERNAME_ENV] = user
            env[PASSWORD_ENV] = password or self.passwords[user]
        return env

    @contextmanager
    def login(self, user: str | None, password: str | None = None) -> Iterator[None]:
        """This process logged in as `user`, as MLflow's client reads its variables."""
        with pytest.MonkeyPatch.context() as patch:
            for name in LOGIN_ENV:
                patch.delenv(name, raising=False)
            if user is not None:
                patch.setenv(USERNAME_ENV, user)
                patch.setenv(PASSWORD_ENV, password or self.passwords[user])
            yield


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, migrated_store: Path) -> Iterator[AuthServer]:
    """The recipe's server with a login, on loopback (--auth), its admin password in a file and
    its secret key in the environment; the admin creates the sweep's experiment, a user
    `trainer` with EDIT on it and a user `reader` with basic-auth's default (READ)."""
    root = tmp_path_factory.mktemp("auth-server")
    shutil.copyfile(migrated_store, root / "mlflow.db")  # a ready store: no migrations to wait for
    passwords = {name: secrets.token_urlsafe(18) for name in ("admin", "trainer", "reader")}
    password_file = root / "admin-password"
    password_file.write_text(passwords["admin"] + "\n")
    password_file.chmod(0o600)
    port = distributed.free_port()
    uri = f"http://127.0.0.1:{port}"
    env = AuthServer(uri, root, passwords).env(None)
    env |= {"PYTHON": PYTHON, auth.SECRET_KEY_ENV: secrets.token_hex(16)}
    command = [
        *(str(ROOT / "scripts" / "mlflow-server"), "--auth", "--port", str(port)),
        *("--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"),
        *("--artifacts-destination", str(root / "artifacts")),
        *("--admin-password-file", str(password_file)),
    ]
    with (root / "server.log").open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    from mlflow.server import get_app_client  # loads MLflow's server: only where one runs

    try:
        cluster.wait_healthy(uri, distributed.SERVER_START_S, lambda: _exited(process, root))
        found = AuthServer(uri, root, passwords)
        with found.login("admin"):
            users = get_app_client("basic-auth", tracking_uri=uri)
            for user in ("trainer", "reader"):
                users.create_user(user, passwords[user])
            experiment = MlflowClient(uri).create_experiment(EXPERIMENT)
            users.grant_user_permission("trainer", "experiment", experiment, "EDIT")
        yield found
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _exited(process: subprocess.Popen, root: Path) -> str | None:
    if process.poll() is None:
        return None
    return f"exited {process.returncode}: {(root / 'server.log').read_text()[-3000:]}"


@pytest.mark.slow
def test_a_sweep_without_the_right_login_stops_in_one_line_before_any_data(
    server: AuthServer, tmp_path: Path, make_config: Callable[..., DictConfig]
) -> None:
    """No login, a wrong password, a user who may only read: each one line from the start-up
    the command line runs (in this process: how a real process shows such a line, exit 2 and
    nothing else, is tests/test_reliability.py's), nothing read."""
    cfg = make_config("+experiment=smoke", f"tracking.uri={server.uri}")
    wrong = "not-" + server.passwords["trainer"]
    cases = [
        (
            None,
            None,
            "the server asks for a login (HTTP 401): set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD",
        ),
        ("trainer", wrong, "the server refused the login of user 'trainer' (HTTP 401)"),
        ("reader", None, f"user 'reader' may not write to experiment '{EXPERIMENT}' (HTTP 403): "),
    ]
    for user, password, says in cases:
        with server.login(user, password), pytest.raises(ConfigError) as refused:
            main_run(cfg)
        message = str(refused.value)
        assert message.startswith(f"config error: tracking.uri={server.uri}: {says}"), message
        assert "\n" not in message and wrong not in message
        assert not [p for p in server.passwords.values() if p in message], message
    assert not (tmp_path / "cache").exists(), "no data may be read before the login is proven"
    with server.login("admin"):
        assert runs_of(server.uri, EXPERIMENT) == ([], [])  # nobody logged a run


@pytest.mark.slow
def test_the_right_login_logs_every_trial_and_records_no_password(
    server: AuthServer, tmp_path: Path, tiny_imdb: Path
) -> None:
    args = [o for o in tiny_overrides(tmp_path, tiny_imdb) if not o.startswith("tracking.uri=")]
    args += ["+experiment=smoke", "search.max_trials=2", "train.epochs=1"]
    result = run_cli([*args, f"tracking.uri={server.uri}"], tmp_path, server.env("trainer"))
    assert result.returncode == 0, result.stderr[-3000:]

    with server.login("admin"):
        parents, children = runs_of(server.uri, EXPERIMENT)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["trial_id"] for r in children} == {"0", "1"}

    leaks = _leaks(set(server.passwords.values()), result, [*parents, *children])
    leaks += _file_leaks(set(server.passwords.values()), [server.root, tmp_path])
    assert not leaks, leaks


def _leaks(passwords: set[str], result: subprocess.CompletedProcess, runs: list) -> list[str]:
    """Where a password shows: the console, a run's params or tags."""
    found = [f"console: {p[:3]}..." for p in passwords if p in result.stdout + result.stderr]
    for run in runs:
        recorded = {**run.data.params, **run.data.tags}
        text = " ".join(f"{k}={v}" for k, v in recorded.items())
        found += [f"run {run.info.run_id}: {p[:3]}..." for p in passwords if p in text]
    return found


def _file_leaks(passwords: set[str], roots: list[Path]) -> list[str]:
    """Files holding a password: the server's store, artifacts, auth database and log, and the
    sweep's own (state, outputs). The admin's password file is the one that should."""
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if not path.is_file() or path.name == "admin-password":
                continue
            content = path.read_bytes()
            found += [f"{path}: {p[:3]}..." for p in passwords if p.encode() in content]
    checked = {p.name for root in roots for p in root.rglob("*")}
    assert {"mlflow.db", "mlflow-auth.db", "config.yaml"} <= checked, sorted(checked)[:40]
    return found
