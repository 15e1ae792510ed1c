"""Length-bucketed batches: every review once per epoch, reproducible, few shapes, and a
prediction that does not depend on how much padding a review's batch has."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from sweep import batches, data
from sweep.config import compose_config
from sweep.model import build_model

BATCH = 8


def reviews(n: int = 203, seed: int = 0, longest: int = 120) -> data.Ragged:
    rng = np.random.default_rng(seed)
    return data.Ragged.from_sequences(
        [rng.integers(3, 50, rng.integers(1, longest)) for _ in range(n)]
    )


def epochs(dataset: tf.data.Dataset, count: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    return [[(x.numpy(), y.numpy()) for x, y in dataset] for _ in range(count)]


def test_every_review_is_in_exactly_one_batch_per_epoch() -> None:
    ragged = reviews()
    ids = np.arange(len(ragged))  # labels double as review ids
    keras.utils.set_random_seed(1)
    seen = epochs(batches.bucketed(ragged, ids, BATCH, seq_len=120, seed=1), 2)
    for epoch in seen:
        order = np.concatenate([y for _, y in epoch])
        assert sorted(order.tolist()) == ids.tolist()
        for x, y in epoch:  # each row is its review, padded at the end with zeros
            for row, i in zip(x, y, strict=True):
                n = len(ragged[i])
                assert row[:n].tolist() == ragged[i].tolist() and not row[n:].any()
    first, second = (np.concatenate([y for _, y in e]) for e in seen)
    assert first.tolist() != second.tolist(), "reshuffled every epoch"


def test_the_same_seed_gives_the_same_batches() -> None:
    ragged, ids = reviews(), np.arange(203)

    def batches_for(seed: int) -> list[list[int]]:
        keras.utils.set_random_seed(seed)
        dataset = batches.bucketed(ragged, ids, BATCH, seq_len=120, seed=seed)
        return [y.tolist() for epoch in epochs(dataset, 2) for _, y in epoch]

    assert batches_for(3) == batches_for(3)
    assert batches_for(3) != batches_for(4)


def test_batch_shapes_are_bounded_by_the_buckets_and_padding_is_small() -> None:
    ragged = reviews(n=600, longest=256).truncate(256)
    dataset = batches.bucketed(ragged, np.zeros(600), BATCH, seq_len=256, seed=0)
    widths = [x.shape[1] for x, _ in epochs(dataset, 1)[0]]
    bounds = batches.boundaries(256, ragged.lengths)
    assert len(bounds) <= 20 and bounds[-1] == 257
    assert set(widths) <= {b - 1 for b in bounds}
    padded = sum(w * BATCH for w in widths)  # an upper bound: last batches may be smaller
    assert ragged.lengths.sum() / padded > 0.75
    assert ragged.lengths.sum() / (256 * 600) < 0.55  # what fixed padding keeps


@pytest.mark.parametrize("truncating", ["pre", "post"])
def test_truncate_keeps_the_last_or_first_tokens(truncating: str) -> None:
    ragged = reviews()
    cut = ragged.truncate(40, truncating)
    assert cut.lengths.max() == 40
    for whole, kept in zip(ragged, cut, strict=True):
        expected = whole[-40:] if truncating == "pre" else whole[:40]
        assert kept.tolist() == expected.tolist()


def test_a_prediction_does_not_depend_on_its_padding(tmp_path: Path) -> None:
    cfg = compose_config(
        ["data.num_words=64", "data.seq_len=50", "model.attention.output_dim=8", "seed=5"]
    )
    assert cfg.train.batching == "bucketed"
    keras.utils.set_random_seed(5)
    model = build_model(cfg)
    review = np.arange(3, 23, dtype=np.int32)
    short = np.zeros((1, 20), np.int32)
    short[0] = review
    long_post = np.zeros((1, 50), np.int32)
    long_post[0, :20] = review
    long_pre = np.zeros((1, 50), np.int32)
    long_pre[0, 30:] = review
    predictions = [model.predict(x, verbose=0) for x in (short, long_post, long_pre)]
    np.testing.assert_allclose(predictions[1], predictions[0], atol=1e-5)
    np.testing.assert_allclose(predictions[2], predictions[0], atol=1e-5)


def test_reviews_that_fill_seq_len_make_one_bucket() -> None:
    assert batches.boundaries(64, np.full(10, 64)) == [65]  # nothing to save: one shape
    assert len(batches.boundaries(64, np.full(10, 20))) > 1
