"""The MLflow store: pointing at it, proving it usable, experiments, and telling a lost server.

A store that cannot be written, or a server that does not answer, is a one-line ConfigError at
the start rather than a failure hours into a sweep.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.credentials import read_mlflow_creds
from omegaconf import DictConfig

from sweep.errors import ConfigError, first_line
from sweep.tracking import migrations
from sweep.vocabulary import EXPERIMENT_KIND_TAG

#: The experiment's type, model training ("Machine learning"), not GenAI development: the MLflow
#: UI below 3.10 opened a clicked experiment on its runs table for it; later ones keep the tag.
EXPERIMENT_KIND = "custom_model_development"
#: What requests raises when a server stops answering (MLflow wraps it in an MlflowException).
_GONE = (
    requests.exceptions.ConnectionError,
    requests.exceptions.RetryError,
    requests.exceptions.Timeout,
)
#: MLflow's own variables for a server's login: its client sends them; nothing here records them.
USERNAME_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"


def configure(tracking: DictConfig) -> None:
    """Point MLflow at the configured store, and prove it usable before anything trains.

    A new SQLite store is created (schema migrations included) under an exclusive file lock:
    two processes opening a fresh store at once would otherwise both migrate it and one fails
    ("duplicate column name"). A read-only store or artifact root, or a tracking server that
    does not answer, is a one-line ConfigError here rather than a failure hours into a sweep.
    """
    uri = str(tracking.uri)
    mlflow.set_tracking_uri(uri)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating tables..."
    logging.getLogger("alembic").setLevel(logging.WARNING)  # MLflow sets INFO: a line per plugin
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        _check_server(uri)
        return
    if is_local_store(uri):
        _check_artifact_root(Path(tracking.artifact_root))
    if scheme == "sqlite":
        _open_sqlite(uri)


def _check_server(uri: str) -> None:
    """A tracking server that does not answer fails now, in one line, not after retries; so
    does one that refuses this process's login (`use_experiment` proves it may write)."""
    reason = None
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10) as answer:
            if answer.status != 200:
                reason = f"HTTP {answer.status}"
    except (OSError, ValueError) as err:
        reason = str(getattr(err, "reason", None) or err)
    if reason is not None:
        raise ConfigError(
            "tracking.uri",
            uri,
            f"no MLflow tracking server answers there ({reason}); "
            "start it (scripts/mlflow-server) or use the default SQLite store",
        )
    _check_login(uri)


def _check_login(uri: str) -> None:
    """One request that needs a login (/health needs none), sent as MLflow's client sends every
    request, with the MLFLOW_TRACKING_* credentials: a missing or wrong one is one line now."""
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except MlflowException as err:
        raise _refused(err, uri) or ConfigError(
            "tracking.uri",
            uri,
            f"the server answers /health but not MLflow's API: {first_line(err)}",
        ) from None


def _refused(err: MlflowException, uri: str, experiment: str | None = None) -> ConfigError | None:
    """The one line for a request the server refused for its login (HTTP 401) or permissions
    (403), saying what to do; None for any other error. It never shows the password."""
    status = err.get_http_status_code()
    if status == 401:
        return ConfigError("tracking.uri", uri, _login_advice())
    if status != 403:
        return None
    who = read_mlflow_creds().username or "this login"
    what = f"write to experiment '{experiment}'" if experiment else "read its experiments"
    return ConfigError(
        "tracking.uri",
        uri,
        f"user '{who}' may not {what} (HTTP 403): ask the server's admin for EDIT permission "
        f"on it, or set {USERNAME_ENV}/{PASSWORD_ENV} to a user who has it",
    )


def _login_advice() -> str:
    """What to do about an HTTP 401, by the credentials this process sent (MLflow's client
    reads them from its variables, else from ~/.mlflow/credentials)."""
    sent = read_mlflow_creds()
    if sent.username and sent.password:  # what MLflow's client sends first
        return (
            f"the server refused the login of user '{sent.username}' (HTTP 401): check "
            f"{PASSWORD_ENV} (or ~/.mlflow/credentials)"
        )
    if os.environ.get(TOKEN_ENV):
        return f"the server refused {TOKEN_ENV} (HTTP 401): check it"
    return (
        f"the server asks for a login (HTTP 401): set {USERNAME_ENV} and {PASSWORD_ENV} "
        f"(or {TOKEN_ENV}) in the environment"
    )


def _check_artifact_root(root: Path) -> None:
    """A local artifact root nobody can write to fails before the first run, not at its end."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
            pass
    except OSError as err:
        reason = err.strerror or err
        raise ConfigError(
            "tracking.artifact_root", str(root), f"cannot write artifacts there: {reason}"
        ) from None


def _open_sqlite(uri: str) -> None:
    """Create (migrate) a SQLite store under a file lock, so concurrent first opens don't race;
    a store of a newer MLflow is refused, one of an older MLflow upgraded (`migrations`)."""
    db_path = Path(uri.removeprefix("sqlite:///"))
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        with open(db_path.with_name(db_path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                migrations.check_schema(uri, db_path)
                MlflowClient(uri).search_experiments(max_results=1)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    except ConfigError:
        raise
    except Exception as err:  # OSError, SQLAlchemy's or MLflow's: the store is unusable
        raise ConfigError(
            "tracking.uri", uri, f"cannot write the MLflow store: {first_line(err)}"
        ) from None


def store_exists(uri: str) -> bool:
    """False for a SQLite store whose file is missing (a server or other store: assume so)."""
    if urlparse(uri).scheme == "sqlite":
        return Path(uri.removeprefix("sqlite:///")).exists()
    return True


def is_local_store(uri: str) -> bool:
    """A store on this machine: its artifacts go under `tracking.artifact_root`."""
    return urlparse(uri).scheme in ("sqlite", "file", "")


def use_experiment(name: str, tracking: DictConfig) -> str:
    """Make `name` the active MLflow experiment (created with artifacts under
    `tracking.artifact_root` for a local store, and typed as model training for the UI);
    returns its id.

    On a tracking server this is also the proof that this login may write to it, before any
    data is read: the experiment is created, or its type tag written again (the same value:
    nothing new is recorded). A refusal (HTTP 401/403) is one line saying what to do.
    """
    try:
        experiment = _open_experiment(name, tracking)
    except MlflowException as err:
        refused = _refused(err, str(tracking.uri), name)
        if refused is None:
            raise  # as it was: `unreachable` reads its chain
        raise refused from None
    mlflow.set_experiment(experiment_id=experiment)
    return experiment


def _open_experiment(name: str, tracking: DictConfig) -> str:
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        experiment = found.experiment_id
        # untyped: made before the harness typed them; a server: proves this login may write
        if EXPERIMENT_KIND_TAG not in found.tags or not is_local_store(str(tracking.uri)):
            client.set_experiment_tag(experiment, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    else:
        location = None
        if is_local_store(str(tracking.uri)):
            location = (Path(tracking.artifact_root) / name).resolve().as_uri()
        experiment = client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    return str(experiment)


def artifact_location(experiment: str) -> str:
    """Where an experiment's artifacts go (a local path reaches no other machine)."""
    return str(MlflowClient().get_experiment(experiment).artifact_location)


def unreachable(err: BaseException) -> bool:
    """Whether `err` says the tracking server stopped answering (not that a request was bad).

    MLflow raises its own MlflowException while handling requests' error, so the connection
    error is found in the exception chain (`__cause__`, else the unsuppressed `__context__`).
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, _GONE):
            return True
        seen.add(id(current))
        suppressed = current.__suppress_context__
        current = current.__cause__ or (None if suppressed else current.__context__)
    return False


def gone_message(err: BaseException) -> str:
    """What a user reads when the server went away mid-sweep: nothing is lost, how to go on."""
    return (
        f"the MLflow tracking server stopped answering ({first_line(err)[:160]}); finished "
        "trials are kept there and in sweeps/: re-run the same command once it is back to "
        "resume, and the interrupted trial is retried"
    )
