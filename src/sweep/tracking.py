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

from sweep import plots
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


def experiment_id(name: str, tracking: DictConfig) -> str:
    """The MLflow experiment for `name`, created with artifacts under `tracking.artifact_root`."""
    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if is_local_store(str(tracking.uri)):
        location = (Path(tracking.artifact_root) / name).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


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
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
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
) -> dict[str, float]:
    """Cost, curves, attention diagnostics and (optionally) the model, for the active run."""
    epochs = max(len(v) for v in history.values()) if history else 0
    summary = {
        "duration_s": seconds,
        "seconds_per_epoch": seconds / max(epochs, 1),
        "epochs_run": float(epochs),
        "param_count": float(model.count_params()),
    }
    sample = val_tokens[:DIAGNOSTIC_REVIEWS]
    weights = attention_weights(model, sample)
    summary.update(attention_stats(weights, sample))
    mlflow.log_metrics(summary)
    mlflow.log_figure(plots.learning_curves(history), "learning_curves.png")
    mlflow.log_figure(
        plots.attention_heatmaps(weights[:HEATMAP_REVIEWS], sample[:HEATMAP_REVIEWS],
                                 vocabulary, max_tokens=HEATMAP_TOKENS),
        "attention_heatmap.png",
    )
    if log_model:
        started = time.perf_counter()
        mlflow.keras.log_model(model, name="model", pip_requirements=_requirements())
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
