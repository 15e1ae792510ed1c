"""The `train` group: the optimiser, batches and epochs of one trial."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import OmegaConf

from sweep.schema.rules import bounds

#: How reviews are batched: by length (needs masked padding) or padded to seq_len.
BATCHING = ("bucketed", "fixed")


@dataclass
class TrainConfig:
    optimizer: str = field(
        default="adam", metadata=bounds(choices=("adam", "adamw", "sgd", "rmsprop", "nadam"))
    )
    learning_rate: float = field(default=2e-4, metadata=bounds(gt=0.0))
    batch_size: int = field(default=32, metadata=bounds(ge=1))
    epochs: int = field(default=5, metadata=bounds(ge=1))
    # Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch
    verbose: int = field(default=2, metadata=bounds(ge=0, le=2))
    # bucketed: batches of similar-length reviews, padded to their bucket (needs mask_padding);
    # fixed: every batch padded to data.seq_len. Default: bucketed whenever padding is masked.
    batching: str = field(
        default="${batching_for:${model.mask_padding}}", metadata=bounds(choices=BATCHING)
    )


def batching_for(mask_padding: bool) -> str:
    """`train.batching`'s default: length buckets need masked padding, so only then."""
    return BATCHING[0] if mask_padding else BATCHING[1]


# at import, so that any config read back from YAML (exports, a worker's) resolves it too
OmegaConf.register_new_resolver("batching_for", batching_for, replace=True)
