"""The classifier under study, built from config, and the attention it pays."""

from __future__ import annotations

import keras
import numpy as np
from omegaconf import DictConfig, OmegaConf

from sweep.layers import NgramEmbedding, SelfAttention
from sweep.optimizers import LAZY
from sweep.schema import SCALE_WORDS

#: Layer names the diagnostics look up.
EMBEDDING, ATTENTION = "embedding", "self_attention"


def build_model(cfg: DictConfig) -> keras.Model:
    """Embedding → SelfAttention → GlobalAveragePooling1D → Dropout → Dense(2), compiled
    (with `model.token_dropout` / `spatial_dropout`, their dropout after the embedding)."""
    att = cfg.model.attention
    scale = att.scale if att.scale in SCALE_WORDS else float(att.scale)
    initializer = att.initializer
    if isinstance(initializer, DictConfig):
        initializer = OmegaConf.to_container(initializer, resolve=True)
    # bucketed batches are as long as their reviews; fixed ones exactly `seq_len`
    length = None if cfg.train.batching == "bucketed" else cfg.data.seq_len
    x = inputs = keras.Input(shape=_input_shape(cfg, length), dtype="int32", name="tokens")
    x = _embedding(cfg)(x)
    if cfg.model.token_dropout:
        x = keras.layers.Dropout(
            cfg.model.token_dropout, noise_shape=(None, None, 1), name="token_dropout"
        )(x)
    if cfg.model.spatial_dropout:
        x = keras.layers.SpatialDropout1D(cfg.model.spatial_dropout, name="spatial_dropout")(x)
    x = SelfAttention(att.output_dim, scale=scale, initializer=initializer, name=ATTENTION)(x)
    x = keras.layers.GlobalAveragePooling1D(name="pooling")(x)
    x = keras.layers.Dropout(cfg.model.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs, name="attention_classifier")
    loss = "sparse_categorical_crossentropy"
    model.compile(optimizer=_optimizer(cfg.train), loss=loss, metrics=["accuracy"])
    return model


def _optimizer(train: DictConfig) -> keras.optimizers.Optimizer:
    """`train.optimizer` with its rate and weight decay; the lazy version for sparse updates."""
    # a fixed name keeps the logged optimizer params identical between re-runs
    settings = {"learning_rate": train.learning_rate, "name": train.optimizer}
    if train.weight_decay is not None:
        settings["weight_decay"] = train.weight_decay
    if train.sparse_updates:
        return LAZY[train.optimizer](**settings)
    return keras.optimizers.get({"class_name": train.optimizer, "config": settings})


def _input_shape(cfg: DictConfig, length: int | None) -> tuple[int | None, ...]:
    """(length,) of word ids, or (length, n): each word's id and its n-gram ids."""
    return (length,) if cfg.data.ngrams == 1 else (length, cfg.data.ngrams)


def _embedding(cfg: DictConfig) -> keras.layers.Layer:
    """Words, or words with their hashed n-grams added (`data.ngrams` > 1)."""
    if cfg.data.ngrams == 1:
        return keras.layers.Embedding(
            cfg.data.num_words,
            cfg.model.embedding_dim,
            mask_zero=cfg.model.mask_padding,
            name=EMBEDDING,
        )
    return NgramEmbedding(
        cfg.data.num_words,
        cfg.data.ngram_buckets,
        cfg.model.embedding_dim,
        mask_zero=cfg.model.mask_padding,
        name=EMBEDDING,
    )


def word_ids(tokens: np.ndarray) -> np.ndarray:
    """The word ids of a model's input (batch, seq), without n-gram ids if it carries them."""
    return tokens[..., 0] if tokens.ndim == 3 else tokens


def attention_weights(model: keras.Model, tokens: np.ndarray) -> np.ndarray:
    """The attention matrix (batch, seq, seq) the trained layer puts on `tokens`."""
    embedding = model.get_layer(EMBEDDING)
    embedded = embedding(tokens)
    mask = embedding.compute_mask(tokens)
    _, weights = model.get_layer(ATTENTION)(embedded, mask=mask, return_attention_scores=True)
    return keras.ops.convert_to_numpy(weights)


def attention_stats(weights: np.ndarray, tokens: np.ndarray) -> dict[str, float]:
    """How peaked the softmax is: the scale constant's effect, made visible.

    `attention_entropy` is the mean entropy of a real token's attention row divided by the
    entropy of a uniform row over the real tokens (1 = uniform, 0 = one-hot);
    `attention_saturation` is the mean largest weight of a row (1 = a saturated softmax).
    """
    real = tokens != 0
    counts = real.sum(axis=1)
    entropies, peaks = [], []
    for w, r, n in zip(weights, real, counts, strict=True):
        if n < 2:
            continue
        rows = w[r][:, r]
        h = -(rows * np.log(np.clip(rows, 1e-12, 1.0))).sum(axis=1)
        entropies.append(float(h.mean() / np.log(n)))
        peaks.append(float(rows.max(axis=1).mean()))
    if not entropies:
        return {}
    return {
        "attention_entropy": float(np.mean(entropies)),
        "attention_saturation": float(np.mean(peaks)),
    }
