"""The IMDB data layer on tiny synthetic aclImdb/ trees (plus one test on the real archive)."""

from __future__ import annotations

import logging
import os
import random
import re
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from sweep import data, tracking
from sweep.data import Encoded, Ragged
from sweep.errors import ConfigError, DataError
from sweep.train import arrays

REAL_ARCHIVE = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "aclImdb_v1_labeled.tar.gz"
).resolve()

# A tiny corpus with known frequencies. In the training split "movie" is the most frequent word
# (7x), then "good" and "bad" tie (4x each: alphabetical order puts "bad" first), then "the" (3x).
# "zebra" occurs only in the test split.
SMALL = {
    ("train", "pos"): {
        "0_9.txt": "A good movie.<br /><br />GOOD movie!",
        "1_8.txt": "good good movie, the best",
        "2_7.txt": "Movie: it's the one",
    },
    ("train", "neg"): {
        "3_1.txt": "A bad movie. Bad!",
        "4_2.txt": "bad bad movie the end",
        "5_3.txt": "movie",
    },
    ("test", "pos"): {
        "6_10.txt": "good zebra movie",
        "7_9.txt": "the good one",
    },
    ("test", "neg"): {
        "8_1.txt": "bad zebra",
        "9_2.txt": "the bad movie",
    },
}


def write_tree(root: Path, reviews: dict[tuple[str, str], dict[str, str | bytes]]) -> Path:
    """Write an ``aclImdb/`` tree under ``root``; returns the ``aclImdb`` directory."""
    top = root / "aclImdb"
    for (split, cls), files in reviews.items():
        folder = top / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return top


def make_archive(acl_dir: Path, out: Path, reverse: bool = False) -> Path:
    """A .tar.gz of ``acl_dir`` (as ``aclImdb/...``), members optionally in reverse order."""
    files = sorted(p for p in acl_dir.rglob("*") if p.is_file())
    if reverse:
        files.reverse()
    with tarfile.open(out, "w:gz") as tf:
        for p in files:
            tf.add(p, arcname=f"aclImdb/{p.relative_to(acl_dir).as_posix()}")
    return out


def balanced(n_per_class: int, split_words: tuple[str, str] = ("good", "bad")) -> dict:
    """``n_per_class`` distinct reviews per class and split (review i repeats a word i+1 times)."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for split in ("train", "test"):
        for cls, word in zip(("pos", "neg"), split_words, strict=True):
            out[(split, cls)] = {
                f"{i}_{8 if cls == 'pos' else 2}.txt": " ".join([word] * (i + 1)) + " film"
                for i in range(n_per_class)
            }
    return out


@pytest.fixture
def small_dir(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "src", SMALL)


@pytest.fixture
def small_tgz(small_dir: Path, tmp_path: Path) -> Path:
    return make_archive(small_dir, tmp_path / "small.tar.gz")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def load(path: Path, cache_dir: Path, **kwargs) -> Encoded:
    return data.load_encoded(source="files", path=str(path), cache_dir=cache_dir, **kwargs)


def words_of(encoded: Encoded, seq: np.ndarray) -> list[str]:
    return [encoded.vocabulary[i] for i in seq]


def assert_same_encoding(a: Encoded, b: Encoded) -> None:
    assert a.vocabulary == b.vocabulary
    for part in ("train", "test"):
        np.testing.assert_array_equal(getattr(a, part).values, getattr(b, part).values)
        np.testing.assert_array_equal(getattr(a, part).offsets, getattr(b, part).offsets)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)


def assert_one_line_naming(err: pytest.ExceptionInfo, path: Path) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message


# ---------------------------------------------------------------------------------------------
# tokeniser and encoding conventions
# ---------------------------------------------------------------------------------------------


def test_tokenize_lowercases_splits_br_and_keeps_contractions() -> None:
    assert data.tokenize("It's GREAT.<br /><br />A 10/10 film!") == [
        "it's",
        "great",
        "a",
        "10",
        "10",
        "film",
    ]


def test_encoding_conventions(small_dir: Path, cache: Path) -> None:
    enc = load(small_dir, cache)
    assert enc.vocabulary[:3] == ["<pad>", "<start>", "<oov>"]
    # training-split frequency order, ties alphabetical
    assert enc.vocabulary[3:7] == ["movie", "bad", "good", "the"]
    assert len(enc.train) == 6 and len(enc.test) == 4
    for seq in [*enc.train, *enc.test]:
        assert seq[0] == data.START
        assert np.all(seq[1:] >= data.OOV)
    # sorted by (split, label, filename): neg first; "3_1.txt" = "A bad movie. Bad!"
    assert enc.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    assert words_of(enc, enc.train[0]) == ["<start>", "a", "bad", "movie", "bad"]
    assert enc.train[0].tolist() == [1, enc.vocabulary.index("a"), 4, 3, 4]
    # "zebra" only occurs in test: not in the vocabulary, encoded as out-of-vocabulary
    assert "zebra" not in enc.vocabulary
    assert enc.test[0].tolist() == [1, 4, 2]  # test/neg/8_1.txt "bad zebra"
    assert enc.decode(enc.test[0]) == "<start> bad <oov>"
    assert enc.vocab_size == len(enc.vocabulary)
    assert enc.word_index()["movie"] == 3


def test_num_words_caps_every_index(small_dir: Path, cache: Path) -> None:
    enc = load(small_dir, cache, num_words=5)
    assert enc.vocabulary == ["<pad>", "<start>", "<oov>", "movie", "bad"]
    for part in (enc.train, enc.test):
        assert part.values.max() < 5
    # "good" (rank 3) no longer fits: it becomes out-of-vocabulary
    assert enc.train[3].tolist() == [1, 2, 2, 3, 2, 3]  # train/pos/0_9.txt
    full = load(small_dir, cache, num_words=20000)
    assert full.train.values.max() >= 5
    assert len(full.vocabulary) < 20000


def test_directory_forms_and_archive_give_identical_encodings(
    small_dir: Path, small_tgz: Path, tmp_path: Path, cache: Path
) -> None:
    from_acl_dir = load(small_dir, cache)
    from_parent_dir = load(small_dir.parent, cache)
    from_archive = load(small_tgz, cache)
    reversed_archive = load(make_archive(small_dir, tmp_path / "rev.tar.gz", reverse=True), cache)
    assert_same_encoding(from_acl_dir, from_archive)
    assert_same_encoding(from_parent_dir, from_archive)
    assert_same_encoding(reversed_archive, from_archive)  # archive order does not matter
    assert from_archive.fingerprint != from_acl_dir.fingerprint  # different source identity
    assert re.fullmatch(r"[0-9a-f]{12,}", from_archive.fingerprint), from_archive.fingerprint


def test_archive_ignores_members_outside_the_layout(small_dir: Path, tmp_path: Path) -> None:
    (small_dir / "README").write_text("not a review")
    (small_dir / "train" / "unsup").mkdir()
    (small_dir / "train" / "unsup" / "0_0.txt").write_text("unlabelled review")
    (small_dir / "train" / "pos" / "notes.md").write_text("not a review")
    enc = load(make_archive(small_dir, tmp_path / "x.tar.gz"), tmp_path / "c1")
    assert len(enc.train) == 6
    assert "unlabelled" not in enc.vocabulary
    assert len(load(small_dir, tmp_path / "c2").train) == 6


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------


def cache_files(cache: Path) -> list[Path]:
    return sorted(cache.iterdir())


def test_second_load_reads_the_cache_not_the_source(
    small_tgz: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load(small_tgz, cache)
    assert not first.from_cache
    files = cache_files(cache)
    assert len(files) == 1 and files[0].suffix == ".npz"  # one file, no temp left behind
    assert first.fingerprint in files[0].name

    def no_reading(*args, **kwargs):
        raise AssertionError("source re-read although the cache is valid")

    monkeypatch.setattr(data.sources.FileSource, "build", no_reading)
    monkeypatch.setattr(data.encoding, "encode", no_reading)
    second = load(small_tgz, cache)
    assert second.from_cache
    assert second.fingerprint == first.fingerprint
    assert second.source == first.source
    assert_same_encoding(first, second)


def _rewrite_npz(file: Path, **changes: np.ndarray) -> None:
    with np.load(file) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    with file.open("wb") as f:
        np.savez(f, **arrays)


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _flip_bytes(file: Path) -> None:
    raw = bytearray(file.read_bytes())
    for i in range(len(raw) // 3, len(raw) // 3 + 16):
        raw[i] ^= 0xFF
    file.write_bytes(bytes(raw))


def _tamper_tokens(file: Path) -> None:
    with np.load(file) as z:
        tokens = z["tokens"].copy()
    tokens[-1] = 3 if tokens[-1] != 3 else 4
    _rewrite_npz(file, tokens=tokens)  # valid zip, stale checksum


@pytest.mark.parametrize("damage", [_truncate, _flip_bytes, _tamper_tokens, Path.unlink])
def test_damaged_cache_is_rebuilt_with_a_warning(
    damage, small_tgz: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = load(small_tgz, cache)
    (file,) = cache_files(cache)
    damage(file)
    with caplog.at_level(logging.WARNING, logger="sweep.data"):
        rebuilt = load(small_tgz, cache)
    assert not rebuilt.from_cache
    assert_same_encoding(first, rebuilt)
    warned = [r for r in caplog.records if "corrupt/stale" in r.getMessage()]
    if damage is Path.unlink:
        assert not warned  # a missing cache is simply built, no warning
    else:
        assert len(warned) == 1 and warned[0].levelno == logging.WARNING
        assert str(file) in warned[0].getMessage()
    again = load(small_tgz, cache)  # the rebuilt cache is valid again
    assert again.from_cache
    assert_same_encoding(first, again)


def test_well_formed_cache_with_another_fingerprint_is_stale(
    small_tgz: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wanted = load(small_tgz, cache, num_words=20000)
    other = load(small_tgz, cache, num_words=5)
    wanted_file, other_file = (cache / f"imdb-{e.fingerprint}.npz" for e in (wanted, other))
    wanted_file.write_bytes(other_file.read_bytes())  # parses, checksum fine, wrong data
    with caplog.at_level(logging.WARNING, logger="sweep.data"):
        reloaded = load(small_tgz, cache, num_words=20000)
    assert not reloaded.from_cache
    assert_same_encoding(wanted, reloaded)
    assert any("corrupt/stale" in r.getMessage() for r in caplog.records)


def test_other_num_words_uses_another_cache_file(small_tgz: Path, cache: Path) -> None:
    a = load(small_tgz, cache, num_words=20000)
    b = load(small_tgz, cache, num_words=5)
    assert not b.from_cache
    assert a.fingerprint != b.fingerprint
    assert len(cache_files(cache)) == 2
    assert load(small_tgz, cache, num_words=20000).from_cache
    assert load(small_tgz, cache, num_words=5).vocabulary == b.vocabulary


def test_changed_directory_source_invalidates_the_cache(small_dir: Path, cache: Path) -> None:
    first = load(small_dir, cache)
    edited = small_dir / "test" / "neg" / "8_1.txt"  # same size, new content and mtime
    edited.write_text("bad zebre")
    os.utime(edited, ns=(edited.stat().st_atime_ns, edited.stat().st_mtime_ns + 10**9))
    after_edit = load(small_dir, cache)
    assert not after_edit.from_cache and after_edit.fingerprint != first.fingerprint
    (small_dir / "train" / "pos" / "99_9.txt").write_text("brilliant")
    second = load(small_dir, cache)
    assert not second.from_cache
    assert second.fingerprint != first.fingerprint
    assert len(second.train) == len(first.train) + 1
    assert "brilliant" in second.vocabulary


def test_unwritable_cache_dir_still_loads(
    small_tgz: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING, logger="sweep.data"):
        enc = load(small_tgz, blocker / "cache")
    assert len(enc.train) == 6
    assert any("could not write data cache" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------
# keras source (loader patched: no network in tests)
# ---------------------------------------------------------------------------------------------


def fake_keras_loader(calls: list[int]):
    def loader(num_words: int):
        calls.append(num_words)
        x_train = np.array([[1, 4, 5], [1, 2, 4], [1, 6]], dtype=object)
        y_train = np.array([1, 0, 1])
        x_test = np.array([[1, 5], [1, 4, 4, 2]], dtype=object)
        y_test = np.array([0, 1])
        word_index = {"the": 1, "good": 2, "bad": 3, "rare": 50}
        return x_train, y_train, x_test, y_test, word_index

    return loader


def test_keras_source_vocabulary_and_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(data.sources, "_keras_imdb_load", fake_keras_loader(calls))
    enc = data.load_encoded(source="keras", num_words=10, cache_dir=cache)
    assert calls == [10]
    assert enc.source == "keras.datasets.imdb"
    # keras convention: word of rank r has index r + 3; index 3 is never used
    assert enc.vocabulary[:7] == ["<pad>", "<start>", "<oov>", "<unused>", "the", "good", "bad"]
    assert len(enc.vocabulary) == 10 and "rare" not in enc.vocabulary
    # stable (split, label) order
    assert enc.y_train.tolist() == [0, 1, 1]
    assert enc.train.tolist() == [[1, 2, 4], [1, 4, 5], [1, 6]]
    assert enc.test.tolist() == [[1, 5], [1, 4, 4, 2]]
    again = data.load_encoded(source="auto", num_words=10, cache_dir=cache)
    assert again.from_cache and calls == [10]  # auto without a path reuses the keras cache
    assert_same_encoding(enc, again)


def test_auto_without_path_and_without_keras_names_both_fixes(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(num_words: int):
        raise Exception("URL fetch failure on https://storage.googleapis.com/imdb.npz:\nNone")

    monkeypatch.setattr(data.sources, "_keras_imdb_load", offline)
    with pytest.raises(DataError) as err:
        data.load_encoded(source="auto", path=None, cache_dir=cache)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("no IMDB data: pass data.path=")
    assert "aclImdb/ directory" in message
    assert "allow keras.datasets.imdb to download it (needs internet)" in message
    assert message.endswith("URL fetch failure on https://storage.googleapis.com/imdb.npz:")
    with pytest.raises(DataError, match=r"keras\.datasets\.imdb could not load"):
        data.load_encoded(source="keras", cache_dir=cache)
    assert not cache.exists() or not list(cache.iterdir())


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path, cache: Path) -> None:
    missing = tmp_path / "nope" / "aclImdb_v1.tar.gz"
    with pytest.raises(DataError, match="does not exist") as err:
        load(missing, cache)
    assert_one_line_naming(err, missing)


def test_files_source_without_path(cache: Path) -> None:
    with pytest.raises(DataError, match=r"data\.source=files needs a path") as err:
        data.load_encoded(source="files", path=None, cache_dir=cache)
    assert "\n" not in str(err.value)


def test_truncated_archive(small_tgz: Path, tmp_path: Path, cache: Path) -> None:
    # enough reviews that half the compressed bytes lie well inside the member stream
    big = write_tree(tmp_path / "big", balanced(200))
    truncated = tmp_path / "truncated.tar.gz"
    raw = make_archive(big, tmp_path / "full.tar.gz").read_bytes()
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        load(truncated, cache)
    assert_one_line_naming(err, truncated)
    not_gzip = tmp_path / "plain.tar.gz"
    not_gzip.write_text("this is not an archive")
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        load(not_gzip, cache)
    assert_one_line_naming(err, not_gzip)


@pytest.mark.parametrize("as_archive", [False, True])
def test_no_train_reviews(tmp_path: Path, cache: Path, as_archive: bool) -> None:
    only_test = {k: v for k, v in SMALL.items() if k[0] == "test"}
    acl = write_tree(tmp_path / "src", only_test)
    path = make_archive(acl, tmp_path / "t.tar.gz") if as_archive else acl
    with pytest.raises(DataError, match="no train reviews found") as err:
        load(path, cache)
    assert_one_line_naming(err, path)


def test_directory_without_acl_layout(tmp_path: Path, cache: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no train reviews found") as err:
        load(empty, cache)
    assert_one_line_naming(err, empty)


@pytest.mark.parametrize("split", ["train", "test"])
def test_split_with_only_one_class(tmp_path: Path, cache: Path, split: str) -> None:
    reviews = {k: v for k, v in SMALL.items() if k != (split, "neg")}
    acl = write_tree(tmp_path / "src", reviews)
    with pytest.raises(DataError, match=f"the {split} split has only one class") as err:
        load(acl, cache)
    assert_one_line_naming(err, acl)


def test_bad_arguments(small_dir: Path, cache: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.source"):
        data.load_encoded(source="web", path=str(small_dir), cache_dir=cache)
    with pytest.raises(ValueError, match="num_words"):
        load(small_dir, cache, num_words=3)
    with pytest.raises(ValueError, match="limit"):
        load(small_dir, cache, limit=1)


# ---------------------------------------------------------------------------------------------
# skipped reviews
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_archive", [False, True])
def test_empty_and_non_utf8_reviews_are_skipped_and_counted(
    tmp_path: Path, cache: Path, caplog: pytest.LogCaptureFixture, as_archive: bool
) -> None:
    reviews = {k: dict(v) for k, v in SMALL.items()}
    reviews[("train", "pos")]["90_9.txt"] = "  \n\t "
    reviews[("train", "neg")]["91_1.txt"] = ""
    reviews[("test", "neg")]["92_1.txt"] = b"caf\xe9 latin-1 review"
    acl = write_tree(tmp_path / "src", reviews)
    path = make_archive(acl, tmp_path / "a.tar.gz") if as_archive else acl
    with caplog.at_level(logging.WARNING, logger="sweep.data"):
        enc = load(path, cache)
    assert (enc.skipped_empty, enc.skipped_invalid_utf8, enc.skipped) == (2, 1, 3)
    assert (len(enc.train), len(enc.test)) == (6, 4)
    assert "latin" not in enc.vocabulary
    assert any(
        r.levelno == logging.WARNING and "2 empty and 1 non-UTF-8" in r.getMessage()
        for r in caplog.records
    )
    cached = load(path, cache)
    assert cached.from_cache and cached.skipped == 3  # the counts survive the cache


# ---------------------------------------------------------------------------------------------
# pad
# ---------------------------------------------------------------------------------------------

RAGGED_CASES = [[1, 5, 6, 7], [], [1], [1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 9, 9]]


@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize("truncating", ["pre", "post"])
@pytest.mark.parametrize("seq_len", [1, 3, 4, 12])
def test_pad_matches_keras(padding: str, truncating: str, seq_len: int) -> None:
    keras_utils = pytest.importorskip("keras.utils")
    expected = keras_utils.pad_sequences(
        RAGGED_CASES, maxlen=seq_len, padding=padding, truncating=truncating, value=0
    )
    for given in (RAGGED_CASES, Ragged.from_sequences(RAGGED_CASES)):
        got = data.pad(given, seq_len, padding=padding, truncating=truncating)
        assert got.dtype == np.int32 and got.shape == (len(RAGGED_CASES), seq_len)
        np.testing.assert_array_equal(got, expected)


def test_pad_defaults_are_pre() -> None:
    got = data.pad([[1, 2, 3, 4], [1, 7]], 3)
    np.testing.assert_array_equal(got, [[2, 3, 4], [0, 1, 7]])
    assert data.pad([], 4).shape == (0, 4)


@pytest.mark.parametrize("seq_len", [0, -1, 2.5, True])
def test_pad_rejects_bad_seq_len(seq_len) -> None:
    with pytest.raises(ValueError, match="seq_len"):
        data.pad([[1, 2]], seq_len)


def test_pad_rejects_bad_modes() -> None:
    with pytest.raises(ValueError, match="padding"):
        data.pad([[1, 2]], 2, padding="middle")
    with pytest.raises(ValueError, match="truncating"):
        data.pad([[1, 2]], 2, truncating="both")


def test_ragged_take_and_indexing() -> None:
    r = Ragged.from_sequences([[1, 2], [3], [], [4, 5, 6]])
    assert len(r) == 4 and r.lengths.tolist() == [2, 1, 0, 3]
    assert r[-1].tolist() == [4, 5, 6]
    assert r.take([3, 0, 2]).tolist() == [[4, 5, 6], [1, 2], []]
    with pytest.raises(IndexError):
        r[4]
    with pytest.raises(ValueError):
        Ragged(np.arange(3), np.array([0, 2]))


# ---------------------------------------------------------------------------------------------
# validation split, limit, splits
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def balanced_enc(tmp_path: Path) -> Encoded:
    acl = write_tree(tmp_path / "bal", balanced(20))
    return load(acl, tmp_path / "bal-cache")


def as_tuples(ragged: Ragged) -> Counter:
    return Counter(tuple(seq.tolist()) for seq in ragged)


def test_validation_split_is_stratified_seeded_and_disjoint(balanced_enc: Encoded) -> None:
    rows, val_rows = data.split_indices(balanced_enc.y_train, val_fraction=0.2, seed=7)
    y = balanced_enc.y_train
    assert len(val_rows) == 8 and len(rows) == 32
    assert Counter(y[val_rows].tolist()) == {0: 4, 1: 4}
    assert Counter(y[rows].tolist()) == {0: 16, 1: 16}
    # disjoint and together exactly the training split
    assert sorted([*rows.tolist(), *val_rows.tolist()]) == list(range(40))
    # the parts are shuffled, not class-sorted
    assert np.count_nonzero(np.diff(y[rows])) > 2
    again, again_val = data.split_indices(y, 0.2, seed=7)
    assert again.tolist() == rows.tolist() and again_val.tolist() == val_rows.tolist()
    _, other_val = data.split_indices(y, 0.2, seed=8)
    assert set(other_val.tolist()) != set(val_rows.tolist())
    assert len(data.split_indices(y, 0.5)[1]) == 20
    with pytest.raises(ValueError, match="val_fraction"):
        data.split_indices(y, 1.0)


def test_arrays_split_and_pad_per_run_without_retokenising(
    balanced_enc: Encoded, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_tokenising(*args, **kwargs):
        raise AssertionError("re-tokenised for a new seq_len")

    monkeypatch.setattr(data.encoding, "encode", no_tokenising)

    def cfg(seq_len: int, padding: str = "pre") -> DictConfig:
        settings = {"seq_len": seq_len, "val_fraction": 0.2, "padding": padding}
        return OmegaConf.create({"seed": 7, "data": {**settings, "truncating": "pre"}})

    short, long = arrays(balanced_enc, cfg(4)), arrays(balanced_enc, cfg(30, padding="post"))
    rows, val_rows = data.split_indices(balanced_enc.y_train, 0.2, seed=7)
    for xy, seq_len in ((short, 4), (long, 30)):
        assert xy.x_train.dtype == np.int32 and xy.x_train.shape == (32, seq_len)
        assert xy.x_val.shape == (8, seq_len)
        np.testing.assert_array_equal(xy.y_train, balanced_enc.y_train[rows])
        np.testing.assert_array_equal(xy.y_val, balanced_enc.y_train[val_rows])
    # the same arrays as gathering each part first and padding it
    np.testing.assert_array_equal(
        long.x_val, data.pad(balanced_enc.train.take(val_rows), 30, padding="post")
    )
    np.testing.assert_array_equal(short.x_train, data.pad(balanced_enc.train.take(rows), 4))
    # labels travel with their reviews: positive ones open with "good"
    good = balanced_enc.vocabulary.index("good")
    for x, y in ((long.x_train, long.y_train), (long.x_val, long.y_val)):
        assert np.all(x[:, 0] == data.START)  # "post": the start token comes first
        assert ((x[:, 1] == good) == (y == 1)).all()


def test_limit_is_a_stratified_seeded_slice_of_the_cached_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    acl = write_tree(tmp_path / "bal", balanced(20))
    cache = tmp_path / "cache"
    full = load(acl, cache)

    def no_reading(*args, **kwargs):
        raise AssertionError("limit must not re-read or re-tokenise")

    monkeypatch.setattr(data.sources.FileSource, "build", no_reading)
    small = load(acl, cache, limit=10, seed=1)
    assert small.from_cache and small.limit == 10
    assert (len(small.train), len(small.test)) == (10, 10)
    assert Counter(small.y_train.tolist()) == {0: 5, 1: 5}
    assert Counter(small.y_test.tolist()) == {0: 5, 1: 5}
    assert (small.n_train_full, small.n_test_full) == (40, 40)
    assert small.vocabulary == full.vocabulary
    assert small.fingerprint != full.fingerprint
    assert set(as_tuples(small.train)) <= set(as_tuples(full.train))
    assert set(as_tuples(small.test)) <= set(as_tuples(full.test))
    same = load(acl, cache, limit=10, seed=1)
    assert same.train.tolist() == small.train.tolist() and same.fingerprint == small.fingerprint
    other = load(acl, cache, limit=10, seed=2)
    assert as_tuples(other.train) != as_tuples(small.train)
    odd = load(acl, cache, limit=7)
    assert Counter(odd.y_train.tolist()) == {0: 3, 1: 4}
    with caplog.at_level(logging.WARNING, logger="sweep.data"):
        everything = load(acl, cache, limit=100)  # more than there is: all of it, with a warning
    assert (len(everything.train), len(everything.test)) == (40, 40)
    assert as_tuples(everything.train) == as_tuples(full.train)
    assert any("only 20/20 exist" in r.getMessage() for r in caplog.records)
    assert len(cache_files(cache)) == 1  # the cache holds only the full data


# ---------------------------------------------------------------------------------------------
# validation by movie (data.val_split)
# ---------------------------------------------------------------------------------------------


def movie_reviews(n_movies: int, seed: int = 0) -> tuple[dict, dict[tuple[str, str], list[str]]]:
    """Reviews of ``n_movies`` movies per split (1-12 each, labels mixed, like IMDB's up to 30),
    and the ``urls_{pos,neg}.txt`` lines naming each review's movie (line i: review ``i_*``)."""
    rng = random.Random(seed)
    keys = [(split, cls) for split in ("train", "test") for cls in ("pos", "neg")]
    reviews: dict = {key: {} for key in keys}
    links: dict[tuple[str, str], list[str]] = {key: [] for key in keys}
    for split, offset in (("train", 1000), ("test", 5000)):
        for movie in range(offset, offset + n_movies):
            for _ in range(rng.randint(1, 12)):
                cls = rng.choice(("pos", "neg"))
                i = len(links[split, cls])
                links[split, cls].append(f"http://www.imdb.com/title/tt{movie:07d}/usercomments")
                word = "good" if cls == "pos" else "bad"
                reviews[split, cls][f"{i}_{8 if cls == 'pos' else 2}.txt"] = (
                    f"{word} film {movie % 1000}"
                )
    return reviews, links


def write_links(acl: Path, links: dict[tuple[str, str], list[str]]) -> None:
    for (split, cls), lines in links.items():
        (acl / split / f"urls_{cls}.txt").write_text("".join(f"{line}\n" for line in lines))


def movie_tree(root: Path, n_movies: int = 80, seed: int = 0) -> tuple[Path, dict]:
    reviews, links = movie_reviews(n_movies, seed)
    acl = write_tree(root, reviews)
    write_links(acl, links)
    return acl, links


def expected_movies(links: dict[tuple[str, str], list[str]], split: str) -> list[int]:
    """Each review's movie in the data layer's canonical order (neg first, file names sorted)."""
    out = []
    for cls in ("neg", "pos"):
        names = sorted(f"{i}_{8 if cls == 'pos' else 2}.txt" for i in range(len(links[split, cls])))
        out += [int(links[split, cls][int(n.split("_")[0])].split("/tt")[1][:7]) for n in names]
    return out


def shared_movies(movies: np.ndarray, rows: np.ndarray, val_rows: np.ndarray) -> set[int]:
    return set(movies[rows].tolist()) & set(movies[val_rows].tolist())


@pytest.mark.parametrize("as_archive", [False, True])
def test_movie_split_holds_out_whole_movies_balanced_and_seeded(
    tmp_path: Path, cache: Path, as_archive: bool
) -> None:
    acl, links = movie_tree(tmp_path / "src")
    path = make_archive(acl, tmp_path / "m.tar.gz") if as_archive else acl
    enc = load(path, cache)  # data.val_split=auto: links present, so by movie
    assert enc.val_split == "movie"
    assert enc.movie_train.tolist() == expected_movies(links, "train")
    assert enc.movie_test.tolist() == expected_movies(links, "test")
    y, movies = enc.y_train, enc.movie_train
    rows, val_rows = data.validation_split(enc, 0.2, seed=7)
    assert sorted([*rows.tolist(), *val_rows.tolist()]) == list(range(len(y)))
    assert not shared_movies(movies, rows, val_rows)
    assert len(set(movies[val_rows].tolist())) >= 10
    assert abs(len(val_rows) / len(y) - 0.2) < 0.02  # val_fraction, as closely as movies allow
    assert abs(y[val_rows].mean() - y[rows].mean()) < 0.02  # label balance within 2 pp
    assert np.count_nonzero(np.diff(y[rows])) > 2  # shuffled, not class-sorted
    # the same seed, the same split; another seed, other movies
    again = data.validation_split(enc, 0.2, seed=7)
    assert again[0].tolist() == rows.tolist() and again[1].tolist() == val_rows.tolist()
    other = data.validation_split(enc, 0.2, seed=8)[1]
    assert set(movies[other].tolist()) != set(movies[val_rows].tolist())
    # what train.arrays validates on
    cfg = OmegaConf.create(
        {
            "seed": 7,
            "data": {"seq_len": 8, "val_fraction": 0.2, "padding": "pre", "truncating": "pre"},
        }
    )
    np.testing.assert_array_equal(arrays(enc, cfg).y_val, y[val_rows])
    # a random split of the same reviews shares movies: the check above can fail
    random_split = load(path, cache, val_split="random")
    assert random_split.val_split == "random"
    random_rows = data.validation_split(random_split, 0.2, seed=7)
    assert [r.tolist() for r in random_rows] == [r.tolist() for r in data.split_indices(y, 0.2, 7)]
    assert len(shared_movies(movies, *random_rows)) > 10


def test_run_tags_name_the_split_used_and_the_validation_movies(
    tmp_path: Path, cache: Path
) -> None:
    acl, _ = movie_tree(tmp_path / "src")
    cfg = OmegaConf.create({"seed": 3, "data": {"val_fraction": 0.25}})
    by_movie = load(acl, cache)
    _, val_rows = data.validation_split(by_movie, 0.25, seed=3)
    tags = tracking.standard_tags(cfg, by_movie)
    assert tags["data.val_split_used"] == "movie"
    assert tags["data.val_movies"] == str(len(set(by_movie.movie_train[val_rows].tolist())))
    assert tags["data_fingerprint"] == by_movie.fingerprint
    assert tracking.standard_tags(cfg, load(acl, cache, val_split="random"))[
        "data.val_split_used"
    ] == ("random")
    no_links = load(write_tree(tmp_path / "plain", balanced(10)), cache, val_split="random")
    plain = tracking.standard_tags(cfg, no_links)
    assert plain["data.val_split_used"] == "random" and "data.val_movies" not in plain
    assert "data.val_split_used" not in tracking.standard_tags(cfg, by_movie.fingerprint)


def movie_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "no movie links" in r.getMessage()]


def test_auto_without_links_is_random_with_one_warning(
    balanced_enc: Encoded, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    acl = write_tree(tmp_path / "plain", balanced(20))
    with caplog.at_level(logging.WARNING, logger="sweep.data"):
        enc = load(acl, tmp_path / "c", val_split="auto")
        data.validation_split(enc, 0.2, seed=7)
        data.validation_split(enc, 0.2, seed=7)
    assert enc.val_split == "random" and enc.movie_train is None and enc.movie_test is None
    (warning,) = movie_warnings(caplog)
    assert warning.levelno == logging.WARNING and str(acl) in warning.getMessage()
    # exactly today's split: the same rows as split_indices
    today = data.split_indices(enc.y_train, 0.2, 7)
    for got, want in zip(data.validation_split(enc, 0.2, seed=7), today, strict=True):
        assert got.tolist() == want.tolist()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sweep.data"):
        assert load(acl, tmp_path / "c", val_split="random").val_split == "random"
        with_links, _ = movie_tree(tmp_path / "linked")
        assert load(with_links, tmp_path / "c").val_split == "movie"
    assert not movie_warnings(caplog)  # chosen on purpose, or links present: nothing to warn


@pytest.mark.parametrize("as_archive", [False, True])
def test_movie_split_without_links_is_one_config_line(
    tmp_path: Path, cache: Path, as_archive: bool
) -> None:
    acl = write_tree(tmp_path / "plain", balanced(5))
    path = make_archive(acl, tmp_path / "plain.tar.gz") if as_archive else acl
    with pytest.raises(ConfigError) as err:
        load(path, cache, val_split="movie")
    assert str(err.value).startswith("config error: data.val_split=movie: data.path=")
    assert_one_line_naming(err, path)
    assert "no movie links" in str(err.value)


def test_movie_split_with_the_keras_source_is_refused_before_loading(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sweep.config import compose_config

    calls: list[int] = []
    monkeypatch.setattr(data.sources, "_keras_imdb_load", fake_keras_loader(calls))
    with pytest.raises(ConfigError) as err:
        data.load_encoded(source="keras", num_words=10, cache_dir=cache, val_split="movie")
    assert calls == [] and "\n" not in str(err.value)
    assert str(err.value).startswith("config error: data.val_split=movie: keras.datasets.imdb")
    enc = data.load_encoded(source="keras", num_words=10, cache_dir=cache)
    assert enc.val_split == "random" and enc.movie_train is None
    for overrides in (["data.val_split=movie"], ["data.val_split=movie", "data.source=keras"]):
        with pytest.raises(ConfigError, match=r"^config error: data\.val_split=movie: keras"):
            compose_config(overrides)
    with pytest.raises(ConfigError, match=r"^config error: data\.val_split=sideways: expected"):
        compose_config(["data.val_split=sideways"])
    assert compose_config([]).data.val_split == "auto"


@pytest.mark.parametrize("as_archive", [False, True])
def test_links_file_of_the_wrong_length_is_one_line(
    tmp_path: Path, cache: Path, as_archive: bool
) -> None:
    acl, links = movie_tree(tmp_path / "src")
    n = len(links["train", "pos"])
    write_links(acl, {("train", "pos"): links["train", "pos"][:-1]})
    path = make_archive(acl, tmp_path / "m.tar.gz") if as_archive else acl
    with pytest.raises(DataError) as err:
        load(path, cache)
    message = str(err.value)
    assert_one_line_naming(err, path)
    named = "aclImdb/train/urls_pos.txt" if as_archive else str(acl / "train" / "urls_pos.txt")
    assert named in message
    assert f"has {n - 1} lines" in message and f"holds {n} reviews" in message
    (acl / "train" / "urls_pos.txt").unlink()  # and a links file without its partner
    with pytest.raises(DataError, match=r"urls_neg\.txt has no partner .*urls_pos\.txt") as err:
        load(acl, cache)
    assert_one_line_naming(err, acl)


def test_movie_ids_survive_the_cache_and_the_limit(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acl, _ = movie_tree(tmp_path / "src", n_movies=120)
    with monkeypatch.context() as m:  # a cache of the format before movie ids
        m.setattr(data.cache, "CACHE_FORMAT", 1)
        load(acl, cache)
    full = load(acl, cache)
    assert not full.from_cache  # the old cache is not read: it has no movie ids
    assert len(cache_files(cache)) == 2

    def no_reading(*args, **kwargs):
        raise AssertionError("source re-read although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(data.sources.FileSource, "build", no_reading)
        cached = load(acl, cache)
        small = load(acl, cache, limit=200, seed=1)
        small_random = load(acl, cache, limit=200, seed=1, val_split="random")
    assert cached.from_cache
    np.testing.assert_array_equal(cached.movie_train, full.movie_train)
    np.testing.assert_array_equal(cached.movie_test, full.movie_test)
    assert Counter(small.y_train.tolist()) == Counter(small.y_test.tolist()) == {0: 100, 1: 100}
    # the slice takes whole movies (but for a few at its edge), and keeps each review's movie
    for part, movies, whole in (
        ("train", small.movie_train, full.movie_train),
        ("test", small.movie_test, full.movie_test),
    ):
        assert len(movies) == 200
        sizes, full_sizes = Counter(movies.tolist()), Counter(whole.tolist())
        assert sum(sizes[k] != full_sizes[k] for k in sizes) <= 2, part
        by_review = dict(zip(as_tuples_list(getattr(full, part)), whole.tolist(), strict=True))
        assert [by_review[t] for t in as_tuples_list(getattr(small, part))] == movies.tolist()
    rows, val_rows = data.validation_split(small, 0.2, seed=1)
    assert not shared_movies(small.movie_train, rows, val_rows)
    # random: the same per-class sample as before movie ids, under another fingerprint
    rng = np.random.default_rng([1, 1])
    expected = data.split._stratified_sample(full.y_train, (100, 100), rng, "")
    assert small_random.train.tolist() == full.train.take(expected).tolist()
    np.testing.assert_array_equal(small_random.movie_train, full.movie_train[expected])
    assert len({small.fingerprint, small_random.fingerprint, full.fingerprint}) == 3
    assert sum(Counter(small_random.movie_train.tolist())[k] != n for k, n in sizes.items()) > 2


def as_tuples_list(ragged: Ragged) -> list[tuple[int, ...]]:
    return [tuple(seq.tolist()) for seq in ragged]


def test_links_added_to_a_directory_invalidate_its_cache(tmp_path: Path, cache: Path) -> None:
    reviews, links = movie_reviews(20)
    acl = write_tree(tmp_path / "src", reviews)
    before = load(acl, cache, val_split="random")
    assert before.movie_train is None
    write_links(acl, links)
    after = load(acl, cache)
    assert not after.from_cache and after.fingerprint != before.fingerprint
    assert after.movie_train.tolist() == expected_movies(links, "train")


def no_runs_logged(uri: str) -> bool:
    from mlflow.tracking import MlflowClient

    if not tracking.store_exists(uri):
        return True
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return not client.search_runs(experiments)


@pytest.mark.parametrize("sweep", [False, True])
def test_bad_movie_input_stops_before_any_mlflow_run(
    tmp_path: Path, make_config, make_sweep, sweep: bool
) -> None:
    from sweep.__main__ import run

    space = {"model.dropout": {"type": "choice", "values": [0.1, 0.2]}}
    movie = "data.val_split=movie"
    cfg = make_sweep(space, movie) if sweep else make_config(movie)
    with pytest.raises(ConfigError, match=r"^config error: data\.val_split=movie: data\.path="):
        run(cfg)  # conftest's tiny tree has no movie links
    assert no_runs_logged(cfg.tracking.uri)
    acl, links = movie_tree(tmp_path / "src")
    write_links(acl, {("train", "neg"): links["train", "neg"][1:]})
    bad = f"data.path={acl}"
    cfg = make_sweep(space, bad) if sweep else make_config(bad)
    with pytest.raises(DataError, match=r"urls_neg\.txt has \d+ lines but .* reviews"):
        run(cfg)
    assert no_runs_logged(cfg.tracking.uri)


# ---------------------------------------------------------------------------------------------
# the real archive
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("imdb-cache")


@pytest.mark.integration
def test_real_archive_limited(real_cache: Path) -> None:
    if not REAL_ARCHIVE.is_file():
        pytest.skip(f"real IMDB archive not found at {REAL_ARCHIVE}")
    enc = data.load_encoded(
        source="files", path=str(REAL_ARCHIVE), cache_dir=real_cache, limit=2000
    )
    assert (enc.n_train_full, enc.n_test_full) == (25000, 25000)
    assert enc.skipped == 0
    assert (len(enc.train), len(enc.test)) == (2000, 2000)
    assert Counter(enc.y_train.tolist()) == {0: 1000, 1: 1000}
    assert Counter(enc.y_test.tolist()) == {0: 1000, 1: 1000}
    assert len(enc.vocabulary) == 20000 and enc.vocabulary[3] == "the"
    assert enc.train.values.max() < 20000
    cached = data.load_encoded(
        source="files", path=str(REAL_ARCHIVE), cache_dir=real_cache, limit=2000
    )
    assert cached.from_cache
    assert cached.train.tolist() == enc.train.tolist()
    rows, val_rows = data.split_indices(cached.y_train)
    assert (len(rows), len(val_rows)) == (1600, 400)


@pytest.mark.integration
def test_real_archive_movie_split_on_a_limited_slice(real_cache: Path) -> None:
    if not REAL_ARCHIVE.is_file():
        pytest.skip(f"real IMDB archive not found at {REAL_ARCHIVE}")
    enc = data.load_encoded(
        source="files", path=str(REAL_ARCHIVE), cache_dir=real_cache, limit=2000, seed=5
    )
    if enc.movie_train is None:
        pytest.skip(f"{REAL_ARCHIVE} is the earlier copy without movie links (urls_*.txt)")
    assert enc.val_split == "movie" and len(enc.movie_train) == len(enc.train) == 2000
    assert Counter(enc.y_train.tolist()) == {0: 1000, 1: 1000}
    assert 100 < len(set(enc.movie_train.tolist())) < 1000  # whole movies, up to 30 reviews each
    rows, val_rows = data.validation_split(enc, 0.2, seed=5)
    assert not shared_movies(enc.movie_train, rows, val_rows)
    assert abs(len(val_rows) / 2000 - 0.2) < 0.02
    assert abs(enc.y_train[val_rows].mean() - enc.y_train[rows].mean()) < 0.02
    random_rows = data.split_indices(enc.y_train, 0.2, seed=5)
    assert len(shared_movies(enc.movie_train, *random_rows)) > 50  # what the movie split avoids
