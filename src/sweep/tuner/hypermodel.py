"""The hypermodel: one trial's values in, the classifier built and fitted; no MLflow here."""

from __future__ import annotations

import copy
import math
from typing import Any

import keras
import keras_tuner
from keras_tuner.errors import FailedTrialError
from omegaconf import DictConfig

from sweep import data, space, train
from sweep.errors import ConfigError
from sweep.model import build_model


def searched_values(hp: keras_tuner.HyperParameters) -> dict[str, Any]:
    """A trial's values for the space's keys, without Keras Tuner's own (`tuner/epochs`...)."""
    return {k: v for k, v in hp.values.items() if not k.startswith("tuner/")}


def _encoding(cfg: DictConfig) -> tuple[int, int, int | None]:
    """The data settings that make a different encoding (a trial may change each)."""
    return cfg.data.num_words, cfg.data.ngrams, cfg.data.ngram_buckets


class AttentionHyperModel(keras_tuner.HyperModel):
    """Builds and fits the classifier for one trial's values; knows nothing of MLflow."""

    def __init__(self, cfg: DictConfig, encoded: data.Encoded, searched: space.SearchSpace) -> None:
        super().__init__(name="attention_classifier")
        self.cfg, self.encoded, self.searched = cfg, encoded, searched
        self._encoded = {_encoding(cfg): encoded}
        self._arrays: dict[tuple[Any, ...], train.Arrays] = {}
        # Keras Tuner builds and fits each execution of a trial with the trial's one `hp`: the
        # k-th execution of a trial trains with seed + k, so executions measure seed noise
        self._hp: keras_tuner.HyperParameters | None = None
        self._execution = 0
        self._config: tuple[str, DictConfig] | None = None  # the last values' config

    def trial_config(self, hp: keras_tuner.HyperParameters) -> DictConfig:
        """The config of a trial's values, a copy of its own (`fit` writes the execution's seed
        in it): built once per trial, not for each of its builds, fits and logs (a build is
        ~0.07 s of CPU: two structured merges)."""
        values = searched_values(hp)
        key = repr(sorted(values.items()))
        if self._config is None or self._config[0] != key:
            try:
                self._config = key, self.searched.apply(values)
            except ConfigError as err:
                raise FailedTrialError(f"invalid combination: {err}") from None
        return copy.deepcopy(self._config[1])

    def encoded_for(self, cfg: DictConfig) -> data.Encoded:
        """The reviews tokenised for this trial's vocabulary and n-grams (`data.num_words`,
        `data.ngrams`, `data.ngram_buckets` are searchable): each encoding read once per
        sweep, from the cache after its first sweep."""
        key = _encoding(cfg)
        if key not in self._encoded:
            self._encoded[key] = train.load(cfg)
        return self._encoded[key]

    def arrays(self, cfg: DictConfig, seed: int | None = None) -> train.Arrays:
        """The reviews cut for `cfg`, its validation split drawn by the config's seed, or by
        `seed` (an execution's or a repeat's) with `data.split_per_seed`: cut once per
        vocabulary, sequence length and split per sweep; cheap, re-tokenising never."""
        split = int(cfg.seed)
        if seed is not None and cfg.data.get("split_per_seed", False):
            split = seed
        key = (*_encoding(cfg), cfg.data.seq_len, cfg.data.padding, cfg.data.truncating, split)
        if key not in self._arrays:
            self._arrays[key] = train.arrays(self.encoded_for(cfg), cfg, split)
        return self._arrays[key]

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        if hp is self._hp:
            self._execution += 1
        else:
            self._hp, self._execution = hp, 0
        cfg = self.trial_config(hp)
        keras.utils.set_random_seed(self.seed(cfg))
        return build_model(cfg)

    def seed(self, cfg: DictConfig) -> int:
        """This execution's seed for weights and batch order (the validation split keeps the
        config's unless `data.split_per_seed`): the first execution's is the config's own, so a
        one-execution trial trains exactly as a single run would."""
        return int(cfg.seed) + self._execution

    def fit(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any
    ) -> keras.callbacks.History:
        cfg = self.trial_config(hp)
        seed = self.seed(cfg)
        xy = self.arrays(cfg, seed)
        cfg.seed = seed  # weights and batch order (the split too, with data.split_per_seed)
        history = train.fit(model, cfg, xy, **kwargs)
        losses = history.history.get("loss", [])
        if any(not math.isfinite(v) for v in losses):
            epoch = next(i for i, v in enumerate(losses) if not math.isfinite(v)) + 1
            raise FailedTrialError(f"loss became NaN at epoch {epoch}")
        return history
