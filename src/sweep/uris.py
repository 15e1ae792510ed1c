"""Tracking URIs MLflow can open: a per-value rule of the schema, kept apart because it is the
one that knows MLflow's store schemes."""

from __future__ import annotations

from urllib.parse import urlparse

from sweep.errors import ConfigError, first_line

#: Tracking store schemes MLflow 3.17 opens without plugins ("": a plain path); a database's
#: may name its driver (postgresql+psycopg).
STORE_SCHEMES = ("", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https")
#: Of those, the ones that name a tracking server.
SERVER_SCHEMES = ("http", "https")


def check_tracking_uri(uri: str, role: str = "none") -> None:
    """A `tracking.uri` MLflow can open, and a server's for a distributed role: one line before
    any data is read, not MLflow's traceback at the first run.

    A password in the URI is refused first, with the URI shown masked: the config (and so the
    URI) is logged with every run, and a login belongs in the environment.
    """
    if urlparse(uri).password is not None:
        raise ConfigError("tracking.uri", masked(uri), _password_advice(uri))
    problem = _uri_problem(uri)
    if problem is not None:
        raise ConfigError("tracking.uri", uri, problem)
    if role != "none" and urlparse(uri).scheme not in SERVER_SCHEMES:
        raise ConfigError(
            "tracking.uri",
            uri,
            "a distributed sweep logs to one MLflow tracking server: give "
            "tracking.uri=http://HOST:PORT (scripts/mlflow-server starts one)",
        )


def masked(uri: str) -> str:
    """`uri` with the password of its `user:password@` part shown as ***."""
    netloc = urlparse(uri).netloc
    login, at, _ = netloc.rpartition("@")
    if not at or ":" not in login:
        return uri
    return uri.replace(f"{login}@", f"{login.partition(':')[0]}:***@", 1)


def _password_advice(uri: str) -> str:
    """Where the password goes instead of the URI, for the URI's kind of store."""
    if urlparse(uri).scheme.lower() in SERVER_SCHEMES:
        return (
            "has a password in it, which would be logged with every run: drop 'user:password@' "
            "and set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment"
        )
    return (
        "has a password in it, which would be logged with every run: drop it from the URI and "
        "give it in the environment (PostgreSQL: PGPASSWORD or ~/.pgpass)"
    )


def _uri_problem(uri: str) -> str | None:
    """What keeps MLflow from using `uri` as a tracking store (None: nothing)."""
    if not uri.strip() or any(c.isspace() or not c.isprintable() for c in uri):
        return "empty, or has spaces or control characters: give a path or a URI"
    try:
        parts = urlparse(uri)
        _ = parts.port  # raises for a port that is no number or out of range
    except ValueError as err:
        return f"not a valid URI ({first_line(err)})"
    scheme = parts.scheme.lower().split("+", 1)[0]
    if scheme not in STORE_SCHEMES:
        known = ", ".join(f"{s}:" for s in STORE_SCHEMES if s)
        return f"MLflow has no tracking store for '{parts.scheme}:' (it opens a path, {known})"
    if scheme in SERVER_SCHEMES and not parts.hostname:
        return f"names no server: expected {scheme}://HOST[:PORT]"
    rest = uri.partition(":")[2]
    if scheme == "sqlite" and not (rest.startswith("///") and parts.path != "/"):
        return "expected sqlite:///RELATIVE/PATH.db or sqlite:////ABSOLUTE/PATH.db"
    if scheme not in ("", "file", "sqlite", *SERVER_SCHEMES) and not rest.startswith("//"):
        return f"expected {parts.scheme}://[USER@]HOST[:PORT]/DATABASE"
    if scheme == "file" and not parts.path:
        return "names no directory: expected file:///PATH"
    return None
