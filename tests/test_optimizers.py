"""`train.sparse_updates` (issue 25): Adam and AdamW that update an embedding table only at the
rows a batch used, and otherwise as Keras's own."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from sweep.config import compose_config
from sweep.model import build_model
from sweep.optimizers import LAZY, LazyAdam, LazyAdamW
from sweep.schema.train import LAZY_OPTIMIZERS

BATCHES = ([1, 2, 2], [2, 3, 3])  # row 2 twice in a batch; row 1 only in the first
UNUSED = [0, 4, 5, 6, 7, 8, 9]


def steps(optimizer: keras.optimizers.Optimizer) -> tuple[list[np.ndarray], np.ndarray]:
    """An embedding table after each batch's sparse gradient (and a dense weight beside it,
    after the last), as `optimizer` applies them."""
    rng = np.random.default_rng(0)
    table = keras.Variable(rng.normal(size=(10, 4)).astype("float32"), name="embeddings")
    kernel = keras.Variable(rng.normal(size=(4, 2)).astype("float32"), name="kernel")
    tables = [table.numpy()]
    for rows in BATCHES:
        values = tf.constant(rng.normal(size=(len(rows), 4)).astype("float32"))
        sparse = tf.IndexedSlices(values, tf.constant(rows), tf.constant([10, 4]))
        dense = tf.constant(rng.normal(size=(4, 2)).astype("float32"))
        optimizer.apply([sparse, dense], [table, kernel])
        tables.append(table.numpy())
    return tables, kernel.numpy()


def test_rows_a_batch_used_move_as_under_keras_adam_and_no_other_row_moves() -> None:
    dense, dense_kernel = steps(keras.optimizers.Adam(0.1))
    lazy, lazy_kernel = steps(LazyAdam(0.1))
    np.testing.assert_allclose(lazy[1], dense[1], atol=1e-6)  # the first step: the same
    np.testing.assert_allclose(lazy[2][2:4], dense[2][2:4], atol=1e-6)  # the rows used
    assert np.array_equal(lazy[2][[0, 1, *UNUSED[1:]]], lazy[1][[0, 1, *UNUSED[1:]]])
    assert not np.allclose(dense[2][1], dense[1][1])  # Keras's momentum moved row 1 anyway
    np.testing.assert_allclose(lazy_kernel, dense_kernel, atol=1e-6)  # dense weights alike


def test_weight_decay_shrinks_only_the_rows_a_batch_used() -> None:
    dense, dense_kernel = steps(keras.optimizers.Adam(0.1, weight_decay=0.1))
    lazy, lazy_kernel = steps(LazyAdam(0.1, weight_decay=0.1))
    assert np.array_equal(lazy[2][UNUSED], lazy[0][UNUSED])
    assert (np.abs(dense[2][UNUSED]) < np.abs(dense[0][UNUSED])).all()  # decayed densely
    np.testing.assert_allclose(lazy[2][2], dense[2][2], atol=1e-5)  # used in both batches
    np.testing.assert_allclose(lazy_kernel, dense_kernel, atol=1e-6)  # decayed as by Keras


def test_the_lazy_optimizers_are_registered_to_reload() -> None:
    for lazy in (LazyAdam(0.1), LazyAdamW(0.1)):
        again = keras.optimizers.deserialize(keras.optimizers.serialize(lazy))
        assert type(again) is type(lazy)
        assert float(again.learning_rate) == pytest.approx(0.1)


def test_the_schema_allows_sparse_updates_for_exactly_the_lazy_optimizers() -> None:
    assert set(LAZY_OPTIMIZERS) == set(LAZY)


@pytest.mark.parametrize(("optimizer", "lazy"), [("adam", LazyAdam), ("adamw", LazyAdamW)])
def test_sparse_updates_pick_the_lazy_optimizer_with_the_configs_settings(
    optimizer: str, lazy: type
) -> None:
    cfg = compose_config(
        [
            "data.num_words=30",
            "model.embedding_dim=8",
            "model.attention.output_dim=8",
            f"train.optimizer={optimizer}",
            "train.sparse_updates=true",
            "train.weight_decay=0.02",
        ]
    )
    built = build_model(cfg).optimizer
    assert type(built) is lazy and built.name == optimizer
    assert built.weight_decay == 0.02 and float(built.learning_rate) == pytest.approx(2e-4)
