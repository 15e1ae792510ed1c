"""The `model` group: the embedding, the attention layer's knobs, dropout."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweep.errors import ConfigError
from sweep.schema.rules import bounds

#: Scale words the layer understands besides a positive number.
SCALE_WORDS = ("sqrt_dk", "none", "learned", "uniform")


@dataclass
class AttentionConfig:
    # width of Q, K and V
    output_dim: int = field(default=128, metadata=bounds(ge=1))
    # scores are divided by this: a positive number, sqrt_dk, none (1.0), learned, or
    # uniform (infinity: every key weighs 1/n, the control for attention itself)
    scale: Any = 8.0
    # any Keras initializer name or {class_name, config}; the original: uniform in ±0.05
    initializer: Any = field(
        default_factory=lambda: {
            "class_name": "RandomUniform",
            "config": {"minval": -0.05, "maxval": 0.05},
        }
    )


@dataclass
class ModelConfig:
    embedding_dim: int = field(default=128, metadata=bounds(ge=1))
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    # dropout after pooling, before the classifier
    dropout: float = field(default=0.5, metadata=bounds(ge=0.0, lt=1.0))
    # dropout on the embeddings, before attention: token drops a position's whole vector (word
    # dropout; the survivors scaled up), spatial drops whole channels across a review
    token_dropout: float = field(default=0.0, metadata=bounds(ge=0.0, lt=1.0))
    spatial_dropout: float = field(default=0.0, metadata=bounds(ge=0.0, lt=1.0))
    # mask padding so it receives no attention and is left out of the average
    mask_padding: bool = True


def check_scale(key: str, value: Any) -> None:
    """A scale is a positive finite number or one of SCALE_WORDS."""
    if isinstance(value, str):
        if value in SCALE_WORDS:
            return
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(
                key, value, "expected a positive number or one of " + ", ".join(SCALE_WORDS)
            ) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            key, value, "expected a positive number or one of " + ", ".join(SCALE_WORDS)
        )
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(key, value, "must be a positive finite number")


def check_initializer(key: str, value: Any) -> None:
    """Ask Keras itself whether it knows the initializer, so any Keras name or config works."""
    import keras

    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    try:
        keras.initializers.get(value)
    except (ValueError, TypeError, KeyError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(key, value, f"not a Keras initializer ({reason[:120]})") from None
