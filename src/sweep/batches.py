"""Length-bucketed batches: a batch costs what its reviews cost, not what `seq_len` costs.

IMDB reviews vary from a dozen to a few thousand words; padding every batch to `data.seq_len`
spends most of a long-sequence step on padding (56% of the tokens at seq_len 512, and attention
is quadratic in the padded length). `tf.data`'s own `bucket_by_sequence_length` groups reviews
of similar length, so each batch is padded only to its bucket's upper bound. The buckets grow
geometrically (each at most ~20% longer than the last), which bounds both the padding a review
can get and the number of distinct batch shapes the training graph sees.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from sweep.data import Ragged, pad

#: The shortest bucket's bound and how much longer each next bucket may be.
FIRST_BOUNDARY, GROWTH = 16, 1.2
#: Share of `seq_len` the reviews fill on average above which one bucket is kept.
FILLED = 0.9


def boundaries(seq_len: int, lengths: np.ndarray) -> list[int]:
    """Bucket bounds (exclusive) up to `seq_len + 1`: at most ~20 shapes even at seq_len 4096.

    One bucket when the reviews fill `seq_len` nearly anyway (FILLED, e.g. seq_len 64 on IMDB):
    there is no padding to save, and the fixed batches' pipeline is the cheaper one.
    """
    if lengths.size and np.minimum(lengths, seq_len).mean() >= FILLED * seq_len:
        return [seq_len + 1]
    bounds, bound = [], FIRST_BOUNDARY
    while bound <= seq_len:
        bounds.append(bound)
        bound = max(bound + 1, math.ceil(bound * GROWTH))
    return [*bounds, seq_len + 1]


def bucketed(
    reviews: Ragged, labels: np.ndarray, batch_size: int, seq_len: int, seed: int | None = None
) -> tf.data.Dataset:
    """(tokens, label) batches of similar-length reviews, each padded (with 0, at the end) to
    its bucket's bound; reviews must be at most `seq_len` long (see `Ragged.truncate`).

    With a `seed`, the reviews are shuffled again every epoch, reproducibly; every review is in
    exactly one batch per pass (no batch is dropped). Without one, the order is fixed and the
    batches are cached after the first pass (validation, test).
    """
    lengths = reviews.lengths.astype(np.int32)
    bounds = boundaries(seq_len, lengths)
    # rows travel padded to seq_len and each batch is cut to its bucket's width: bucketing then
    # only groups rows, which costs half of padding each review on its own
    rows = pad(reviews, seq_len, padding="post")
    data = tf.data.Dataset.from_tensor_slices((rows, lengths, np.asarray(labels, np.int32)))
    if seed is not None:
        data = data.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    data = data.bucket_by_sequence_length(
        element_length_func=lambda x, n, y: n,
        bucket_boundaries=bounds,
        bucket_batch_sizes=[batch_size] * (len(bounds) + 1),
    )
    upper = tf.constant(bounds, tf.int32)

    def cut(x: tf.Tensor, n: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        bucket = tf.searchsorted(upper, tf.reduce_max(n)[None], side="right")[0]
        return x[:, : upper[bucket] - 1], y

    data = data.map(cut, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # as many batches as the buckets' sizes give: Keras then knows an epoch's length up front
    per_bucket = np.bincount(np.digitize(lengths, bounds), minlength=len(bounds) + 1)
    data = data.apply(
        tf.data.experimental.assert_cardinality(int(np.ceil(per_bucket / batch_size).sum()))
    )
    if seed is None:
        data = data.cache()
    return data.prefetch(tf.data.AUTOTUNE)
