"""The Keras side of tracking: per-epoch metrics, and what a run logs from a trained model.

Kept apart from the rest of `sweep.tracking` because it needs Keras (and `mlflow.keras`), which
the store checks, queries and leaderboards must not pay seconds to import.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from importlib import metadata

import keras
import mlflow
import mlflow.keras
import numpy as np

from sweep import plots
from sweep.model import attention_stats, attention_weights
from sweep.tracking.queries import best_value

log = logging.getLogger(__name__)

#: Validation reviews drawn in the attention heatmap, and used for the entropy diagnostics.
HEATMAP_REVIEWS, DIAGNOSTIC_REVIEWS = 3, 256
#: Tokens per heatmap axis: more are unreadable.
HEATMAP_TOKENS = 40


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
    _log_figures(histories[-1], weights, sample, vocabulary)
    if log_model:
        started = time.perf_counter()
        signature = mlflow.models.infer_signature(sample[:2], model.predict(sample[:2], verbose=0))
        mlflow.keras.log_model(
            model, name="model", signature=signature, pip_requirements=_requirements()
        )
        log.debug("model logged in %.1f s", time.perf_counter() - started)
    return summary


def _log_figures(
    history: Mapping[str, list[float]],
    weights: np.ndarray,
    sample: np.ndarray,
    vocabulary: list[str],
) -> None:
    """The plots a reader checks a run by: its learning curves and where attention looked."""
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


def _requirements() -> list[str]:
    """Pinned from what is installed, so MLflow need not infer them (slow: it reloads the model)."""
    pins = []
    for package in ("tensorflow", "keras", "numpy"):
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return pins
