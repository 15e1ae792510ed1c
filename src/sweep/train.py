"""One tracked training run: the base config fitted once and logged to MLflow.

A sweep's trials fit through the same `fit`, so a trial costs what a plain run costs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig

from sweep import data, tracking
from sweep.model import build_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arrays:
    """Padded training and validation arrays for one sequence length (the test split stays out)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def load(cfg: DictConfig) -> data.Encoded:
    """The tokenised reviews, from the cache when it is fresh."""
    return data.load_encoded(
        source=cfg.data.source,
        path=cfg.data.path,
        num_words=cfg.data.num_words,
        cache_dir=cfg.data.cache_dir,
        limit=cfg.data.limit,
        seed=cfg.seed,
    )


def arrays(encoded: data.Encoded, cfg: DictConfig) -> Arrays:
    """Split off validation (fixed seed) and pad to this config's `seq_len` (cheap, per run)."""
    train, val = data.split_train_val(encoded, cfg.data.val_fraction, seed=cfg.seed)
    padded = [
        data.pad(part.sequences, cfg.data.seq_len, cfg.data.padding, cfg.data.truncating)
        for part in (train, val)
    ]
    return Arrays(padded[0], train.labels, padded[1], val.labels)


def fit(
    model: keras.Model, cfg: DictConfig, xy: Arrays, **fit_kwargs: Any
) -> keras.callbacks.History:
    """`model.fit` with the config's settings on a `tf.data` pipeline over the padded arrays.

    The training set is shuffled with the run's seed (a new order each epoch, the same orders on
    every run), batched and prefetched, so the next batch is ready while the current one trains.
    `fit_kwargs` win (tuners set epochs and callbacks); `batch_size`, `shuffle` and
    `validation_batch_size` shape the pipelines instead of reaching `model.fit`.
    """
    batch_size = int(fit_kwargs.pop("batch_size", None) or cfg.train.batch_size)
    shuffle = bool(fit_kwargs.pop("shuffle", True))
    validation_batch_size = int(fit_kwargs.pop("validation_batch_size", None) or batch_size)
    kwargs: dict[str, Any] = {
        "epochs": cfg.train.epochs,
        "verbose": cfg.train.verbose,
        "validation_data": dataset(xy.x_val, xy.y_val, validation_batch_size),
    }
    kwargs.update(fit_kwargs)
    train_data = dataset(xy.x_train, xy.y_train, batch_size, seed=cfg.seed if shuffle else None)
    return model.fit(train_data, shuffle=False, **kwargs)


def dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, seed: int | None = None
) -> tf.data.Dataset:
    """Batches of `(x, y)`, prefetched; reshuffled each epoch from `seed` (None: in order)."""
    data = tf.data.Dataset.from_tensor_slices((x, y))
    if seed is not None:
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def run(cfg: DictConfig) -> float:
    """Train `cfg` once, log everything to MLflow, and return the best validation accuracy."""
    tracking.configure(cfg.tracking)
    encoded = load(cfg)
    xy = arrays(encoded, cfg)
    experiment = tracking.use_experiment(cfg.name, cfg.tracking)
    tracking.close_stale_runs(experiment)
    keras.utils.set_random_seed(cfg.seed)
    with tracking.tracked_run(
        experiment_id=experiment,
        run_name=f"{cfg.name}-run",
        tags=tracking.standard_tags(cfg, encoded.fingerprint),
    ) as active:
        tracking.log_config(cfg)
        model = build_model(cfg)
        started = time.perf_counter()
        history = fit(model, cfg, xy, callbacks=[tracking.EpochMetrics()])
        seconds = time.perf_counter() - started
        tracking.log_outcome(
            model,
            [history.history],
            seconds,
            xy.x_val,
            encoded.vocabulary,
            log_model=cfg.tracking.log_models != "none",
        )
    best = max(history.history.get("val_accuracy", [float("nan")]))
    log.info(
        "run %s: best val_accuracy %.4f in %.0f s; open the MLflow UI with: "
        "mlflow ui --backend-store-uri %s",
        active.info.run_id,
        best,
        seconds,
        cfg.tracking.uri,
    )
    return best


def final_evaluation(
    cfg: DictConfig, registered_model: str, source_run_id: str
) -> dict[str, float]:
    """Retrain `cfg` on the whole training split and evaluate it once on the test split.

    The only place the test split is touched: model selection never sees it.
    """
    encoded = load(cfg)
    pad = {
        "seq_len": cfg.data.seq_len,
        "padding": cfg.data.padding,
        "truncating": cfg.data.truncating,
    }
    x, y = data.pad(encoded.train, **pad), encoded.y_train
    x_test, y_test = data.pad(encoded.test, **pad), encoded.y_test
    tracking.configure(cfg.tracking)
    tracking.use_experiment(cfg.name, cfg.tracking)
    tags = {
        **tracking.standard_tags(cfg, encoded.fingerprint),
        "final": "true",
        "source_run_id": source_run_id,
    }
    keras.utils.set_random_seed(cfg.seed)
    with tracking.tracked_run(run_name=f"{cfg.name}-final", tags=tags):
        tracking.log_config(cfg)
        model = build_model(cfg)
        model.fit(
            x,
            y,
            batch_size=cfg.train.batch_size,
            epochs=cfg.train.epochs,
            verbose=cfg.train.verbose,
            callbacks=[tracking.EpochMetrics()],
        )
        loss, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
        metrics = {"test_loss": float(loss), "test_accuracy": float(accuracy)}
        tracking.log_final(model, metrics, registered_model, x_test[:2])
    log.info(
        "final model: test_accuracy %.4f (registered as %s)",
        metrics["test_accuracy"],
        registered_model,
    )
    return metrics
