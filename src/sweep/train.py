"""One tracked training run: the base config fitted once and logged to MLflow.

A sweep's trials fit through the same `fit`, so a trial costs what a plain run costs.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
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
        val_split=cfg.data.get("val_split", "auto"),
    )


def arrays(encoded: data.Encoded, cfg: DictConfig) -> Arrays:
    """Split off validation (fixed seed) and pad to this config's `seq_len` (cheap, per run).

    Pads every training review once and then picks rows, rather than gathering every token of
    25k reviews into two parts first (~7x faster at seq_len 64 on the full data).
    """
    train, val = data.validation_split(encoded, cfg.data.val_fraction, seed=cfg.seed)
    padded = data.pad(encoded.train, cfg.data.seq_len, cfg.data.padding, cfg.data.truncating)
    y = np.asarray(encoded.y_train, dtype=np.int32)
    return Arrays(padded[train], y[train], padded[val], y[val])


def fit(
    model: keras.Model, cfg: DictConfig, xy: Arrays, **fit_kwargs: Any
) -> keras.callbacks.History:
    """`model.fit` on the padded NumPy arrays with the config's settings; `fit_kwargs` win
    (tuners set epochs and callbacks).

    NumPy on purpose: Keras feeds in-memory arrays through its own prefetched `tf.data` pipeline
    (a per-epoch permutation computed ahead, batches gathered in parallel). A hand-built
    `from_tensor_slices().shuffle().batch().prefetch()` pipeline, which shuffles element by
    element, was no faster (1.01-1.09x the wall time per epoch); see benchmarks/README.md.
    """
    kwargs: dict[str, Any] = {
        "batch_size": cfg.train.batch_size,
        "epochs": cfg.train.epochs,
        "verbose": cfg.train.verbose,
        "validation_data": (xy.x_val, xy.y_val),
    }
    kwargs.update(fit_kwargs)
    return model.fit(xy.x_train, xy.y_train, **kwargs)


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
        tags=tracking.standard_tags(cfg, encoded),
    ) as active:
        tracking.log_config(cfg)
        model = build_model(cfg)
        started = time.perf_counter()
        history = fit(model, cfg, xy, callbacks=[tracking.EpochMetrics(), StopOnInterrupt()])
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


#: Set when the user pressed Ctrl-C; see `StopOnInterrupt`.
INTERRUPTED = threading.Event()


class StopOnInterrupt(keras.callbacks.Callback):
    """Re-raises a Ctrl-C at the next batch boundary.

    Python delivers KeyboardInterrupt wherever the main thread happens to be, and inside
    TensorFlow's or tf.data's callbacks it can be printed and dropped; remembering the key
    press and raising it from plain Python code makes Ctrl-C always stop the run.
    """

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt

    on_test_batch_end = on_train_batch_end
