"""Everything MLflow: the store, experiments, what a run logs, and closing runs a crash left open.

Training code hands this module its config, history and model; nothing else imports mlflow.
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import keras
import mlflow
import mlflow.keras
import numpy as np
import pandas as pd
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from sweep import data, leaderboard, plots
from sweep.errors import ConfigError, first_line
from sweep.model import attention_stats, attention_weights

log = logging.getLogger(__name__)

#: Distributions whose versions every run records.
PACKAGES = ("attention-sweep", "tensorflow", "keras", "keras-tuner", "mlflow", "hydra-core")
#: Validation reviews drawn in the attention heatmap, and used for the entropy diagnostics.
HEATMAP_REVIEWS, DIAGNOSTIC_REVIEWS = 3, 256
#: Tokens per heatmap axis: more are unreadable.
HEATMAP_TOKENS = 40
#: The experiment tag MLflow's UI types experiments by: model training ("Machine learning",
#: its runs table), not GenAI development (traces). Values: mlflow/server/js, `experimentKind`.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
#: The description of an experiment or run, as the UI shows and edits it (markdown).
NOTE_TAG = "mlflow.note.content"
#: Where `mlflow ui` serves by default.
LOCAL_UI = "http://127.0.0.1:5000"
#: Experiment tags that hold the runs page's saved views, by key; a sweep's own view.
VIEW_TAG, LEADERBOARD_VIEW = "mlflow.sharedViewState.", "leaderboard"
#: Trials the leaderboard in a sweep's descriptions shows; the most text a description holds.
DESCRIPTION_TOP, MAX_NOTE = 5, 8000


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
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        _check_server(uri)
        return
    if is_local_store(uri):
        root = Path(tracking.artifact_root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
                pass
        except OSError as err:
            raise ConfigError(
                "tracking.artifact_root",
                str(root),
                f"cannot write artifacts there: {err.strerror or err}",
            ) from None
    if scheme == "sqlite":
        db_path = Path(uri.removeprefix("sqlite:///"))
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            with open(db_path.with_name(db_path.name + ".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    MlflowClient(uri).search_experiments(max_results=1)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        except Exception as err:  # OSError, SQLAlchemy's or MLflow's: the store is unusable
            raise ConfigError(
                "tracking.uri", uri, f"cannot write the MLflow store: {first_line(err)}"
            ) from None


def _check_server(uri: str) -> None:
    """A tracking server that does not answer fails now, in one line, not after retries."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10) as answer:
            if answer.status == 200:
                return
            reason = f"HTTP {answer.status}"
    except (OSError, ValueError) as err:
        reason = str(getattr(err, "reason", None) or err)
    raise ConfigError(
        "tracking.uri",
        uri,
        f"no MLflow tracking server answers there ({reason}); "
        "start it (scripts/mlflow-server) or use the default SQLite store",
    )


def store_exists(uri: str) -> bool:
    """False for a SQLite store whose file is missing (a server or other store: assume so)."""
    if urlparse(uri).scheme == "sqlite":
        return Path(uri.removeprefix("sqlite:///")).exists()
    return True


def is_local_store(uri: str) -> bool:
    return urlparse(uri).scheme in ("sqlite", "file", "")


def use_experiment(name: str, tracking: DictConfig) -> str:
    """Make `name` the active MLflow experiment (created with artifacts under
    `tracking.artifact_root` for a local store, and typed as model training for the UI);
    returns its id."""
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        experiment = found.experiment_id
        if EXPERIMENT_KIND_TAG not in found.tags:  # made before the harness typed them
            client.set_experiment_tag(experiment, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    else:
        location = None
        if is_local_store(str(tracking.uri)):
            location = (Path(tracking.artifact_root) / name).resolve().as_uri()
        experiment = client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    mlflow.set_experiment(experiment_id=experiment)
    return experiment


def runs_page(uri: str, experiment_id: str, view: str | None = None) -> str:
    """The MLflow UI's page of an experiment's runs: on the tracking server itself, or for any
    other store where `mlflow ui --backend-store-uri URI --host 127.0.0.1` serves it. The
    `workflowType` parameter shows MLflow 3's model-training navigation rather than GenAI's;
    `view` opens one of the experiment's saved views (`save_view`)."""
    base = uri.rstrip("/") if urlparse(uri).scheme in ("http", "https") else LOCAL_UI
    return f"{base}/{runs_route(experiment_id, view)}"


def runs_route(experiment_id: str, view: str | None = None) -> str:
    """`runs_page` within the UI: a link that works in a description, whatever the host."""
    route = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return f"{route}&viewStateShareKey={view}" if view else route


def save_view(experiment_id: str, key: str, name: str, state: Mapping[str, Any]) -> None:
    """A saved view of the experiment's runs page (filter, sort, columns), as the MLflow UI
    saves one (Views > Save as new view): a link with `viewStateShareKey=KEY` opens it.
    Written once per process and view (a sweep refreshes its standing after every trial)."""
    text = json.dumps(dict(state), sort_keys=True)
    where = (mlflow.get_tracking_uri(), experiment_id, key)
    if _saved_views.get(where) == text:
        return
    now = int(time.time() * 1000)
    packed = base64.b64encode(zlib.compress(text.encode())).decode()
    view = {"name": name, "createdAt": now, "updatedAt": now, "state": f"deflate;{packed}"}
    MlflowClient().set_experiment_tag(experiment_id, VIEW_TAG + key, json.dumps(view))
    _saved_views[where] = text


#: What `save_view` wrote in this process, by store, experiment and key.
_saved_views: dict[tuple[str, str, str], str] = {}


def leaderboard_view(parent_run_id: str, cfg: DictConfig) -> dict[str, Any]:
    """The sweep's trials, best first, with their hyperparameters and cost: the answer."""
    search = cfg.search
    metrics = (f"best_{search.objective}", "seconds_per_epoch", "attention_entropy")
    return {
        "searchFilter": f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        "orderByKey": f"metrics.`best_{search.objective}`",
        "orderByAsc": search.direction == "min",
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": [
            *(f"params.`{hp}`" for hp in search.space),
            *(f"metrics.`{m}`" for m in metrics),
            *([f"tags.`{leaderboard.PRUNED_AT_TAG}`"] if search.get("pruning") == "median" else []),
        ],
    }


def ui_command(uri: str) -> str | None:
    """The command that serves the UI for `uri`; None for a tracking server (it serves it)."""
    if urlparse(uri).scheme in ("http", "https"):
        return None
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1"


def show_runs_page(cfg: DictConfig, view: str | None = None) -> str | None:
    """End a command with the link to its experiment's runs page (in saved `view` when the
    experiment has it), alone on the last line, after a line saying how to serve the UI;
    returns the link, None when there is no such experiment."""
    uri, name = str(cfg.tracking.uri), str(cfg.name)
    if not store_exists(uri):
        return None
    found = MlflowClient(uri).get_experiment_by_name(name)
    if found is None:
        return None
    if view is not None and VIEW_TAG + view not in found.tags:
        view = None
    link = runs_page(uri, found.experiment_id, view)
    command = ui_command(uri)
    if command is None:
        log.info("results: MLflow experiment '%s' on %s; its runs:", name, uri)
    else:
        log.info("results: MLflow experiment '%s' in %s; run `%s`, then open:", name, uri, command)
    print(link, flush=True)
    return link


def flatten(cfg: DictConfig | Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys, so every config value is one comparable MLflow param."""
    items = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, Any] = {}
    for key, value in items.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def run_params(cfg: DictConfig) -> dict[str, Any]:
    """Every config value that shapes a run (the search space is logged on the sweep's parent)."""
    harness = ("search", "sweep", "export", "distributed")
    return {k: v for k, v in flatten(cfg).items() if k.split(".", 1)[0] not in harness}


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def standard_tags(cfg: DictConfig, dataset: str | data.Encoded) -> dict[str, str]:
    """What a reader needs to trust a run: code version, package versions, data, seed.

    `dataset` is the data fingerprint, or the loaded data a run validates on: then the tags also
    say which validation split it got (`data.val_split_used`: movie or random) and, where the
    data names movies, how many movies validation holds (`data.val_movies`).
    """
    fingerprint = dataset if isinstance(dataset, str) else dataset.fingerprint
    tags = {
        "seed": str(cfg.seed),
        "data_fingerprint": fingerprint,
        # who is writing the run: lets a restart tell a crashed run from a live one
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
    }
    if isinstance(dataset, data.Encoded):
        tags["data.val_split_used"] = dataset.val_split
        movies = data.val_movies(dataset, cfg.data.val_fraction, cfg.seed)
        if movies is not None:
            tags["data.val_movies"] = str(movies)
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    for package in PACKAGES:
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return tags


class EpochMetrics(mlflow.keras.MlflowCallback):
    """MLflow's Keras callback: metrics per epoch (step = epoch), optimizer params, summary.

    Epoch metrics are written synchronously: a few milliseconds per epoch, where MLflow's
    asynchronous queue costs up to a second or two at every run's end, waiting for its worker
    thread to drain (measured ~0.7 s per run on SQLite). Its evaluation hook would log
    `validation_val_*` duplicates after each epoch's validation; the epoch's `val_*` metrics
    already carry them.
    """

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if logs:
            mlflow.log_metrics(logs, step=epoch, model_id=self.model_id)

    def on_test_end(self, logs: dict[str, float] | None = None) -> None:
        return None


def log_config(cfg: DictConfig) -> None:
    mlflow.log_params(run_params(cfg))
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")


def log_outcome(
    model: keras.Model,
    histories: list[Mapping[str, list[float]]],
    seconds: float,
    val_tokens: np.ndarray,
    vocabulary: list[str],
    *,
    log_model: bool,
    objective: str = "val_accuracy",
    direction: str = "max",
) -> dict[str, float]:
    """Cost, curves, attention diagnostics and (optionally) the model, for the active run.

    With several executions (seeds) of one configuration, `best_<objective>` is their mean,
    as Keras Tuner scores it, and each execution's best is kept (step = execution) so export
    can tell a real difference from seed-to-seed noise.
    """
    history = histories[-1]
    epochs = sum(max((len(v) for v in h.values()), default=0) for h in histories)
    scores = [best_value(h, objective, direction) for h in histories]
    summary = {
        "duration_s": seconds,
        "seconds_per_epoch": seconds / max(epochs, 1),
        "epochs_run": float(epochs),
        "param_count": float(model.count_params()),
        f"best_{objective}": float(np.mean(scores)),
    }
    for execution, score in enumerate(scores):
        mlflow.log_metric(f"execution_best_{objective}", score, step=execution)
    sample = val_tokens[:DIAGNOSTIC_REVIEWS]
    weights = attention_weights(model, sample)
    summary.update(attention_stats(weights, sample))
    mlflow.log_metrics(summary)
    mlflow.log_figure(plots.learning_curves(history), "learning_curves.png")
    mlflow.log_figure(
        plots.attention_heatmaps(
            weights[:HEATMAP_REVIEWS],
            sample[:HEATMAP_REVIEWS],
            vocabulary,
            max_tokens=HEATMAP_TOKENS,
        ),
        "attention_heatmap.png",
    )
    if log_model:
        started = time.perf_counter()
        signature = mlflow.models.infer_signature(sample[:2], model.predict(sample[:2], verbose=0))
        mlflow.keras.log_model(
            model, name="model", signature=signature, pip_requirements=_requirements()
        )
        log.debug("model logged in %.1f s", time.perf_counter() - started)
    return summary


def _requirements() -> list[str]:
    """Pinned from what is installed, so MLflow need not infer them (slow: it reloads the model)."""
    pins = []
    for package in ("tensorflow", "keras", "numpy"):
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


@contextmanager
def tracked_run(**start_kwargs: Any) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED, FAILED on error, KILLED on Ctrl-C — never RUNNING."""
    run = mlflow.start_run(**start_kwargs)
    if start_kwargs.get("run_id") and start_kwargs.get("tags"):
        mlflow.set_tags(start_kwargs["tags"])  # a resumed run: now this process writes it
    try:
        yield run
    except KeyboardInterrupt:
        _end(RunStatus.KILLED)
        raise
    except BaseException:
        _end(RunStatus.FAILED)
        raise
    else:
        _end(RunStatus.FINISHED)


def _end(status: int) -> None:
    try:
        mlflow.flush_async_logging()
        mlflow.end_run(RunStatus.to_string(status))
    except Exception as err:
        if not unreachable(err):
            raise
        # the server is gone: the run stays RUNNING there and is closed KILLED on the next start
        log.warning("could not close the MLflow run: %s", first_line(err))


def unreachable(err: BaseException) -> bool:
    """Whether `err` says the tracking server stopped answering (not that a request was bad)."""
    import requests

    text = str(err)
    return isinstance(err, requests.exceptions.ConnectionError) or (
        "API request to" in text and ("failed with exception" in text or "Max retries" in text)
    )


def gone_message(err: BaseException) -> str:
    return (
        f"the MLflow tracking server stopped answering ({first_line(err)[:160]}); finished "
        "trials are kept there and in sweeps/: re-run the same command once it is back to "
        "resume, and the interrupted trial is retried"
    )


def close_stale_runs(experiment: str) -> list[str]:
    """Mark runs a crash left RUNNING as KILLED, so no run stays RUNNING after a restart.

    Only runs whose process is known dead are closed (same host, pid gone, or no pid recorded):
    another sweep or run writing to the same experiment at this moment is left alone.
    """
    host = socket.gethostname()

    def dead(run: mlflow.entities.Run) -> bool:
        tags = run.data.tags
        if "pid" not in tags:
            return True
        return tags.get("host") == host and not _alive(int(tags["pid"]))

    stale = [r for r in _running(experiment) if dead(r)]
    return _kill(stale, "left RUNNING by a process that is gone")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def existing_run(run_id: str, experiment: str) -> str | None:
    """`run_id` if this store holds it in `experiment` (a sweep resumes its own parent)."""
    try:
        run = MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return None
    return run_id if run.info.experiment_id == experiment else None


def log_sweep_settings(cfg: DictConfig) -> None:
    """The parent run's record of what is searched and how."""
    settings = {k: v for k, v in flatten(cfg.search).items() if not k.startswith("space.")}
    mlflow.log_params({f"search.{k}": v for k, v in settings.items()})
    mlflow.log_param("search.space", ", ".join(cfg.search.space))
    mlflow.log_text(OmegaConf.to_yaml(cfg.search, resolve=True), "search.yaml")
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")


def log_hyperparameters(values: Mapping[str, Any]) -> None:
    """Name the searched params (their values are config params already)."""
    mlflow.set_tag("hyperparameters", ", ".join(values))


def log_failure(err: BaseException) -> None:
    message = str(err).strip() or type(err).__name__
    mlflow.set_tag("error", message[:5000])


def best_value(history: Mapping[str, list[float]], metric: str, direction: str) -> float:
    """The objective's best epoch value; NaN when the metric was never logged."""
    values = [v for v in history.get(metric, []) if np.isfinite(v)]
    if not values:
        return float("nan")
    return float(max(values) if direction == "max" else min(values))


def finished_trial(parent_run_id: str, trial_id: str, objective: str) -> dict[str, float] | None:
    """The objective of a trial already logged FINISHED under this parent, if any."""
    parent = MlflowClient().get_run(parent_run_id)
    runs = MlflowClient().search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.trial_id = '{trial_id}' "
        "and attributes.status = 'FINISHED'",
        max_results=1,
    )
    if not runs or f"best_{objective}" not in runs[0].data.metrics:
        return None
    return {objective: runs[0].data.metrics[f"best_{objective}"]}


def trial_runs(parent_run_id: str) -> list[mlflow.entities.Run]:
    """Every child run of a sweep, whatever its status."""
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=5000,
    )


def objective_curves(
    parent_run_id: str, metric: str, known: set[str] | frozenset[str] = frozenset()
) -> dict[str, dict[int, float]]:
    """Run id -> epoch (step) -> `metric`, for each FINISHED trial of this sweep (completed or
    pruned) not in `known`; several executions' values at one epoch are averaged."""
    client = MlflowClient()
    curves: dict[str, dict[int, float]] = {}
    for run in trial_runs(parent_run_id):
        if run.info.status != "FINISHED" or run.info.run_id in known:
            continue
        by_step: dict[int, list[float]] = {}
        for point in client.get_metric_history(run.info.run_id, metric):
            by_step.setdefault(point.step, []).append(point.value)
        curves[run.info.run_id] = {s: float(np.mean(v)) for s, v in sorted(by_step.items())}
    return curves


def log_pruned(epoch: int) -> None:
    """Mark the active trial run as pruned after `epoch` epochs (1-based): FINISHED, not failed."""
    mlflow.set_tags({leaderboard.PRUNED_TAG: "true", leaderboard.PRUNED_AT_TAG: str(epoch)})


def log_leaderboard(parent_run_id: str, cfg: DictConfig) -> float | None:
    """Refresh the sweep's leaderboard CSV and summary plots on its parent run; the best value."""
    search = cfg.search
    table = leaderboard.frame(
        trial_runs(parent_run_id), list(search.space), search.objective, search.direction
    )
    client = MlflowClient()
    if table.empty:
        return None
    client.log_text(parent_run_id, table.to_csv(index=False), "leaderboard.csv")
    best_column = f"best_{search.objective}"
    finished = table[table["status"] == "FINISHED"].dropna(subset=[best_column])
    describe_sweep(parent_run_id, cfg, table, finished)
    if finished.empty:
        return None
    client.log_figure(
        parent_run_id,
        plots.objective_by_hyperparameter(finished, list(search.space), best_column),
        "objective_by_hyperparameter.png",
    )
    client.log_figure(
        parent_run_id,
        plots.parallel_coordinates(finished, list(search.space), best_column),
        "parallel_coordinates.png",
    )
    best = float(finished[best_column].iloc[0])
    client.log_metric(parent_run_id, best_column, best)
    client.set_tag(parent_run_id, "best_run_id", finished["run_id"].iloc[0])
    return best


def describe_sweep(
    parent_run_id: str, cfg: DictConfig, table: pd.DataFrame, finished: pd.DataFrame
) -> str:
    """The sweep's standing (best trial, top trials, verdicts) as the description of its parent
    run and of its experiment, which is what the MLflow UI shows first; returns the markdown."""
    search, client = cfg.search, MlflowClient()
    experiment = client.get_run(parent_run_id).info.experiment_id
    executions = None
    if search.executions_per_trial > 1:  # each trial's seeds: the noise the verdicts need
        executions = {run: execution_scores(run, search.objective) for run in finished["run_id"]}
    text = leaderboard.description(
        table,
        list(search.space),
        search.objective,
        search.direction,
        max_trials=search.max_trials if search.tuner != "hyperband" else None,
        link=lambda run_id: (
            f"#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"
        ),
        board=runs_route(experiment, LEADERBOARD_VIEW),
        executions=executions,
        top=DESCRIPTION_TOP,
    )[:MAX_NOTE]
    client.set_tag(parent_run_id, NOTE_TAG, text)
    client.set_experiment_tag(experiment, NOTE_TAG, text)
    view = leaderboard_view(parent_run_id, cfg)
    save_view(experiment, LEADERBOARD_VIEW, f"{cfg.name} leaderboard", view)
    return text


def sweep_parent(name: str, parent_run_id: str | None = None) -> mlflow.entities.Run | None:
    """The sweep's parent run: the one asked for, else the newest sweep of experiment `name`."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return None
    if parent_run_id:
        return (
            client.get_run(parent_run_id)
            if existing_run(parent_run_id, experiment.experiment_id)
            else None
        )
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.sweep = '{name}'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents[0] if parents else None


def execution_scores(run_id: str, objective: str) -> list[float]:
    """Each execution's best objective value of one trial (several when seeds were repeated)."""
    history = MlflowClient().get_metric_history(run_id, f"execution_best_{objective}")
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def run_config(run_id: str) -> dict[str, Any]:
    """The resolved config a run logged."""
    import yaml

    text = mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml")
    return yaml.safe_load(text)


def best_epochs(run_id: str, objective: str, direction: str) -> int:
    """How many epochs it took the run to reach its best objective value."""
    history = sorted(MlflowClient().get_metric_history(run_id, objective), key=lambda m: m.step)
    if not history:
        return 0
    pick = max if direction == "max" else min
    return pick(history, key=lambda m: m.value).step + 1


def log_export(parent_run_id: str, directory: Path) -> None:
    MlflowClient().log_artifacts(parent_run_id, str(directory), "export")


def log_final(
    model: keras.Model, metrics: Mapping[str, float], registered_model: str, sample: np.ndarray
) -> str:
    """Test metrics of the final model, which is logged and registered; returns its URI."""
    mlflow.log_metrics(dict(metrics))
    signature = mlflow.models.infer_signature(sample, model.predict(sample, verbose=0))
    info = mlflow.keras.log_model(
        model,
        name="model",
        signature=signature,
        pip_requirements=_requirements(),
        registered_model_name=registered_model,
    )
    return info.model_uri


# --- distributed sweeps: several processes share one parent run on one tracking server ---------

#: Tags that let a worker find the chief's parent run, and a reader see who ran a trial.
ORACLE_PORT_TAG, WORKER_TAG = "oracle_port", "worker_id"


def _running(experiment: str, extra: str = "") -> list[mlflow.entities.Run]:
    where = "attributes.status = 'RUNNING'" + (f" and {extra}" if extra else "")
    return MlflowClient().search_runs([experiment], where, max_results=5000)


def _kill(runs: list[mlflow.entities.Run], why: str) -> list[str]:
    client = MlflowClient()
    for run in runs:
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
    if runs:
        log.warning("marked %d run(s) KILLED: %s", len(runs), why)
    return [r.info.run_id for r in runs]


def close_stale_runs_outside(experiment: str, parent_run_id: str | None) -> list[str]:
    """`close_stale_runs` for a distributed chief: the sweep's own parent and trials are left
    alone, since live workers may still be running them while a restarted chief resumes."""
    stale = [
        r
        for r in _running(experiment)
        if parent_run_id is None
        or (
            r.info.run_id != parent_run_id
            and r.data.tags.get("mlflow.parentRunId") != parent_run_id
        )
    ]
    return _kill(stale, "left RUNNING by an earlier crash, outside this sweep")


def close_open_trials(parent_run_id: str, worker_id: str | None = None) -> list[str]:
    """Mark the sweep's RUNNING trial runs KILLED: those of `worker_id` (a restarted worker
    closing what its dead predecessor left), or all of them (the chief, once no trial is on)."""
    experiment = MlflowClient().get_run(parent_run_id).info.experiment_id
    where = f"tags.mlflow.parentRunId = '{parent_run_id}'"
    if worker_id is not None:
        where += f" and tags.{WORKER_TAG} = '{worker_id}'"
    why = f"trials of worker {worker_id} that died" if worker_id else "trials no worker finished"
    return _kill(_running(experiment, where), why)


def find_sweep_parent(experiment: str, name: str, oracle_port: int) -> str | None:
    """The RUNNING parent run of the distributed sweep `name` whose chief serves `oracle_port`
    (the newest, should an older chief have died without closing its own)."""
    runs = MlflowClient().search_runs(
        [experiment],
        f"attributes.status = 'RUNNING' and tags.sweep = '{name}' "
        f"and tags.{ORACLE_PORT_TAG} = '{oracle_port}'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents[0].info.run_id if parents else None


def best_finished(parent_run_id: str, objective: str, direction: str) -> float | None:
    """The best objective any worker has logged FINISHED under this parent so far."""
    key = f"best_{objective}"
    values = [
        r.data.metrics[key]
        for r in trial_runs(parent_run_id)
        if r.info.status == "FINISHED" and np.isfinite(r.data.metrics.get(key, np.nan))
    ]
    if not values:
        return None
    return float(max(values) if direction == "max" else min(values))


def trials_done(parent_run_id: str) -> int:
    """Distinct trials logged FINISHED or FAILED under this parent (by any worker)."""
    return len(
        {
            r.data.tags.get("trial_id")
            for r in trial_runs(parent_run_id)
            if r.info.status in ("FINISHED", "FAILED")
        }
    )


def run_metric(run_id: str, key: str) -> float | None:
    """One metric of a run, None when it was never logged."""
    return MlflowClient().get_run(run_id).data.metrics.get(key)


def artifact_location(experiment: str) -> str:
    """Where an experiment's artifacts go (a local path reaches no other machine)."""
    return str(MlflowClient().get_experiment(experiment).artifact_location)
