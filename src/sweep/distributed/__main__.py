"""`python -m sweep.distributed serve|child ...`: a tracking server for sweeps, or one process of
local parallel mode (the launcher starts those)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

from sweep.cluster import LOCAL_HOSTS, LOOPBACK
from sweep.distributed.server import local_store_uri, server_command, server_env
from sweep.errors import USER_ERROR_EXIT

log = logging.getLogger(__name__)


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
    if args.host not in LOCAL_HOSTS and not args.allowed_hosts:
        log.info(
            "bound to %s: clients reaching it by a DNS name need --allowed-hosts NAME:%d",
            args.host,
            args.port,
        )
    os.execve(command[0], command, server_env())
    return 0  # not reached


def _parser() -> argparse.ArgumentParser:
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
    child_command = commands.add_parser("child", help="internal: one process of sweep.workers=N")
    child_command.add_argument("config")
    child_command.add_argument("overrides", nargs="*")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        return _serve(args)
    from sweep.distributed import child  # lazy: it loads TensorFlow, which `serve` never needs

    return child.main(args.config, args.overrides)


if __name__ == "__main__":
    sys.exit(main())
