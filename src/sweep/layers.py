"""Keras layers for the attention sweep.

`SelfAttention` is a single-head scaled dot-product self-attention layer whose
score scaling is a hyperparameter (fixed number, `sqrt(d_k)`, none, or a
learned temperature), so a sweep can compare scaling strategies while keeping
everything else fixed. It is registered for serialization, so models that use
it reload with `keras.saving.load_model` without `custom_objects`.
`NgramEmbedding` embeds a word and the hashed n-grams ending at it into one vector per position
(`data.ngrams` > 1), registered likewise.

This module imports nothing from `sweep`: it ships with every logged model (`sweep.served`),
which loads and predicts where the harness is not installed.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import keras
from keras import ops


def _positive_int(value: Any, name: str = "output_dim") -> int:
    """Returns the argument `name`'s `value` as an `int`, or raises if it is not a positive
    integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a positive integer. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def resolve_scale(scale: float | str, output_dim: int) -> float:
    """Turns a `scale` argument into the number the attention scores are divided by.

    For `"learned"` this is the initial temperature, `sqrt(output_dim)`, so a
    learned scale starts out identical to the standard `"sqrt_dk"` scaling.
    For `"uniform"` it is infinity: every score is 0 and every (unmasked) key
    gets the same weight, `1/n`, so the layer averages the values. It is the
    control a study of the scale needs: does attention beat plain averaging?

    Args:
        scale: A positive finite number, or one of `"sqrt_dk"`, `"none"`,
            `"learned"`, `"uniform"`.
        output_dim: Positive integer, the key/query dimension `d_k`.

    Returns:
        The divisor as a Python float.

    Raises:
        ValueError: If `scale` or `output_dim` is invalid.
    """
    output_dim = _positive_int(output_dim)
    if isinstance(scale, str):
        if scale in ("sqrt_dk", "learned"):
            return math.sqrt(output_dim)
        if scale == "none":
            return 1.0
        if scale == "uniform":
            return math.inf
    elif isinstance(scale, numbers.Real) and not isinstance(scale, bool):
        value = float(scale)
        if math.isfinite(value) and value > 0:
            return value
    raise ValueError(
        "Invalid value for argument `scale`. Expected a positive finite number or "
        f"one of 'sqrt_dk', 'none', 'learned'. Received: scale={scale!r}"
    )


@keras.saving.register_keras_serializable(package="attention_sweep", name="SelfAttention")
class SelfAttention(keras.layers.Layer):
    """Single-head scaled dot-product self-attention.

    Queries, keys and values are linear projections of the same input, held in
    one kernel of shape `(3, input_dim, output_dim)` so the three projections
    share an initializer and serialize as one weight:

    1. `Q = x @ kernel[0]`, `K = x @ kernel[1]`, `V = x @ kernel[2]`.
    2. `scores = Q @ K^T / scale`, shape `(batch_size, seq_len, seq_len)`.
    3. Keys at padded positions (mask `False`) get a large negative bias, so
       they receive zero attention weight.
    4. `weights = softmax(scores)` over the key axis; `output = weights @ V`.

    Args:
        output_dim: Positive integer, dimension of queries, keys, values and
            the output (`d_k`).
        scale: Divisor applied to the raw scores. A positive finite number, or
            one of `"sqrt_dk"` (`sqrt(output_dim)`, the Transformer default),
            `"none"` (`1.0`), or `"learned"` (a trainable temperature that
            starts at `sqrt(output_dim)`; it is stored as its logarithm,
            `log_scale`, so it stays positive during training), or `"uniform"`
            (infinity: every key weighs `1/n`, the values are averaged; the
            control for attention itself). Defaults to `"sqrt_dk"`.
        initializer: Initializer for the Q/K/V kernel: any identifier accepted
            by `keras.initializers.get` (a name, an instance, or a config dict).
            Defaults to `"glorot_uniform"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Float tensor of shape `(batch_size, seq_len, input_dim)`.
        mask: Optional boolean tensor of shape `(batch_size, seq_len)`, `True`
            for real tokens and `False` for padding. Usually propagated from an
            `Embedding(mask_zero=True)` layer.
        return_attention_scores: bool, if `True`, also return the attention
            weights (after masking and softmax).

    Output shape:
        Attention output of shape `(batch_size, seq_len, output_dim)`.
        (Optional) Attention weights of shape `(batch_size, seq_len, seq_len)`.
        The input mask is passed through unchanged, so downstream layers such
        as `GlobalAveragePooling1D` still ignore padded positions.
    """

    def __init__(
        self,
        output_dim: int,
        scale: float | str = "sqrt_dk",
        initializer: Any = "glorot_uniform",
        **kwargs: Any,
    ) -> None:
        # Validate before building anything, so bad sweep configs fail fast.
        output_dim = _positive_int(output_dim)
        resolve_scale(scale, output_dim)
        if initializer is None:
            raise ValueError(
                "Invalid value for argument `initializer`. Expected a Keras initializer "
                f"name, instance or config dict. Received: initializer={initializer!r}"
            )
        try:
            kernel_initializer = keras.initializers.get(initializer)
        except (ValueError, TypeError) as err:
            raise ValueError(
                "Invalid value for argument `initializer`. Expected a Keras initializer "
                f"name, instance or config dict. Received: initializer={initializer!r}"
            ) from err

        super().__init__(**kwargs)
        self.output_dim = output_dim
        # Keep strings as-is and numbers as floats, so get_config round-trips.
        self.scale = scale if isinstance(scale, str) else float(scale)
        self.initializer = kernel_initializer
        self.supports_masking = True
        self.input_spec = keras.layers.InputSpec(min_ndim=3)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "The last dimension of the inputs to `SelfAttention` must be defined. "
                f"Received: input_shape={input_shape}"
            )
        self.input_spec = keras.layers.InputSpec(min_ndim=3, axes={-1: input_dim})
        self.kernel = self.add_weight(
            name="kernel",
            shape=(3, input_dim, self.output_dim),
            initializer=self.initializer,
        )
        self.log_scale = None
        if self.scale == "learned":
            initial = math.log(resolve_scale(self.scale, self.output_dim))
            self.log_scale = self.add_weight(
                name="log_scale",
                shape=(),
                initializer=keras.initializers.Constant(initial),
                trainable=True,
            )
        self.built = True

    def call(self, inputs, mask=None, return_attention_scores: bool = False):
        # Scaling the queries (seq x d) rather than the scores (seq x seq), and masking with
        # one additive bias, keeps every full (seq x seq) pass but the matmul and the softmax
        # out of the step: 12% faster per epoch at seq_len 512 (benchmarks/README.md).
        query = ops.matmul(inputs, self.kernel[0])
        key = ops.matmul(inputs, self.kernel[1])
        value = ops.matmul(inputs, self.kernel[2])
        if self.log_scale is not None:
            query = ops.divide(query, ops.cast(ops.exp(self.log_scale), query.dtype))
        else:
            divisor = resolve_scale(self.scale, self.output_dim)
            if divisor != 1.0:
                query = ops.multiply(query, ops.cast(1.0 / divisor, query.dtype))
        scores = ops.matmul(query, ops.swapaxes(key, -2, -1))

        if mask is not None:
            # Shape (batch, 1, seq): the same key mask applies to every query. Same bias as
            # keras Attention; 65504 is the float16 maximum.
            max_value = 65504.0 if scores.dtype == "float16" else 1.0e9
            padding = 1.0 - ops.cast(mask, scores.dtype)
            scores = ops.add(scores, ops.expand_dims(padding * -max_value, axis=-2))

        weights = ops.softmax(scores, axis=-1)
        output = ops.matmul(weights, value)
        if return_attention_scores:
            return output, weights
        return output

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*input_shape[:-1], self.output_dim)

    def compute_output_spec(self, inputs, mask=None, return_attention_scores: bool = False):
        # Overridden because the default spec ignores `return_attention_scores`.
        output_spec = keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )
        if return_attention_scores:
            scores_shape = (*inputs.shape[:-1], inputs.shape[-2])
            return output_spec, keras.KerasTensor(scores_shape, dtype=self.compute_dtype)
        return output_spec

    def get_config(self) -> dict[str, Any]:
        base_config = super().get_config()
        config = {
            "output_dim": self.output_dim,
            "scale": self.scale,
            "initializer": keras.initializers.serialize(self.initializer),
        }
        return {**base_config, **config}


@keras.saving.register_keras_serializable(package="attention_sweep", name="NgramEmbedding")
class NgramEmbedding(keras.layers.Layer):
    """A word's embedding plus the embeddings of the hashed n-grams ending at it.

    Each position carries its word id and the bucket ids of the 2- to n-grams ending there
    (fastText's hashing trick; 0 where there is no such n-gram yet). The word indexes one
    table, every n-gram order shares a second one of `buckets + 1` rows, and the position's
    vectors are summed: the sequence keeps its length, so attention costs what it did.

    Args:
        input_dim: Positive integer, the word vocabulary size.
        buckets: Positive integer, the number of n-gram hash buckets (ids `1..buckets`).
        output_dim: Positive integer, the embedding width.
        embeddings_initializer: Initializer of both tables (any `keras.initializers.get`
            identifier). Defaults to `"uniform"`, as `keras.layers.Embedding`'s.
        mask_zero: bool, whether word id 0 is padding to be masked.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Int tensor of shape `(batch_size, seq_len, n)`: the word id, then the n-gram
            ids of each position.

    Output shape:
        `(batch_size, seq_len, output_dim)`, with the mask `word id != 0` when `mask_zero`.
    """

    def __init__(
        self,
        input_dim: int,
        buckets: int,
        output_dim: int,
        embeddings_initializer: Any = "uniform",
        mask_zero: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input_dim = _positive_int(input_dim, "input_dim")
        self.buckets = _positive_int(buckets, "buckets")
        self.output_dim = _positive_int(output_dim)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )
        self.ngram_embeddings = self.add_weight(
            name="ngram_embeddings",
            shape=(self.buckets + 1, self.output_dim),
            initializer=self.embeddings_initializer,
        )
        self.built = True

    def call(self, inputs):
        ids = ops.cast(inputs, "int32")
        words = ops.take(self.embeddings, ids[..., 0], axis=0)
        ngrams = ops.take(self.ngram_embeddings, ids[..., 1:], axis=0)
        return ops.add(words, ops.sum(ngrams, axis=-2))

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs[..., 0], 0)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*input_shape[:-1], self.output_dim)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "buckets": self.buckets,
            "output_dim": self.output_dim,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            "mask_zero": self.mask_zero,
        }
