"""MLflow's own login for the recipe's tracking server (`mlflow server --app-name basic-auth`):
what it needs for one start, taken from the environment or files, never the command line or the
repository, and its config file written where only this user can read it.

The harness does no authentication itself: MLflow's basic-auth app checks every request, keeps
users and permissions in its own database (beside the tracking store) and creates the admin user
on its first start.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)

#: MLflow's variables for its basic-auth app (MLflow >= 3.11 reads the admin's from the
#: environment before its config file, and ships no default admin password).
ADMIN_USER_ENV, ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"
SECRET_KEY_ENV, CONFIG_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_CONFIG_PATH"
#: The admin password MLflow's basic_auth.ini shipped before 3.11: everyone knows it.
MLFLOW_OLD_DEFAULT_PASSWORD = "password1234"
#: MLflow's own rule for a user's password (mlflow.utils.validation._validate_password).
MIN_PASSWORD_LENGTH = 12
#: The users-and-permissions database beside a SQLite (or file) tracking store.
AUTH_DB_NAME = "mlflow-auth.db"
#: What a user may do on an experiment nobody granted them anything on: read it. Writing takes
#: EDIT, granted by the admin (or owning the experiment: its creator MANAGEs it).
DEFAULT_PERMISSION = "READ"
#: How long each server process trusts a checked login (MLflow's auth_cache_ttl_seconds; its
#: default, 0, checks the password hash on every request: about 0.5 s of CPU each, minutes per
#: sweep). A password changed or user deleted through the API takes effect at once in the
#: process that served the change, in the other server processes (--workers) within this time.
LOGIN_CACHE_S = 60
#: The login check the server runs for each request: MLflow's basic-auth check, with a users'
#: database that is away answered 503 (retried by clients), not 401 (`sweep.distributed.login`).
AUTHORIZATION_FUNCTION = "sweep.distributed.login:authenticate_request"
#: Stores whose database can hold MLflow's auth tables too (they have their own migrations,
#: tracked in `alembic_version_auth`, and names the tracking schema does not use).
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")


@dataclass(frozen=True)
class BasicAuth:
    """What MLflow's basic-auth app needs for one start of the server."""

    database_uri: str
    admin: str
    admin_password: str = field(repr=False)
    secret_key: str = field(repr=False)
    cache_s: int = LOGIN_CACHE_S

    @classmethod
    def from_environment(
        cls,
        store_uri: str,
        *,
        password_file: str | None = None,
        secret_key_file: str | None = None,
        database_uri: str | None = None,
        cache_s: int = LOGIN_CACHE_S,
    ) -> BasicAuth:
        """The admin password and Flask's secret key from the environment, or from the files
        named instead; ValueError, one line, for one missing or unsafe."""
        password = _secret(ADMIN_PASSWORD_ENV, password_file, "--admin-password-file")
        if password == MLFLOW_OLD_DEFAULT_PASSWORD:
            raise ValueError(
                f"the admin password is MLflow's old default '{MLFLOW_OLD_DEFAULT_PASSWORD}', "
                f"which everyone knows: choose another"
            )
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(
                f"the admin password has {len(password)} characters; MLflow wants at least "
                f"{MIN_PASSWORD_LENGTH}"
            )
        return cls(
            database_uri=database_uri or auth_database_uri(store_uri),
            admin=os.environ.get(ADMIN_USER_ENV) or "admin",
            admin_password=password,
            secret_key=_secret(SECRET_KEY_ENV, secret_key_file, "--secret-key-file"),
            cache_s=cache_s,
        )

    def write_config(self, directory: Path) -> Path:
        """MLflow's auth config file, readable by this user only (it names the database, whose
        URI may hold a password). The admin password is not in it: it goes to MLflow in
        `ADMIN_PASSWORD_ENV`, so it never lies on disk."""
        path = directory / "basic_auth.ini"
        lines = [
            "[mlflow]",
            "# written by scripts/mlflow-server for one start of the server",
            f"default_permission = {DEFAULT_PERMISSION}",
            # configparser reads '%' as interpolation: a URL-encoded character needs '%%'
            f"database_uri = {self.database_uri.replace('%', '%%')}",
            f"admin_username = {self.admin}",
            f"authorization_function = {AUTHORIZATION_FUNCTION}",
            f"auth_cache_ttl_seconds = {self.cache_s}",
        ]
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write("\n".join(lines) + "\n")
        return path

    def env(self, config: Path) -> dict[str, str]:
        """The server's environment for MLflow's basic-auth app."""
        return {
            CONFIG_ENV: str(config),
            ADMIN_USER_ENV: self.admin,
            ADMIN_PASSWORD_ENV: self.admin_password,
            SECRET_KEY_ENV: self.secret_key,
        }


def auth_database_uri(store_uri: str) -> str:
    """Where MLflow keeps users and permissions: beside the tracking store (a SQLite file next
    to a SQLite or file store; the same database for a database server's store)."""
    scheme = urlparse(store_uri).scheme.lower().split("+", 1)[0]
    if scheme in DATABASE_SCHEMES:
        return store_uri
    if scheme == "sqlite":
        return f"sqlite:///{Path(store_uri.removeprefix('sqlite:///')).with_name(AUTH_DB_NAME)}"
    path = Path(urlparse(store_uri).path if scheme == "file" else store_uri)
    return f"sqlite:///{path.resolve().parent / AUTH_DB_NAME}"


def _secret(env: str, file: str | None, option: str) -> str:
    """A secret from the file named (its first line), else from the environment variable."""
    if file is None:
        value = os.environ.get(env, "")
        if not value:
            raise ValueError(
                f"MLflow's login (basic-auth) needs {env}: set it, or give {option} FILE"
            )
        return value
    path = Path(file)
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except OSError as err:
        raise ValueError(f"{option} {file}: {err.strerror or err}") from None
    value = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not value:
        raise ValueError(f"{option} {file} is empty")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s is readable by others: chmod 600 %s", file, file)
    return value
