"""The `train` group: the optimiser, batches and epochs of one trial."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from sweep.errors import ConfigError
from sweep.schema.rules import bounds

#: How reviews are batched: by length (needs masked padding) or padded to seq_len.
BATCHING = ("bucketed", "fixed")
#: The optimizers `train.sparse_updates` has a lazy version of (`sweep.optimizers`).
LAZY_OPTIMIZERS = ("adam", "adamw")
#: The learning rate's course over the epochs (after any warm-up).
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    optimizer: str = field(
        default="adam", metadata=bounds(choices=("adam", "adamw", "sgd", "rmsprop", "nadam"))
    )
    learning_rate: float = field(default=2e-4, metadata=bounds(gt=0.0))
    # decoupled weight decay: each step every weight shrinks by learning rate x this;
    # null: the optimizer's own default (adamw 0.004, the others none)
    weight_decay: float | None = field(default=None, metadata=bounds(ge=0.0))
    # adam/adamw only: update an embedding table only at the rows a batch used (lazy Adam;
    # src/sweep/optimizers.py), not every row every step: what makes a large n-gram table cheap.
    # Default: on for n-gram models (data.ngrams > 1) trained with adam or adamw
    sparse_updates: bool = field(
        default="${sparse_updates_for:${data.ngrams},${train.optimizer}}"  # type: ignore[assignment]
    )
    # the rate as a function of the (fractional) epoch, not the step, so export's retrain (the
    # best epoch's count of epochs, on all training reviews) follows its trial's curve:
    # constant, or cosine from learning_rate down to 0 at decay_epochs
    lr_schedule: str = field(default="constant", metadata=bounds(choices=LR_SCHEDULES))
    # epochs over which the rate first rises linearly from 0 (either schedule)
    warmup_epochs: float = field(default=0.0, metadata=bounds(ge=0.0))
    # where cosine reaches 0: train.epochs unless set (logged resolved, so a retrain for fewer
    # epochs keeps the trial's horizon)
    decay_epochs: float = field(
        default="${train.epochs}",  # type: ignore[assignment]
        metadata=bounds(gt=0.0),
    )
    batch_size: int = field(default=32, metadata=bounds(ge=1))
    epochs: int = field(default=5, metadata=bounds(ge=1))
    # Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch
    verbose: int = field(default=2, metadata=bounds(ge=0, le=2))
    # bucketed: batches of similar-length reviews, padded to their bucket (needs mask_padding);
    # fixed: every batch padded to data.seq_len. Default: bucketed whenever padding is masked.
    batching: str = field(
        default="${batching_for:${model.mask_padding}}", metadata=bounds(choices=BATCHING)
    )


def check_train(train: DictConfig) -> None:
    """Settings that are fine alone but not together (`train.*` only)."""
    if train.sparse_updates and train.optimizer not in LAZY_OPTIMIZERS:
        raise ConfigError(
            "train.sparse_updates",
            True,
            f"needs train.optimizer={' or '.join(LAZY_OPTIMIZERS)} (not {train.optimizer})",
        )
    if train.lr_schedule == "cosine" and train.warmup_epochs >= train.decay_epochs:
        raise ConfigError(
            "train.warmup_epochs",
            train.warmup_epochs,
            f"must be less than train.decay_epochs={train.decay_epochs} (cosine decays after it)",
        )


def sparse_updates_for(ngrams: int, optimizer: str) -> bool:
    """`train.sparse_updates`' default: lazy updates for n-gram models, where Adam has them."""
    return ngrams > 1 and optimizer in LAZY_OPTIMIZERS


def batching_for(mask_padding: bool) -> str:
    """`train.batching`'s default: length buckets need masked padding, so only then."""
    return BATCHING[0] if mask_padding else BATCHING[1]


# at import, so that any config read back from YAML (exports, a worker's) resolves them too
OmegaConf.register_new_resolver("batching_for", batching_for, replace=True)
OmegaConf.register_new_resolver("sparse_updates_for", sparse_updates_for, replace=True)
