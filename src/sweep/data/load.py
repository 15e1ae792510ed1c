""":func:`load_encoded`: source, cache and split settings in, one ready :class:`Encoded` out.

Why once per sweep: the full encoding comes from the cache when it is valid (else from the
source, then cached); ``data.val_split`` is resolved and ``data.limit`` applied on top of it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

import numpy as np

from sweep.data import cache
from sweep.data.encoding import INDEX_FROM, MAX_NGRAMS, Encoded, with_ngrams
from sweep.data.ragged import Ragged
from sweep.data.sources import NO_MOVIE, FileSource, KerasSource, resolve_source
from sweep.data.split import apply_limit, val_split_kind
from sweep.errors import DataError

log = logging.getLogger(__name__)


def load_encoded(
    source: str = "auto",
    path: str | os.PathLike | None = None,
    num_words: int = 20000,
    cache_dir: str | os.PathLike = ".cache/data",
    limit: int | None = None,
    seed: int = 42,
    val_split: str = "auto",
    ngrams: int = 1,
    ngram_buckets: int = 0,
) -> Encoded:
    """Load the tokenised, unpadded IMDB data, from the on-disk cache when it is valid.

    Call once per sweep; pad per trial with :func:`pad`. ``limit`` takes a stratified,
    seeded sample of ``limit`` reviews per split from the full (cached) data (whole movies
    when validating by movie); the vocabulary stays the one built from the full training split.
    ``val_split`` (auto | movie | random) is resolved here, once: ``Encoded.val_split`` says
    which :func:`validation_split` uses; "movie" without movie links is a ConfigError.
    ``ngrams`` > 1 adds each word's hashed n-gram ids (``with_ngrams``) into ``ngram_buckets``.
    """
    if isinstance(num_words, bool) or not isinstance(num_words, int) or num_words <= INDEX_FROM:
        raise ValueError(f"data.num_words={num_words!r} must be an int > {INDEX_FROM}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 2):
        raise ValueError(f"data.limit={limit!r} must be None or an int >= 2")
    src = resolve_source(source, path)
    # keras never names movies: refuse val_split=movie before downloading anything
    kind = val_split_kind(val_split, None, src.label) if isinstance(src, KerasSource) else None
    if ngrams not in range(1, MAX_NGRAMS + 1) or (ngrams > 1 and ngram_buckets < 1):
        raise ValueError(f"data.ngrams={ngrams!r} needs 1..{MAX_NGRAMS} and buckets >= 1")
    built, meta, from_cache = _built(src, num_words, cache_dir, (ngrams, ngram_buckets))
    encoded = _to_encoded(built, meta, from_cache)
    kind = kind or val_split_kind(val_split, encoded.movie_train, src.label)
    encoded = dataclasses.replace(encoded, val_split=kind)
    if limit is not None:
        encoded = apply_limit(encoded, limit, seed)
    return encoded


def _built(
    src: FileSource | KerasSource,
    num_words: int,
    cache_dir: str | os.PathLike,
    ngrams: tuple[int, int],
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """The full encoding (built, meta, from cache?): from the cache when it is valid, else
    built and cached; an n-gram encoding is built from the word-only one (itself cached)."""
    key = cache.fingerprint(src.identity(), num_words, *ngrams)
    cache_file = cache.file_for(cache_dir, key)
    t0 = time.perf_counter()
    cached = cache.read(cache_file, key)
    if cached is not None:
        seconds = time.perf_counter() - t0
        log.info("loaded %s from cache %s in %.2f s", src.label, cache_file, seconds)
        return *cached, True
    if ngrams[0] > 1:
        built, _, _ = _built(src, num_words, cache_dir, (1, 0))
        built = {**built, "sequences": with_ngrams(built["sequences"], *ngrams)}
    else:
        built = src.build(num_words)
    meta = cache.new_meta(key, num_words, src.description, built)
    cache.write(cache_file, built, meta)
    return built, meta, False


def _to_encoded(built: dict[str, Any], meta: dict[str, Any], from_cache: bool) -> Encoded:
    """Cut the full (train, then test) encoding into its splits."""
    split = np.asarray(built["split"])
    n_train = int(np.count_nonzero(split == 0))
    if not (np.all(split[:n_train] == 0) and np.all(split[n_train:] == 1)):
        raise DataError(f"encoded data for {meta['source']} is not ordered train, test")
    seqs: Ragged = built["sequences"]
    cut = seqs.offsets[n_train]
    labels = np.asarray(built["labels"], dtype=np.int32)
    movies = np.asarray(built["movies"], dtype=np.int64)
    movie_train, movie_test = movies[:n_train], movies[n_train:]
    return Encoded(
        train=Ragged(seqs.values[:cut], seqs.offsets[: n_train + 1]),
        y_train=labels[:n_train],
        test=Ragged(seqs.values[cut:], seqs.offsets[n_train:] - cut),
        y_test=labels[n_train:],
        vocabulary=list(built["vocabulary"]),
        num_words=int(meta["num_words"]),
        fingerprint=meta["fingerprint"],
        source=meta["source"],
        cache_key=meta["fingerprint"],
        skipped_empty=built["skipped_empty"],
        skipped_invalid_utf8=built["skipped_invalid_utf8"],
        n_train_full=n_train,
        n_test_full=len(labels) - n_train,
        from_cache=from_cache,
        movie_train=movie_train if np.all(movie_train != NO_MOVIE) else None,
        movie_test=movie_test if np.all(movie_test != NO_MOVIE) else None,
    )
