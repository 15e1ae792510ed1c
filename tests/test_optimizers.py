"""`train.sparse_updates` (issue 25): Adam and AdamW that update an embedding table only at the
rows a batch used, and otherwise as Keras's own."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from sweep.config import compose_config
from sweep.model import build_model
from sweep.optimizers import LazyAdam, LazyAdamW

BATCHES = ([1, 2, 2], [2, 3, 3])  # row 2 twice in a batch; row 1 only in the first


def tiny(optimizer: keras.optimizers.Optimizer) -> keras.Model:
    keras.utils.set_random_seed(0)
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(10, 4, name="embedding")(tokens)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(tokens, keras.layers.Dense(2, activation="softmax")(x))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


def table(model: keras.Model) -> np.ndarray:
    return keras.ops.convert_to_numpy(model.get_layer("embedding").embeddings)


def train_both(**settings: float) -> tuple[list[np.ndarray], list[np.ndarray], keras.Model]:
    """Each batch's embedding table under Keras's Adam and under the lazy one; the lazy model."""
    dense, lazy = tiny(keras.optimizers.Adam(0.1, **settings)), tiny(LazyAdam(0.1, **settings))
    before = table(dense)
    dense_tables, lazy_tables = [before], [before]
    for rows in BATCHES:
        for model, tables in ((dense, dense_tables), (lazy, lazy_tables)):
            model.train_on_batch(np.array([rows]), np.array([1]))
            tables.append(table(model))
    return dense_tables, lazy_tables, lazy


def test_rows_a_batch_used_move_as_under_keras_adam_and_no_other_row_moves() -> None:
    dense, lazy, model = train_both()
    reference = tiny(keras.optimizers.Adam(0.1))
    for rows in BATCHES:
        reference.train_on_batch(np.array([rows]), np.array([1]))
    np.testing.assert_allclose(model.layers[-1].kernel, reference.layers[-1].kernel, atol=1e-6)
    np.testing.assert_allclose(lazy[1], dense[1], atol=1e-6)  # the first step: the same
    np.testing.assert_allclose(lazy[2][2:4], dense[2][2:4], atol=1e-6)  # the rows used
    assert np.array_equal(lazy[2][[0, 1, *range(4, 10)]], lazy[1][[0, 1, *range(4, 10)]])
    assert not np.allclose(dense[2][1], dense[1][1])  # Keras's momentum moved row 1 anyway


def test_weight_decay_shrinks_only_the_rows_a_batch_used() -> None:
    dense, lazy, _ = train_both(weight_decay=0.1)
    unused = [0, 4, 5, 6, 7, 8, 9]
    assert np.array_equal(lazy[2][unused], lazy[0][unused])
    assert (np.abs(dense[2][unused]) < np.abs(dense[0][unused])).all()  # decayed densely
    np.testing.assert_allclose(lazy[2][2], dense[2][2], atol=1e-5)  # used in both batches


def test_a_model_with_the_lazy_optimizer_reloads_to_train_on(tmp_path: Path) -> None:
    *_, model = train_both()
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, LazyAdam)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(0.1)


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
