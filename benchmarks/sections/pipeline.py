"""The input pipeline: NumPy arrays into `model.fit` (what `train.fit` does with fixed batches)
against the hand-built `tf.data` pipeline it was measured against and kept out; re-measured on
every run, since the answer could change with TensorFlow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmarks.fits import bare_fit
from benchmarks.measure import Timing, measure, median, paired
from benchmarks.settings import Bench

if TYPE_CHECKING:
    import keras
    import tensorflow as tf
    from omegaconf import DictConfig

    from sweep.train import Arrays


def batches(cfg: DictConfig, x: Any, y: Any, shuffle: bool) -> tf.data.Dataset:
    """Batched and prefetched; shuffled with the seed, anew each epoch, where `shuffle`."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        data = data.shuffle(len(x), seed=cfg.seed, reshuffle_each_iteration=True)
    return data.batch(cfg.train.batch_size).prefetch(tf.data.AUTOTUNE)


def tfdata_fit(model: keras.Model, cfg: DictConfig, xy: Arrays) -> keras.callbacks.History:
    """`model.fit` on the hand-built pipeline, no callbacks."""
    return model.fit(
        batches(cfg, xy.x_train, xy.y_train, True),
        epochs=cfg.train.epochs,
        verbose=0,
        validation_data=batches(cfg, xy.x_val, xy.y_val, False),
        shuffle=False,
    )


def tfdata(cfg: DictConfig, xy: Arrays) -> Timing:
    """The config's model, from its seed, fitted through `tf.data`; its best val accuracy."""
    import keras

    from sweep.model import build_model

    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg)
    fitted = measure(lambda: tfdata_fit(model, cfg, xy))
    return Timing(fitted.wall_s, fitted.cpu_s, max(fitted.result.history["val_accuracy"]))


def run(b: Bench) -> dict[str, Any]:
    """NumPy arrays into `model.fit` vs a hand-built `tf.data` pipeline, paired."""
    from sweep import train
    from sweep.config import compose_config

    extra = [f"train.epochs={b.pipeline_epochs}"]
    if b.limit:
        extra.append(f"data.limit={b.limit}")
    cfg = compose_config(b.overrides(*extra))
    xy = train.arrays(train.load(cfg), cfg)
    measured = paired(
        {"numpy": lambda: bare_fit(cfg, xy), "tfdata": lambda: tfdata(cfg, xy)},
        b.pipeline_repeats,
        "pipeline",
    )
    ratio = measured.ratio("tfdata", "numpy")
    return {
        "epochs": cfg.train.epochs,
        "repeats": b.pipeline_repeats,
        "tfdata_ratio": ratio,
        "tfdata_ratio_cpu": measured.ratio("tfdata", "numpy", "cpu_s"),
        "numpy_s_per_epoch": median(measured.series("numpy")) / cfg.train.epochs,
        "tfdata_s_per_epoch": median(measured.series("tfdata")) / cfg.train.epochs,
        "kept": "numpy" if ratio >= 1 else "tfdata",
        **measured.to_json(),
    }


def rows(p: dict[str, Any]) -> list[str]:
    """The pipeline line of the README's results table."""
    return [
        f"| Input pipeline: hand-built `tf.data` (shuffle, batch, prefetch) / NumPy arrays into "
        f"`model.fit`, {p['epochs']} epochs, median of {p['repeats']} pairs "
        f"| {p['tfdata_ratio']:.3f} wall, {p['tfdata_ratio_cpu']:.3f} CPU "
        f"({p['tfdata_s_per_epoch']:.2f} vs {p['numpy_s_per_epoch']:.2f} s/epoch) "
        f"| < 1 to adopt | `train.fit` uses **{p['kept']}** |",
    ]
