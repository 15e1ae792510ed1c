"""Words to token indices and back: the tokeniser, the vocabulary, and :class:`Encoded`.

Conventions (keras ``imdb`` style): index 0 = padding, 1 = start of review, 2 = out of
vocabulary, words from 3 in order of training-split frequency; every index is ``< num_words``.
Labels: neg = 0, pos = 1.

N-grams (fastText's trick): with ``data.ngrams`` n > 1, each position also carries the hashed
ids of the 2- to n-grams of word ids ending there (:func:`with_ngrams`), in ``1..buckets``; 0
where the review has not yet had n words. The hash is a fixed 64-bit mix of the word ids, so
the same review gets the same ids in every run and process (Python's ``hash`` is salted).

This module imports nothing from `sweep` but, relatively, `ragged`: both ship with every logged
model (`sweep.served`), which encodes a served review with this very :func:`tokenize`.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# relative: the served model's copy of this module lives in another package (`sweep.served`)
from .ragged import Ragged

PAD, START, OOV, INDEX_FROM = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<start>", "<oov>")
LABEL_NAMES = ("neg", "pos")  # label i's name
TOKENIZER_VERSION = "imdb-words-v1"  # bump when tokenise()/encoding changes: invalidates caches
NGRAM_HASH = "splitmix64-v1"  # bump when ngram_ids() changes: invalidates n-gram caches
MAX_NGRAMS = 3

# splitmix64's constants: a fixed, well-mixing 64-bit hash (numpy's uint64 arithmetic wraps)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@dataclass(frozen=True, eq=False)
class Encoded:
    """The tokenised dataset, unpadded: cache once, pad per trial with :func:`pad`."""

    train: Ragged
    y_train: np.ndarray  # int32 0/1
    test: Ragged
    y_test: np.ndarray  # int32 0/1
    vocabulary: list[str]  # index -> word; 0 "<pad>", 1 "<start>", 2 "<oov>", words from 3
    num_words: int
    fingerprint: str  # identifies exactly this data (source, tokeniser, limit/seed if any)
    source: str  # human-readable description of where the data came from
    cache_key: str = ""  # fingerprint of the full (unlimited) encoding = cache file key
    skipped_empty: int = 0
    skipped_invalid_utf8: int = 0
    n_train_full: int = 0  # reviews per split before `limit`
    n_test_full: int = 0
    limit: int | None = None
    from_cache: bool = False
    movie_train: np.ndarray | None = None  # int64 IMDb movie (tt number) per review; None: no links
    movie_test: np.ndarray | None = None
    val_split: str = "random"  # validation carved by "movie" or "random": data.val_split resolved

    @property
    def skipped(self) -> int:
        """Total reviews skipped while reading (empty or not UTF-8)."""
        return self.skipped_empty + self.skipped_invalid_utf8

    @property
    def vocab_size(self) -> int:
        """Embedding input size: every token index is < this (and <= num_words)."""
        return len(self.vocabulary)

    def word_index(self) -> dict[str, int]:
        return word_index(self.vocabulary)

    def decode(self, sequence: Sequence[int]) -> str:
        """Turn indices back into text (debugging / sanity checks)."""
        vocab = self.vocabulary
        words = np.asarray(sequence).reshape(len(sequence), -1)[:, 0]  # n-gram ids aside
        return " ".join(vocab[i] if 0 <= i < len(vocab) else "<oov>" for i in map(int, words))


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens; ``<br />`` counts as whitespace. Kept simple and fast."""
    return _TOKEN_RE.findall(text.lower().replace("<br />", " "))


def word_index(vocabulary: Sequence[str]) -> dict[str, int]:
    """word -> id of a vocabulary (index -> word), without the reserved ids."""
    return {w: i for i, w in enumerate(vocabulary) if i >= INDEX_FROM}


def encode_texts(texts: Sequence[str], index: Mapping[str, int]) -> Ragged:
    """Ids of texts a vocabulary was not built from (a served review), with ``index`` from
    :func:`word_index`: the ids :func:`encode` gave the texts it read, START first, OOV for a
    word outside the vocabulary."""
    return Ragged.from_sequences(
        [[START, *(index.get(word, OOV) for word in tokenize(text))] for text in texts]
    )


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64."""
    h = (h ^ (h >> np.uint64(30))) * _MIX[0]
    h = (h ^ (h >> np.uint64(27))) * _MIX[1]
    return h ^ (h >> np.uint64(31))


def ngram_ids(sequences: Ragged, ngrams: int, buckets: int) -> np.ndarray:
    """``(total, ngrams - 1)`` int32: column k holds the bucket (``1..buckets``) of the
    (k + 2)-gram of word ids ending at each position, 0 where the review is shorter so far.

    The hash of an n-gram chains its (n - 1)-prefix's hash with the last word id, so each
    order is one vectorised pass over all reviews.
    """
    words = sequences.values.astype(np.uint64)
    position = np.arange(len(words)) - np.repeat(sequences.offsets[:-1], sequences.lengths)
    out = np.zeros((len(words), ngrams - 1), dtype=np.int32)
    h = _mix(words + _GOLDEN)
    for order in range(2, ngrams + 1):
        prefix = np.zeros_like(h)
        prefix[1:] = h[:-1]
        h = _mix(prefix * _GOLDEN + words + np.uint64(order))
        full = position >= order - 1
        out[full, order - 2] = (h[full] % np.uint64(buckets)).astype(np.int32) + 1
    return out


def with_ngrams(sequences: Ragged, ngrams: int, buckets: int) -> Ragged:
    """``sequences`` with each word's n-gram ids beside it (values ``(total, ngrams)``: the
    word id first); unchanged for ``ngrams == 1``."""
    if ngrams == 1:
        return sequences
    ids = np.column_stack([sequences.values, ngram_ids(sequences, ngrams, buckets)])
    return Ragged(ids, sequences.offsets)


class _AutoIds(dict):
    """word -> provisional id, assigned on first sight (C-speed lookups for known words)."""

    def __missing__(self, key: str) -> int:
        value = self[key] = len(self)
        return value


def encode(texts: Sequence[str], n_train: int, num_words: int) -> tuple[Ragged, list[str]]:
    """Tokenise every text once; the vocabulary comes from the first ``n_train`` (training) only.

    Words get provisional ids while scanning; training counts come from ``np.bincount`` and a
    remap table turns provisional ids into final ones, so no token strings are kept around.
    """
    ids = _AutoIds()
    get_id = ids.__getitem__
    flat = array("i")
    lengths = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        tokens = _TOKEN_RE.findall(text.lower().replace("<br />", " "))  # tokenize(), inlined
        flat.extend(map(get_id, tokens))
        lengths[i] = len(tokens)
    provisional = np.frombuffer(flat, dtype=np.int32) if flat else np.zeros(0, np.int32)

    words = list(ids)
    train_end = int(lengths[:n_train].sum())
    counts = np.bincount(provisional[:train_end], minlength=len(words)).tolist()
    seen = [i for i, c in enumerate(counts) if c > 0]
    seen.sort(key=lambda i: (-counts[i], words[i]))  # frequency, ties alphabetical
    top = seen[: max(num_words - INDEX_FROM, 0)]

    remap = np.full(len(words), OOV, dtype=np.int32)
    remap[np.asarray(top, dtype=np.int64)] = np.arange(INDEX_FROM, INDEX_FROM + len(top))
    vocabulary = [*SPECIAL_TOKENS, *(words[i] for i in top)]

    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths + 1, out=offsets[1:])
    values = np.empty(offsets[-1], dtype=np.int32)
    is_word = np.ones(offsets[-1], dtype=bool)
    is_word[offsets[:-1]] = False
    values[~is_word] = START
    values[is_word] = remap[provisional]
    return Ragged(values, offsets), vocabulary
