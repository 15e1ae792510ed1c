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
    """`model.fit` on NumPy arrays with the config's settings; `fit_kwargs` win (tuners set
    epochs and callbacks)."""
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
    encoded = load(cfg)
    xy = arrays(encoded, cfg)
    tracking.configure(cfg.tracking)
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
            history.history,
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
