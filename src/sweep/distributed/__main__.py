"""`python -m sweep.distributed serve|child ...`: a tracking server for sweeps, or one process of
local parallel mode (the launcher starts those)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from sweep.cluster import LOCAL_HOSTS, LOOPBACK
from sweep.distributed.auth import LOGIN_CACHE_S, BasicAuth
from sweep.distributed.server import local_store_uri, run_foreground, server_command, server_env
from sweep.errors import USER_ERROR_EXIT
from sweep.uris import masked

log = logging.getLogger(__name__)


def _serve(args: argparse.Namespace) -> int:
    """Run a tracking server in the foreground (Ctrl-C stops it): behind MLflow's login unless
    it binds loopback only and `--auth` was not asked for."""
    store = local_store_uri(args.backend_store_uri)
    parsed = urlparse(store)
    if parsed.scheme == "sqlite":
        Path(parsed.path).parent.mkdir(parents=True, exist_ok=True)
    artifacts = args.artifacts_destination
    if "://" not in artifacts:
        artifacts = str(Path(artifacts).resolve())
    auth = args.auth or args.host not in LOCAL_HOSTS
    try:
        command = server_command(
            store,
            artifacts,
            host=args.host,
            port=args.port,
            allowed_hosts=args.allowed_hosts,
            workers=args.workers,
            auth=auth,
        )
        login = _login(args, store) if auth else None
    except ValueError as err:
        log.error("%s", err)
        return USER_ERROR_EXIT
    _announce(args, login)
    if login is None:
        os.execve(command[0], command, server_env())
    with tempfile.TemporaryDirectory(prefix="mlflow-auth-") as private:  # mode 0700
        config = login.write_config(Path(private))
        return run_foreground(command, {**server_env(), **login.env(config)})


def _login(args: argparse.Namespace, store: str) -> BasicAuth:
    return BasicAuth.from_environment(
        store,
        password_file=args.admin_password_file,
        secret_key_file=args.secret_key_file,
        database_uri=args.auth_database_uri,
        cache_s=args.login_cache_s,
    )


def _announce(args: argparse.Namespace, login: BasicAuth | None) -> None:
    """What clients give: the tracking URI and, behind a login, the variables to set."""
    host = f"[{args.host}]" if ":" in args.host else args.host
    log.info("tracking server for sweeps: tracking.uri=http://%s:%d", host, args.port)
    if args.host not in LOCAL_HOSTS and not args.allowed_hosts:
        log.info(
            "bound to %s: clients reaching it by a DNS name need --allowed-hosts NAME:%d",
            args.host,
            args.port,
        )
    if login is None:
        return
    log.info(
        "login: MLflow basic-auth, admin user '%s', users and permissions in %s; clients set "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
        login.admin,
        masked(login.database_uri),
    )
    if args.host not in LOCAL_HOSTS:
        log.warning(
            "plain HTTP carries passwords in clear: put TLS in front of it (a reverse proxy, "
            "docs/distributed.md) and give clients its https:// address"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sweep.distributed", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run an MLflow tracking server for sweeps",
        description="An MLflow tracking server for distributed sweeps: a database store, "
        "artifacts proxied to one shared root, bound to one interface (loopback by default), "
        "behind MLflow's login (basic-auth) beyond loopback.",
    )
    serve.add_argument(
        "--backend-store-uri",
        default="sqlite:///mlruns/mlflow.db",
        help="runs and metrics: postgresql+psycopg://USER@HOST:5432/DB for a team (its "
        "password in PGPASSWORD or ~/.pgpass), SQLite for trying it out (default: %(default)s)",
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
    _login_options(serve.add_argument_group("login (MLflow's basic-auth app)"))
    child_command = commands.add_parser("child", help="internal: one process of sweep.workers=N")
    child_command.add_argument("config")
    child_command.add_argument("overrides", nargs="*")
    return parser


def _login_options(group: argparse._ArgumentGroup) -> None:
    """The secrets come from the environment or files: a command line is visible to `ps`."""
    group.add_argument(
        "--auth",
        action="store_true",
        help="MLflow's login (basic-auth) on loopback too; any other --host always has it",
    )
    group.add_argument(
        "--admin-password-file",
        default=None,
        metavar="FILE",
        help="the admin's password, else MLFLOW_AUTH_ADMIN_PASSWORD (creates the admin user "
        "on the first start; later starts keep its password)",
    )
    group.add_argument(
        "--secret-key-file",
        default=None,
        metavar="FILE",
        help="Flask's secret key (CSRF), else MLFLOW_FLASK_SERVER_SECRET_KEY",
    )
    group.add_argument(
        "--auth-database-uri",
        default=None,
        help="users and permissions (default: beside the store: mlflow-auth.db next to a "
        "SQLite file, the same database for PostgreSQL)",
    )
    group.add_argument(
        "--login-cache-s",
        type=int,
        default=LOGIN_CACHE_S,
        help="seconds a server process trusts a checked login; 0 checks the password hash on "
        "every request, about 0.5 s of CPU each (default: %(default)s)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        return _serve(args)
    from sweep.distributed import child  # lazy: it loads TensorFlow, which `serve` never needs

    return child.main(args.config, args.overrides)


if __name__ == "__main__":
    sys.exit(main())
