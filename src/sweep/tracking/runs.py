"""A run's life and record: params from the config, tags a reader trusts it by, and an end
status that is never left RUNNING."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from sweep import data
from sweep.errors import first_line
from sweep.tracking.store import unreachable
from sweep.vocabulary import (
    COMMIT_TAG,
    ERROR_TAG,
    FINGERPRINT_TAG,
    HOST_TAG,
    HYPERPARAMETERS_TAG,
    KILL_REASON_TAG,
    PID_TAG,
    PRUNED_AT_TAG,
    PRUNED_TAG,
    SEED_TAG,
    VAL_MOVIES_TAG,
    VAL_SPLIT_TAG,
    VERSION_TAG_PREFIX,
    part_of_trial,
    within,
)

log = logging.getLogger(__name__)

#: Distributions whose versions every run records.
PACKAGES = ("attention-sweep", "tensorflow", "keras", "keras-tuner", "mlflow", "hydra-core")


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
    """Every config value that shapes what a run trains and measures, the params runs are
    compared by (the search's settings are logged on the sweep's parent; the whole config, as
    `config.yaml`, with every run)."""
    return {k: v for k, v in flatten(cfg).items() if part_of_trial(k) and not within(k, ["search"])}


def git_commit() -> str | None:
    """The code's commit, so a result can be traced to the code that made it (None outside git)."""
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
        SEED_TAG: str(cfg.seed),
        FINGERPRINT_TAG: fingerprint,
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(os.getpid()),
    }
    if isinstance(dataset, data.Encoded):
        tags[VAL_SPLIT_TAG] = dataset.val_split
        movies = data.val_movies(
            dataset, cfg.data.val_fraction, cfg.seed, cfg.data.get("confirm_fraction", 0.0)
        )
        if movies is not None:
            tags[VAL_MOVIES_TAG] = str(movies)
    commit = git_commit()
    if commit:
        tags[COMMIT_TAG] = commit
    for package in PACKAGES:
        try:
            tags[VERSION_TAG_PREFIX + package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return tags


class Superseded(Exception):
    """Another process took over the active run's work (a distributed trial the chief took back
    from a silent worker, or one another worker logged FINISHED): the run ends KILLED, with the
    reason as tag `kill_reason`, not FAILED."""


@contextmanager
def tracked_run(**start_kwargs: Any) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED, FAILED on error, KILLED on Ctrl-C or when superseded
    — never RUNNING."""
    run = mlflow.start_run(**start_kwargs)
    if start_kwargs.get("run_id") and start_kwargs.get("tags"):
        mlflow.set_tags(start_kwargs["tags"])  # a resumed run: now this process writes it
    try:
        yield run
    except KeyboardInterrupt:
        _end(RunStatus.KILLED)
        raise
    except Superseded as why:
        # the chief's reason, when it marked the run KILLED first, is the one to keep
        if KILL_REASON_TAG not in MlflowClient().get_run(run.info.run_id).data.tags:
            mlflow.set_tag(KILL_REASON_TAG, str(why))
        _end(RunStatus.KILLED)
        raise
    except BaseException:
        _end(RunStatus.FAILED)
        raise
    else:
        _end(RunStatus.FINISHED)


def _end(status: int) -> None:
    """Close the active run; a server that went away leaves it for the next start to close."""
    try:
        mlflow.flush_async_logging()
        mlflow.end_run(RunStatus.to_string(status))
    except Exception as err:
        if not unreachable(err):
            raise
        # the server is gone: the run stays RUNNING there and is closed KILLED on the next start
        log.warning("could not close the MLflow run: %s", first_line(err))


def log_config(cfg: DictConfig) -> None:
    """The run's config, as params to compare runs by and as the YAML to re-run it from."""
    mlflow.log_params(run_params(cfg))
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")


def log_sweep_settings(cfg: DictConfig) -> None:
    """The parent run's record of what is searched and how."""
    settings = {k: v for k, v in flatten(cfg.search).items() if not k.startswith("space.")}
    mlflow.log_params({f"search.{k}": v for k, v in settings.items()})
    mlflow.log_param("search.space", ", ".join(cfg.search.space))
    mlflow.log_text(OmegaConf.to_yaml(cfg.search, resolve=True), "search.yaml")
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")


def log_hyperparameters(values: Mapping[str, Any]) -> None:
    """Name the searched params (their values are config params already)."""
    mlflow.set_tag(HYPERPARAMETERS_TAG, ", ".join(values))


def log_failure(err: BaseException) -> None:
    """Why the active run failed, where the UI shows it beside the run."""
    message = str(err).strip() or type(err).__name__
    mlflow.set_tag(ERROR_TAG, message[:5000])


def log_pruned(epoch: int) -> None:
    """Mark the active trial run as pruned after `epoch` epochs (1-based): FINISHED, not failed."""
    mlflow.set_tags({PRUNED_TAG: "true", PRUNED_AT_TAG: str(epoch)})


def log_export(parent_run_id: str, directory: Path) -> None:
    """Keep an export beside the sweep it came from."""
    MlflowClient().log_artifacts(parent_run_id, str(directory), "export")
