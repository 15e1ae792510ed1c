"""The `data` group: where reviews come from and how they become token ids."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from sweep.data import MAX_NGRAMS, SOURCES, VAL_SPLITS
from sweep.errors import ConfigError
from sweep.schema.rules import bounds

#: Longest sequence a run may ask for: attention is quadratic in it, so beyond this is a typo.
MAX_SEQ_LEN = 4096
#: N-gram hash buckets when `data.ngrams` > 1 names none (measured: docs/user-guide.md#n-grams).
NGRAM_BUCKETS = 1 << 18


@dataclass
class DataConfig:
    # where reviews come from: auto (path if given, else keras.datasets.imdb), files, keras
    source: str = field(default="auto", metadata=bounds(choices=SOURCES))
    # the aclImdb .tar.gz or an extracted aclImdb/ directory
    path: str | None = None
    # vocabulary size including the 3 reserved indices (0 pad, 1 start, 2 out-of-vocabulary)
    num_words: int = field(default=20000, metadata=bounds(ge=4))
    # n > 1: each word also carries the hashed ids of the 2- to n-grams of words ending at it,
    # embedded in their own table and added to the word's vector (the sequence keeps its length)
    ngrams: int = field(default=1, metadata=bounds(ge=1, le=MAX_NGRAMS))
    # rows of that n-gram table (fastText's hashing trick; every order shares them): its size
    # against collisions (docs/user-guide.md#n-grams) and step time, which grows with it unless
    # train.sparse_updates. Only with ngrams > 1; default NGRAM_BUCKETS (262144) then
    ngram_buckets: int | None = field(
        default="${ngram_buckets_for:${data.ngrams}}",  # type: ignore[assignment]
        metadata=bounds(ge=1),
    )
    # tokens per review after padding/truncation (a hyperparameter: re-padded from the cache)
    seq_len: int = field(default=64, metadata=bounds(ge=1, le=MAX_SEQ_LEN))
    # share of the training split held out for validation (model selection)
    val_fraction: float = field(default=0.2, metadata=bounds(gt=0.0, lt=1.0))
    # movie: each movie wholly in training or validation (needs the archive's movie links);
    # random: a stratified random split; auto: movie where the links exist, else random
    val_split: str = field(default="auto", metadata=bounds(choices=VAL_SPLITS))
    # false: every seed of a configuration validates on the config's split (seed); true: each
    # seed (execution, repeat) also redraws the movie-disjoint validation split, so split noise
    # is measured, and, each seed's split shared by every trial, cancels in comparisons
    split_per_seed: bool = False
    # share of the training split set aside (whole movies, drawn once) as the confirmation
    # slice: no trial trains or validates on it; only `search.confirm` scores on it (0: none)
    confirm_fraction: float = field(default=0.0, metadata=bounds(ge=0.0, lt=1.0))
    # stratified slice of N reviews per split, for smoke runs and tests
    limit: int | None = field(default=None, metadata=bounds(ge=2))
    padding: str = field(default="pre", metadata=bounds(choices=("pre", "post")))
    truncating: str = field(default="pre", metadata=bounds(choices=("pre", "post")))
    # tokenised, unpadded reviews are cached here, keyed by a fingerprint of source and settings
    cache_dir: str = ".cache/data"


def ngram_buckets_for(ngrams: int) -> int | None:
    """`data.ngram_buckets`' default: NGRAM_BUCKETS with n-grams, none without."""
    return NGRAM_BUCKETS if ngrams > 1 else None


# at import, so that any config read back from YAML (exports, a worker's) resolves it too
OmegaConf.register_new_resolver("ngram_buckets_for", ngram_buckets_for, replace=True)


def check_data(data: DictConfig) -> None:
    """Settings that are fine alone but not together (`data.*` only)."""
    if data.confirm_fraction + data.val_fraction >= 1.0:
        raise ConfigError(
            "data.confirm_fraction",
            data.confirm_fraction,
            f"with data.val_fraction={data.val_fraction} it leaves nothing to train on",
        )
    if data.ngrams == 1 and data.ngram_buckets is not None:
        raise ConfigError(
            "data.ngram_buckets", data.ngram_buckets, "needs data.ngrams=2 or 3 (no n-grams at 1)"
        )
    if data.source == "files" and not data.path:
        raise ConfigError("data.path", data.path, "data.source=files needs a path")
    if data.val_split == "movie" and (data.source == "keras" or not data.path):
        raise ConfigError(
            "data.val_split",
            "movie",
            "keras.datasets.imdb has no movie links: give data.path=... (the aclImdb archive "
            "has them) or use data.val_split=random",
        )
