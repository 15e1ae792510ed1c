"""One tracked training run: the base config fitted once and logged to MLflow.

A sweep's trials fit through the same `fit`, so a trial costs what a plain run costs.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import keras
import numpy as np
from omegaconf import DictConfig

from sweep import batches, data, tracking
from sweep.interrupt import INTERRUPTED
from sweep.model import build_model
from sweep.served.scorer import Preprocessing
from sweep.tracking.callbacks import EpochMetrics, log_final, log_outcome
from sweep.vocabulary import FINAL_TAG, SOURCE_RUN_TAG

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arrays:
    """Training and validation reviews of one config, cut to its `seq_len` (the test split
    stays out): batched by length, or padded to `seq_len` on first use."""

    train: data.Ragged
    y_train: np.ndarray
    val: data.Ragged
    y_val: np.ndarray
    seq_len: int
    padding: str = "pre"

    @cached_property
    def x_train(self) -> np.ndarray:
        return data.pad(self.train, self.seq_len, self.padding)

    @cached_property
    def x_val(self) -> np.ndarray:
        """Also what the attention diagnostics look at, in either batching mode."""
        return data.pad(self.val, self.seq_len, self.padding)


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
        ngrams=cfg.data.ngrams,
        ngram_buckets=cfg.data.ngram_buckets or 0,
    )


def arrays(encoded: data.Encoded, cfg: DictConfig, split_seed: int | None = None) -> Arrays:
    """Split off validation (seeded: the config's seed unless `split_seed` is given) and cut
    every review to this config's `seq_len` (cheap, per run; padding happens on first use)."""
    seed = cfg.seed if split_seed is None else split_seed
    confirm = cfg.data.get("confirm_fraction", 0.0)
    train, val = data.validation_split(encoded, cfg.data.val_fraction, seed, confirm)
    reviews = encoded.train.truncate(cfg.data.seq_len, cfg.data.truncating)
    y = np.asarray(encoded.y_train, dtype=np.int32)
    return Arrays(
        reviews.take(train), y[train], reviews.take(val), y[val], cfg.data.seq_len, cfg.data.padding
    )


def confirmation(encoded: data.Encoded, cfg: DictConfig) -> tuple[np.ndarray, np.ndarray]:
    """The confirmation slice (`data.confirm_fraction`), padded to this config's `seq_len`:
    what the confirmation stage scores on, never trained or selected on."""
    _, rows = data.confirmation_split(encoded, cfg.data.confirm_fraction)
    reviews = encoded.train.truncate(cfg.data.seq_len, cfg.data.truncating).take(rows)
    y = np.asarray(encoded.y_train, dtype=np.int32)[rows]
    return data.pad(reviews, cfg.data.seq_len, cfg.data.padding), y


def preprocessing(cfg: DictConfig, encoded: data.Encoded) -> Preprocessing:
    """How this config turns a review into the classifier's input: its served model repeats it."""
    return Preprocessing(
        encoded.vocabulary,
        cfg.data.seq_len,
        cfg.data.padding,
        cfg.data.truncating,
        cfg.data.ngrams,
        cfg.data.ngram_buckets or 0,
    )


def fit(
    model: keras.Model, cfg: DictConfig, xy: Arrays, **fit_kwargs: Any
) -> keras.callbacks.History:
    """`model.fit` with the config's settings; `fit_kwargs` win (tuners set epochs, callbacks).

    `train.batching=bucketed`: `tf.data` batches of similar-length reviews (see `batches`;
    with one bucket, as at seq_len 64 on IMDB, these are the fixed batches).
    `fixed`: the padded NumPy arrays, which Keras feeds through its own prefetched pipeline (a
    hand-built `tf.data` pipeline of the same padded batches was no faster; benchmarks/).
    """
    kwargs: dict[str, Any] = {"epochs": cfg.train.epochs, "verbose": cfg.train.verbose}
    size, seq_len = cfg.train.batch_size, cfg.data.seq_len
    bucketed = cfg.train.batching == "bucketed"
    if bucketed and len(batches.boundaries(seq_len, xy.train.lengths)) > 1:
        kwargs["validation_data"] = batches.bucketed(xy.val, xy.y_val, size, seq_len)
        kwargs["shuffle"] = False  # the dataset reshuffles itself, from the seed
        kwargs.update(fit_kwargs)
        _schedule(cfg, kwargs)
        return model.fit(batches.bucketed(xy.train, xy.y_train, size, seq_len, cfg.seed), **kwargs)
    kwargs.update(batch_size=cfg.train.batch_size, validation_data=(xy.x_val, xy.y_val))
    kwargs.update(fit_kwargs)
    _schedule(cfg, kwargs)
    return model.fit(xy.x_train, xy.y_train, **kwargs)


def _schedule(cfg: DictConfig, kwargs: dict[str, Any]) -> None:
    """Add the config's learning-rate schedule to `model.fit`'s callbacks (none: constant)."""
    if cfg.train.lr_schedule != "constant" or cfg.train.warmup_epochs:
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), EpochSchedule(cfg.train)]


def learning_rate(settings: DictConfig, epoch: float) -> float:
    """`train`'s learning rate `epoch` (fractional: 1.5 is halfway through the second) epochs
    into training: the linear warm-up, then constant or cosine down to 0 at `decay_epochs`."""
    rate = settings.learning_rate
    warmup = settings.warmup_epochs
    if epoch < warmup:
        return rate * epoch / warmup
    if settings.lr_schedule == "constant":
        return rate
    done = min(1.0, (epoch - warmup) / (settings.decay_epochs - warmup))
    return rate * 0.5 * (1.0 + math.cos(math.pi * done))


class EpochSchedule(keras.callbacks.Callback):
    """Sets the optimizer's rate before each batch from `learning_rate` at the fraction of the
    epoch done, so the curve is the same per epoch whatever the number of batches in one."""

    def __init__(self, settings: DictConfig) -> None:
        super().__init__()
        self.settings = settings
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None:
        steps = self.params.get("steps") or math.inf  # unknown: the rate changes per epoch
        rate = learning_rate(self.settings, self.epoch + (batch + 1) / steps)
        self.model.optimizer.learning_rate.assign(rate)


def run(cfg: DictConfig) -> float:
    """Train `cfg` once, log everything to MLflow, and return the best validation accuracy."""
    tracking.configure(cfg.tracking)
    # before the data: a login that may not write to the experiment is refused in one line
    experiment = tracking.use_experiment(cfg.name, cfg.tracking)
    tracking.close_stale_runs(experiment)
    encoded = load(cfg)
    xy = arrays(encoded, cfg)
    keras.utils.set_random_seed(cfg.seed)
    with tracking.tracked_run(
        experiment_id=experiment,
        run_name=f"{cfg.name}-run",
        tags=tracking.standard_tags(cfg, encoded),
    ) as active:
        tracking.log_config(cfg)
        model = build_model(cfg)
        started = time.perf_counter()
        history = fit(model, cfg, xy, callbacks=[EpochMetrics(), StopOnInterrupt()])
        seconds = time.perf_counter() - started
        log_outcome(
            model,
            [history.history],
            seconds,
            xy.x_val,
            preprocessing(cfg, encoded),
            log_model=cfg.tracking.log_models != "none",
            log_figures=cfg.tracking.log_figures,
        )
    best = max(history.history.get("val_accuracy", [float("nan")]))
    log.info("run %s: best val_accuracy %.4f in %.0f s", active.info.run_id, best, seconds)
    return best


def final_evaluation(
    cfg: DictConfig, registered_model: str, source_run_id: str
) -> dict[str, float]:
    """Retrain `cfg` on the whole training split and evaluate it once on the test split.

    The only place the test split is touched (with `ensemble`): model selection never sees it.
    """
    tracking.configure(cfg.tracking)
    tracking.use_experiment(cfg.name, cfg.tracking)
    encoded = load(cfg)
    tags = {
        **tracking.standard_tags(cfg, encoded.fingerprint),
        FINAL_TAG: "true",
        SOURCE_RUN_TAG: source_run_id,
    }
    with tracking.tracked_run(run_name=f"{cfg.name}-final", tags=tags):
        model, test, y_test = retrained(cfg, encoded)
        if cfg.train.batching == "bucketed":
            bucketed = batches.bucketed(test, y_test, cfg.train.batch_size, cfg.data.seq_len)
            loss, accuracy = model.evaluate(bucketed, verbose=0)
        else:
            x_test = data.pad(test, cfg.data.seq_len, cfg.data.padding)
            loss, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
        metrics = {"test_loss": float(loss), "test_accuracy": float(accuracy)}
        log_final(model, metrics, registered_model, preprocessing(cfg, encoded))
    log.info(
        "final model: test_accuracy %.4f (registered as %s)",
        metrics["test_accuracy"],
        registered_model,
    )
    return metrics


def retrained(
    cfg: DictConfig, encoded: data.Encoded
) -> tuple[keras.Model, data.Ragged, np.ndarray]:
    """`cfg`'s model fitted on every training review, in the active run (its config and
    per-epoch metrics logged), with the test reviews cut to its `seq_len` and their labels:
    fit never sees them."""
    seq_len, truncating = cfg.data.seq_len, cfg.data.truncating
    test = encoded.test.truncate(seq_len, truncating)
    y_test = np.asarray(encoded.y_test, dtype=np.int32)
    # all training reviews to fit on; the test reviews sit in the validation slot, unused by fit
    xy = Arrays(
        encoded.train.truncate(seq_len, truncating),
        np.asarray(encoded.y_train, dtype=np.int32),
        test,
        y_test,
        seq_len,
        cfg.data.padding,
    )
    tracking.log_config(cfg)
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg)
    fit(model, cfg, xy, validation_data=None, callbacks=[EpochMetrics()])
    return model, test, y_test


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
