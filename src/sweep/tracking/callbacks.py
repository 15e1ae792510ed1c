"""The Keras side of tracking: per-epoch metrics, and what a run logs from a trained model.

Kept apart from the rest of `sweep.tracking` because it needs Keras (and `mlflow.keras`), which
the store checks, queries and leaderboards must not pay seconds to import.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

import keras
import mlflow
import mlflow.keras
import mlflow.pyfunc
import numpy as np
from mlflow.models.model import ModelInfo

from sweep import plots, served
from sweep.model import attention_stats, attention_weights, word_ids
from sweep.served.scorer import CLASSIFIER, PREPROCESSING, Preprocessing, artifact
from sweep.tracking.queries import best_value

log = logging.getLogger(__name__)
# "Running the predict function to generate output based on input example", at every model
logging.getLogger("mlflow.models.signature").setLevel(logging.WARNING)

#: Validation reviews drawn in the attention heatmap, and used for the entropy diagnostics.
HEATMAP_REVIEWS, DIAGNOSTIC_REVIEWS = 3, 256
#: Tokens per heatmap axis: more are unreadable.
HEATMAP_TOKENS = 40
#: What a served model needs installed, pinned to this environment's versions.
REQUIREMENTS = ("mlflow", "tensorflow", "keras", "numpy", "pandas")


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
    histories: Sequence[Mapping[str, list[float]]],
    seconds: float,
    val_tokens: np.ndarray,
    preprocessing: Preprocessing,
    *,
    log_model: bool,
    log_figures: bool = True,
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
    words = word_ids(sample)
    summary.update(attention_stats(weights, words))
    mlflow.log_metrics(summary)
    if log_figures:
        _log_figures(histories[-1], weights, words, preprocessing.vocabulary)
    if log_model:
        log_served_model(model, preprocessing)
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
    model: keras.Model,
    metrics: Mapping[str, float],
    registered_model: str,
    preprocessing: Preprocessing,
) -> str:
    """Test metrics of the final model, which is logged and registered; returns its URI."""
    mlflow.log_metrics(dict(metrics))
    return log_served_model(model, preprocessing, registered_model).model_uri


def log_served_model(
    model: keras.Model, preprocessing: Preprocessing, registered_model: str | None = None
) -> ModelInfo:
    """`model` as the run's served model: raw review text in, P(pos) and label out, loadable
    where `sweep` is not installed (`sweep.served`); registered when `registered_model` names
    a registered model."""
    return log_served_ensemble([(model, preprocessing)], registered_model)


def log_served_ensemble(
    members: Sequence[tuple[keras.Model, Preprocessing]], registered_model: str | None = None
) -> ModelInfo:
    """The served model that averages `members`' probabilities (one member: that model).
    MLflow runs it here on its input example (~0.3 s a member), with the harness's own modules
    in place of the shipped copy (`served.use_own_modules`)."""
    started = time.perf_counter()
    served.use_own_modules()
    with tempfile.TemporaryDirectory(prefix="served-") as tmp:
        work = Path(tmp)
        artifacts: dict[str, str] = {}
        for member, (model, preprocessing) in enumerate(members):
            classifier, steps = artifact(CLASSIFIER, member), artifact(PREPROCESSING, member)
            artifacts[classifier] = str(work / f"{classifier}.keras")
            artifacts[steps] = str(work / f"{steps}.json")
            # the same layers and weights without the optimizer's state: a third of the file
            keras.Model(model.inputs, model.outputs, name=model.name).save(artifacts[classifier])
            preprocessing.save(Path(artifacts[steps]))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=served.MODEL_CODE,
            artifacts=artifacts,
            code_paths=[str(served.stage(work))],
            input_example=list(served.EXAMPLES),
            pip_requirements=_requirements(),
            registered_model_name=registered_model,
        )
    log.debug("model logged in %.1f s", time.perf_counter() - started)
    return info


def _requirements() -> list[str]:
    """Pinned from what is installed, so MLflow need not infer them (slow: it reloads the model)."""
    pins = []
    for package in REQUIREMENTS:
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return pins
