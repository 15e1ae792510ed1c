"""Everything MLflow: the store, experiments, what a run logs, and closing runs a crash left open.

Training code hands this module its config, history and model; nothing else imports mlflow.
"""

from __future__ import annotations

import logging
import subprocess
import time
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
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from sweep import leaderboard, plots
from sweep.model import attention_stats, attention_weights

log = logging.getLogger(__name__)

#: Distributions whose versions every run records.
PACKAGES = ("attention-sweep", "tensorflow", "keras", "keras-tuner", "mlflow", "hydra-core")
#: Validation reviews drawn in the attention heatmap, and used for the entropy diagnostics.
HEATMAP_REVIEWS, DIAGNOSTIC_REVIEWS = 3, 256
#: Tokens per heatmap axis: more are unreadable.
HEATMAP_TOKENS = 40


def configure(tracking: DictConfig) -> None:
    """Point MLflow at the configured store, creating the local directory SQLite needs."""
    uri = str(tracking.uri)
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        db_path = Path(uri.removeprefix("sqlite:///"))
        db_path.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)


def is_local_store(uri: str) -> bool:
    return urlparse(uri).scheme in ("sqlite", "file", "")


def use_experiment(name: str, tracking: DictConfig) -> str:
    """Make `name` the active MLflow experiment (created with artifacts under
    `tracking.artifact_root` for a local store); returns its id."""
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        experiment = found.experiment_id
    else:
        location = None
        if is_local_store(str(tracking.uri)):
            location = (Path(tracking.artifact_root) / name).resolve().as_uri()
        experiment = client.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment)
    return experiment


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
    return {k: v for k, v in flatten(cfg).items() if not k.startswith(("search.", "sweep."))}


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


def standard_tags(cfg: DictConfig, fingerprint: str) -> dict[str, str]:
    """What a reader needs to trust a run: code version, package versions, data, seed."""
    tags = {"seed": str(cfg.seed), "data_fingerprint": fingerprint}
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

    Its evaluation hook would log `validation_val_*` duplicates after each epoch's validation;
    the epoch's `val_*` metrics already carry them.
    """

    def on_test_end(self, logs: dict[str, float] | None = None) -> None:
        return None


def log_config(cfg: DictConfig) -> None:
    mlflow.log_params(run_params(cfg))
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")


def log_outcome(
    model: keras.Model,
    history: Mapping[str, list[float]],
    seconds: float,
    val_tokens: np.ndarray,
    vocabulary: list[str],
    *,
    log_model: bool,
    objective: str = "val_accuracy",
    direction: str = "max",
) -> dict[str, float]:
    """Cost, curves, attention diagnostics and (optionally) the model, for the active run."""
    epochs = max(len(v) for v in history.values()) if history else 0
    summary = {
        "duration_s": seconds,
        "seconds_per_epoch": seconds / max(epochs, 1),
        "epochs_run": float(epochs),
        "param_count": float(model.count_params()),
        f"best_{objective}": best_value(history, objective, direction),
    }
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
    mlflow.flush_async_logging()
    mlflow.end_run(RunStatus.to_string(status))


def close_stale_runs(experiment: str, *, older_than_s: float = 0.0) -> list[str]:
    """Mark runs a crash left RUNNING as KILLED, so no run stays RUNNING after a restart."""
    client = MlflowClient()
    cutoff = (time.time() - older_than_s) * 1000
    stale = client.search_runs([experiment], "attributes.status = 'RUNNING'", max_results=1000)
    closed = []
    for run in stale:
        if run.info.start_time <= cutoff:
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
            closed.append(run.info.run_id)
    if closed:
        log.warning("closed %d run(s) left RUNNING by an earlier crash as KILLED", len(closed))
    return closed


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
