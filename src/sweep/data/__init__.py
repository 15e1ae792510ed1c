"""IMDB data layer: read once, tokenise once, cache, then slice / split / pad cheaply per run.

Why this shape: a sweep runs many trials that differ in ``seq_len`` and friends. Reading and
tokenising 50k reviews takes seconds, so it is done once into an *unpadded* ragged encoding that
is cached on disk under a fingerprint of (source, tokeniser settings). Every trial then limits,
splits and pads from that encoding in milliseconds; nothing is ever re-tokenised for a new
``seq_len``.

Modules: ``ragged`` (flat sequences, padding), ``encoding`` (tokeniser, vocabulary,
:class:`Encoded`), ``sources`` (aclImdb files, keras), ``cache`` (the on-disk cache), ``split``
(limit slice, validation split), ``load`` (:func:`load_encoded`, tying them together).
With ``data.ngrams`` > 1 each position carries its hashed n-gram ids beside the word id
(``encoding.with_ngrams``), cached under their own fingerprint.
"""

from sweep.data.cache import CACHE_FORMAT
from sweep.data.encoding import (
    INDEX_FROM,
    LABEL_NAMES,
    MAX_NGRAMS,
    NGRAM_HASH,
    OOV,
    PAD,
    SPECIAL_TOKENS,
    START,
    TOKENIZER_VERSION,
    Encoded,
    ngram_ids,
    tokenize,
    with_ngrams,
)
from sweep.data.load import load_encoded
from sweep.data.ragged import Ragged, pad
from sweep.data.sources import KERAS_SOURCE, SOURCES, SPLIT_NAMES
from sweep.data.split import (
    VAL_SPLITS,
    confirmation_split,
    movie_split_indices,
    split_indices,
    val_movies,
    validation_split,
)
from sweep.errors import DataError

__all__ = [
    "CACHE_FORMAT",
    "INDEX_FROM",
    "KERAS_SOURCE",
    "LABEL_NAMES",
    "MAX_NGRAMS",
    "NGRAM_HASH",
    "OOV",
    "PAD",
    "SOURCES",
    "SPECIAL_TOKENS",
    "SPLIT_NAMES",
    "START",
    "TOKENIZER_VERSION",
    "VAL_SPLITS",
    "DataError",
    "Encoded",
    "Ragged",
    "confirmation_split",
    "load_encoded",
    "movie_split_indices",
    "ngram_ids",
    "pad",
    "split_indices",
    "tokenize",
    "val_movies",
    "validation_split",
    "with_ngrams",
]
