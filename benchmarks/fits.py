"""The fits the sections compare: plain Keras on NumPy arrays (the yardstick) and the harness's
own training path, each from the config's seed so every kind starts from the same weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks.measure import Measured, Timing, measure

if TYPE_CHECKING:
    import keras
    from omegaconf import DictConfig

    from sweep.train import Arrays


def numpy_fit(model: keras.Model, cfg: DictConfig, xy: Arrays) -> Measured[keras.callbacks.History]:
    """`model.fit` on the padded NumPy arrays, no callbacks: its history, wall and CPU seconds."""
    return measure(
        lambda: model.fit(
            xy.x_train,
            xy.y_train,
            batch_size=cfg.train.batch_size,
            epochs=cfg.train.epochs,
            verbose=0,
            validation_data=(xy.x_val, xy.y_val),
        )
    )


def bare_fit(cfg: DictConfig, xy: Arrays) -> Timing:
    """Plain Keras: the config's model fitted on the NumPy arrays, no callbacks, nothing logged;
    its best validation accuracy."""
    import keras

    from sweep.model import build_model

    keras.utils.set_random_seed(cfg.seed)
    fitted = numpy_fit(build_model(cfg), cfg, xy)
    return Timing(fitted.wall_s, fitted.cpu_s, max(fitted.result.history["val_accuracy"]))


def harness_fit(cfg: DictConfig, xy: Arrays, jit: bool = False) -> Timing:
    """The harness's training path (`train.fit`: its model, its batching, its callbacks), no
    MLflow; validation accuracy after the last epoch. `jit`: XLA-compiled (`--xla`)."""
    import keras

    from sweep import train
    from sweep.model import build_model

    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg)
    if jit:
        model.jit_compile = True
    fitted = measure(
        lambda: train.fit(model, cfg, xy, verbose=0, callbacks=[train.StopOnInterrupt()])
    )
    return Timing(fitted.wall_s, fitted.cpu_s, fitted.result.history["val_accuracy"][-1])
