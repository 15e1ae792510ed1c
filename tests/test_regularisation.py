"""Regularisation knobs (issue 25): weight decay, dropout on the embeddings, and a learning-rate
schedule by epoch that export's retrain (the best epoch's count of epochs) follows."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

from sweep.config import compose_config
from sweep.model import build_model
from sweep.train import EpochSchedule, learning_rate

SMALL = ["data.num_words=30", "model.embedding_dim=8", "model.attention.output_dim=8"]


def rates(*overrides: str, epochs: tuple[float, ...]) -> list[float]:
    settings = compose_config([*SMALL, "train.learning_rate=0.01", *overrides]).train
    return [learning_rate(settings, e) for e in epochs]


def test_cosine_falls_from_the_rate_to_zero_at_decay_epochs_after_the_warmup() -> None:
    cosine = rates(
        "train.lr_schedule=cosine",
        "train.warmup_epochs=1",
        "train.decay_epochs=3",
        epochs=(0.5, 1, 2, 3, 4),
    )
    assert cosine == pytest.approx([0.005, 0.01, 0.005, 0.0, 0.0])
    assert rates(epochs=(0, 2.5, 9)) == [0.01, 0.01, 0.01]  # constant, as before


def test_the_exported_retrain_follows_its_trials_curve() -> None:
    """A run logs its config resolved; export retrains that config for the best epoch's count:
    the horizon stays the trial's, so the retrain's epochs get the trial's rates."""
    trial = compose_config([*SMALL, "train.lr_schedule=cosine", "train.epochs=4"])
    retrain = OmegaConf.create(OmegaConf.to_yaml(trial, resolve=True))
    retrain.train.epochs = 1
    for epoch in (0.25, 0.5, 1.0):
        assert learning_rate(retrain.train, epoch) == learning_rate(trial.train, epoch)
    assert learning_rate(retrain.train, 1.0) > 0.5 * trial.train.learning_rate


@pytest.mark.parametrize("steps", [10, 13])
def test_the_rate_follows_the_epoch_not_the_step(steps: int) -> None:
    """Retraining on all training reviews has more batches an epoch than the trial had."""
    cfg = compose_config([*SMALL, "train.lr_schedule=cosine", "train.epochs=4"])
    schedule = EpochSchedule(cfg.train)
    schedule.set_model(build_model(cfg))
    schedule.set_params({"steps": steps})
    schedule.on_epoch_begin(1)
    schedule.on_train_batch_begin(steps - 1)  # the epoch's last batch
    rate = float(schedule.model.optimizer.learning_rate)
    assert rate == pytest.approx(learning_rate(cfg.train, 2.0))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], None),
        (["train.weight_decay=0.01"], 0.01),
        (["train.optimizer=adamw"], 0.004),  # adamw's own default, as before
        (["train.optimizer=adamw", "train.weight_decay=0"], 0.0),
    ],
)
def test_weight_decay_reaches_the_optimizer(overrides: list[str], expected: float | None) -> None:
    optimizer = build_model(compose_config([*SMALL, *overrides])).optimizer
    assert optimizer.weight_decay == expected


def test_embedding_dropouts_are_layers_only_when_asked_for() -> None:
    plain = build_model(compose_config(SMALL))
    names = {layer.name for layer in plain.layers}
    assert not names & {"token_dropout", "spatial_dropout"}
    both = ["model.token_dropout=0.2", "model.spatial_dropout=0.3"]
    model = build_model(compose_config([*SMALL, *both]))
    assert model.get_layer("token_dropout").rate == 0.2
    assert model.get_layer("spatial_dropout").rate == 0.3


@pytest.mark.parametrize(("layer", "axis"), [("token_dropout", 2), ("spatial_dropout", 1)])
def test_embedding_dropout_drops_whole_tokens_or_whole_channels(layer: str, axis: int) -> None:
    """Token dropout zeroes a position's whole vector, spatial a channel across the review."""
    model = build_model(compose_config([*SMALL, f"model.{layer}=0.5"]))
    keras.utils.set_random_seed(0)
    dropped = keras.ops.convert_to_numpy(
        model.get_layer(layer)(np.ones((4, 30, 8), "float32"), training=True)
    )
    zero = dropped == 0
    assert zero.any() and not zero.all()
    assert np.array_equal(zero.all(axis=axis), zero.any(axis=axis))  # all or nothing
    assert np.allclose(dropped[~zero], 2.0)  # survivors scaled by 1 / (1 - rate)
