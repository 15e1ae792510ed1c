"""N-gram features (issue 25): hashed ids that every run and process agrees on, inside their
buckets, cached under their own key, and a prediction that padding does not change."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from omegaconf import DictConfig

from sweep import data, train
from sweep.config import compose_config
from sweep.data import Ragged
from sweep.layers import NgramEmbedding
from sweep.model import build_model
from tests.test_data import fake_keras_loader

REVIEWS = Ragged.from_sequences([[1, 5, 9, 7], [1, 5]])


def positions(sequences: Ragged) -> np.ndarray:
    """Each value's index within its sequence."""
    return np.arange(len(sequences.values)) - np.repeat(sequences.offsets[:-1], sequences.lengths)


def test_ngram_ids_are_pinned_so_every_run_and_process_gets_the_same() -> None:
    """Constants: a salted hash (Python's `hash` of a str or tuple) changes between processes."""
    assert data.ngram_ids(REVIEWS, 3, 1000).tolist() == [
        [0, 0],
        [242, 0],
        [967, 43],
        [655, 585],
        [0, 0],
        [242, 0],
    ]


def test_an_ngram_id_depends_on_its_words_in_order_and_on_nothing_else() -> None:
    reviews = Ragged.from_sequences([[1, 5, 9], [7, 5, 9], [1, 9, 5]])
    bigrams = data.ngram_ids(reviews, 2, 1 << 20)[:, 0].reshape(3, 3)
    assert bigrams[0, 2] == bigrams[1, 2]  # (5, 9) in two reviews
    assert bigrams[2, 2] != bigrams[0, 2]  # (9, 5)
    assert bigrams[0, 1] != bigrams[2, 1]  # (1, 5) and (1, 9)


@pytest.mark.parametrize("buckets", [1, 7, 1 << 16])
def test_hashed_ids_stay_inside_their_buckets(buckets: int) -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 40, size=300)
    reviews = Ragged.from_sequences([rng.integers(0, 80_000, size=n) for n in lengths])
    ids = data.ngram_ids(reviews, 3, buckets)
    for column, order in enumerate((2, 3)):
        full = positions(reviews) >= order - 1
        assert ids[full, column].min() >= 1 and ids[full, column].max() <= buckets
        assert not ids[~full, column].any()  # no n-gram before the review has n words
    if buckets > 1000:  # spread over the table, not piled into a few rows
        assert len(np.unique(ids[ids > 0])) > 0.9 * np.count_nonzero(ids)


def test_ngrams_travel_beside_the_words_through_cut_take_and_pad() -> None:
    assert data.with_ngrams(REVIEWS, 1, 0) is REVIEWS
    both = data.with_ngrams(REVIEWS, 3, 50)
    assert both.values.shape == (6, 3) and both.values[:, 0].tolist() == REVIEWS.values.tolist()
    cut = both.take([1, 0]).truncate(3, "pre")
    assert cut.tolist() == [both[1].tolist(), both[0][1:].tolist()]
    assert Ragged.from_sequences(list(cut)).tolist() == cut.tolist()
    padded = data.pad(cut, 5, padding="post")
    for column in range(3):
        words_only = Ragged(cut.values[:, column], cut.offsets)
        assert np.array_equal(padded[..., column], data.pad(words_only, 5, padding="post"))


def test_the_cache_is_keyed_by_the_ngrams_and_the_buckets(tiny_imdb: Path, tmp_path: Path) -> None:
    def load(ngrams: int, buckets: int) -> data.Encoded:
        return data.load_encoded(
            source="files",
            path=str(tiny_imdb),
            num_words=64,
            cache_dir=tmp_path,
            ngrams=ngrams,
            ngram_buckets=buckets,
        )

    bigrams = load(2, 50)
    again = load(2, 50)
    assert not bigrams.from_cache and again.from_cache
    assert np.array_equal(again.train.values, bigrams.train.values)
    other = load(2, 60)
    trigrams = load(3, 50)
    words = load(1, 0)
    assert not other.from_cache and not trigrams.from_cache
    assert words.from_cache  # built once, for the first n-gram encoding, and reused since
    keys = {e.fingerprint for e in (bigrams, other, trigrams, words)}
    assert len(keys) == 4 and len(list(tmp_path.glob("imdb-*.npz"))) == 4
    assert not np.array_equal(other.train.values[:, 1], bigrams.train.values[:, 1])
    assert np.array_equal(trigrams.train.values[:, :2], bigrams.train.values)
    assert np.array_equal(bigrams.train.values[:, 0], words.train.values)


def test_the_keras_source_gets_ngrams_of_its_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """keras.datasets.imdb has ids but no text: the n-grams hash ids, so it works alike."""
    monkeypatch.setattr(data.sources, "_keras_imdb_load", fake_keras_loader([]))
    enc = data.load_encoded(
        source="keras", num_words=10, cache_dir=tmp_path, ngrams=2, ngram_buckets=9
    )
    expected = data.with_ngrams(Ragged.from_sequences([[1, 2, 4], [1, 4, 5], [1, 6]]), 2, 9)
    assert enc.train.tolist() == expected.tolist()


def tiny_config(*overrides: str) -> DictConfig:
    return compose_config(
        [
            "data.num_words=30",
            "data.ngrams=3",
            "data.ngram_buckets=20",
            "model.embedding_dim=8",
            "model.attention.output_dim=8",
            *overrides,
        ]
    )


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


def test_a_prediction_is_unchanged_by_padding() -> None:
    keras.utils.set_random_seed(0)
    model = build_model(tiny_config("data.seq_len=40"))
    reviews = data.with_ngrams(Ragged.from_sequences([[1, 5, 9, 7, 3], [1, 12, 5]]), 3, 20)
    short = predict(model, data.pad(reviews, 5, padding="post"))
    for padding in ("pre", "post"):
        long = predict(model, data.pad(reviews, 40, padding=padding))
        np.testing.assert_allclose(long, short, atol=1e-6)
    alone = predict(model, data.pad(reviews.take([1]), 3))
    np.testing.assert_allclose(alone, short[1:], atol=1e-6)
    assert not np.allclose(short[0], short[1])  # the model does look at the reviews


def test_an_ngram_model_reloads_without_custom_objects(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = build_model(tiny_config("train.batching=fixed", "model.mask_padding=false"))
    x = data.pad(data.with_ngrams(REVIEWS, 3, 20), model.input_shape[1])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    assert isinstance(loaded.get_layer("embedding"), NgramEmbedding)
    np.testing.assert_allclose(predict(loaded, x), predict(model, x))
    layer = loaded.get_layer("embedding")
    assert NgramEmbedding.from_config(layer.get_config()).get_config() == layer.get_config()


def test_ngram_embedding_refuses_a_table_of_no_rows() -> None:
    with pytest.raises(ValueError, match="buckets=0"):
        NgramEmbedding(30, 0, 8)


def test_a_run_feeds_the_model_its_words_and_ngrams(tiny_imdb: Path, tmp_path: Path) -> None:
    cfg = tiny_config(f"data.path={tiny_imdb}", f"data.cache_dir={tmp_path}", "data.seq_len=16")
    xy = train.arrays(train.load(cfg), cfg)
    assert xy.x_val.shape == (len(xy.y_val), 16, 3)
    assert predict(build_model(cfg), xy.x_val).shape == (len(xy.y_val), 2)
