"""Adam and AdamW that update an embedding table only at the rows a batch used ("lazy" Adam).

Why: Keras's Adam turns an embedding's sparse gradient dense and updates every row of the table
(and its two moment tables) each step, however few rows the batch touched: ~40% of an epoch's
CPU at seq_len 64 for the 2.56M-parameter word table, and a cost that grows with the n-gram
table's size (`data.ngram_buckets`). `train.sparse_updates=true` uses these instead: a row's
moments and weights move only in steps whose batch contains it (as TensorFlow Addons' LazyAdam
did), and weight decay, decoupled, also only shrinks those rows. Dense weights are updated as by
Keras's own Adam. TensorFlow-specific: a sparse gradient is a `tf.IndexedSlices`.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

#: Keras names an embedding's table `embeddings` (and `NgramEmbedding` its n-gram one
#: `ngram_embeddings`): their decay is applied lazily, with their update.
TABLES = "embeddings"


def _rows(variable: keras.Variable | tf.Variable, rows: tf.Tensor) -> tf.Tensor:
    """The rows of a table, gathered from the variable itself: a sparsely updated TensorFlow
    variable copies its whole buffer on every dense read (`ops.take` reads it densely)."""
    return tf.gather(variable.value if isinstance(variable, keras.Variable) else variable, rows)


class _Lazy:
    """The lazy update step, for an Adam-like optimizer with `_momentums` and `_velocities`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exclude_from_weight_decay(var_names=[TABLES])

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        rows, position = tf.unique(gradient.indices)
        values = ops.cast(gradient.values, variable.dtype)
        # per row, as Keras's Adam has it for a sparse gradient: the sum of the occurrences'
        # gradients, and the sum of their squares
        grad = tf.math.unsorted_segment_sum(values, position, tf.size(rows))
        squares = tf.math.unsorted_segment_sum(ops.square(values), position, tf.size(rows))
        lr = ops.cast(learning_rate, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        alpha = lr * ops.sqrt(1 - self.beta_2**step) / (1 - self.beta_1**step)
        index = self._get_variable_index(variable)
        m = _rows(self._momentums[index], rows)
        v = _rows(self._velocities[index], rows)
        m = m + (grad - m) * (1 - self.beta_1)
        v = v + (squares - v) * (1 - self.beta_2)
        self.assign(self._momentums[index], tf.IndexedSlices(m, rows))
        self.assign(self._velocities[index], tf.IndexedSlices(v, rows))
        step_rows = m * alpha / (ops.sqrt(v) + self.epsilon)
        if self.weight_decay:
            step_rows += _rows(variable, rows) * (self.weight_decay * lr)
        self.assign_sub(variable, tf.IndexedSlices(step_rows, rows))
        return None


@keras.saving.register_keras_serializable(package="attention_sweep", name="LazyAdam")
class LazyAdam(_Lazy, keras.optimizers.Adam):
    """Keras's Adam, with embedding tables updated only at the rows a batch used."""


@keras.saving.register_keras_serializable(package="attention_sweep", name="LazyAdamW")
class LazyAdamW(_Lazy, keras.optimizers.AdamW):
    """Keras's AdamW, with embedding tables updated (and decayed) only at the rows a batch used."""


#: `train.optimizer` -> its lazy version, for `train.sparse_updates=true`.
LAZY = {"adam": LazyAdam, "adamw": LazyAdamW}
