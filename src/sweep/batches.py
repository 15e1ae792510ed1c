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

from sweep.data import Ragged

#: The shortest bucket's bound and how much longer each next bucket may be.
FIRST_BOUNDARY, GROWTH = 16, 1.2


def truncate(reviews: Ragged, seq_len: int, truncating: str = "pre") -> Ragged:
    """Each review cut to its last (`pre`) or first (`post`) `seq_len` tokens, unpadded."""
    lengths = reviews.lengths
    kept = np.minimum(lengths, seq_len)
    start = reviews.offsets[:-1] + (lengths - kept if truncating == "pre" else 0)
    offsets = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum(kept, out=offsets[1:])
    gather = np.arange(offsets[-1], dtype=np.int64) + np.repeat(start - offsets[:-1], kept)
    return Ragged(reviews.values[gather], offsets)


def boundaries(seq_len: int) -> list[int]:
    """Bucket bounds (exclusive) up to `seq_len + 1`: at most ~20 shapes even at seq_len 4096."""
    bounds, bound = [], FIRST_BOUNDARY
    while bound <= seq_len:
        bounds.append(bound)
        bound = max(bound + 1, math.ceil(bound * GROWTH))
    return [*bounds, seq_len + 1]


def bucketed(
    reviews: Ragged, labels: np.ndarray, batch_size: int, seq_len: int, seed: int | None = None
) -> tf.data.Dataset:
    """(tokens, label) batches of similar-length reviews, each padded (with 0, at the end) to
    its bucket's bound; reviews must be at most `seq_len` long (see `truncate`).

    With a `seed`, the reviews are shuffled again every epoch, reproducibly; every review is in
    exactly one batch per pass (no batch is dropped). Without one, the order is fixed (for
    validation and test).
    """
    tokens = tf.RaggedTensor.from_row_splits(reviews.values, reviews.offsets, validate=False)
    data = tf.data.Dataset.from_tensor_slices((tokens, np.asarray(labels, dtype=np.int32)))
    # slices of a ragged tensor arrive as 1-row ragged values; a map hands them on as plain
    # tensors, which is what bucketing pads
    data = data.map(lambda x, y: (x, y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if seed is not None:
        data = data.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    bounds = boundaries(seq_len)
    data = data.bucket_by_sequence_length(
        element_length_func=lambda x, _: tf.shape(x)[0],
        bucket_boundaries=bounds,
        bucket_batch_sizes=[batch_size] * (len(bounds) + 1),
        pad_to_bucket_boundary=True,
    )
    # as many batches as the buckets' sizes give: Keras then knows an epoch's length up front
    per_bucket = np.bincount(np.digitize(reviews.lengths, bounds), minlength=len(bounds) + 1)
    steps = int(np.ceil(per_bucket / batch_size).sum())
    data = data.apply(tf.data.experimental.assert_cardinality(steps))
    return data.prefetch(tf.data.AUTOTUNE)
