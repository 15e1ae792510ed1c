"""Which reviews a run uses: the seeded ``data.limit`` slice, and training vs validation rows.

Both are seeded, so every trial of a sweep sees the same reviews. Where the data names each
review's movie, validation holds out whole movies (``data.val_split``: auto | movie | random)
and the slice takes whole movies, since IMDB has up to 30 reviews per movie and a random
split would validate on movies it trained on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from sweep.data.cache import hash_json
from sweep.data.encoding import Encoded
from sweep.errors import ConfigError, DataError

log = logging.getLogger(__name__)

VAL_SPLITS = ("auto", "movie", "random")


def val_split_kind(val_split: str, movies: np.ndarray | None, label: str) -> str:
    """``data.val_split`` resolved to "movie" or "random" for data with(out) movie links."""
    if val_split not in VAL_SPLITS:
        raise ValueError(f"data.val_split={val_split!r} is not one of {', '.join(VAL_SPLITS)}")
    if movies is not None:
        return "random" if val_split == "random" else "movie"
    if val_split == "movie":
        raise ConfigError(
            "data.val_split",
            val_split,
            f"{label} has no movie links (aclImdb/train/urls_pos.txt, urls_neg.txt); "
            "use data.val_split=random",
        )
    if val_split == "auto":
        log.warning(
            "%s has no movie links (aclImdb/train/urls_{pos,neg}.txt): validating on a random "
            "split, which shares movies with training (data.val_split=random chooses it quietly)",
            label,
        )
    return "random"


def _stratified_sample(
    y: np.ndarray, per_class: Sequence[int], rng: np.random.Generator, split: str
) -> np.ndarray:
    """Seeded sample of ``per_class[c]`` indices of each class c, in canonical order."""
    chosen = []
    _warn_if_short(y, per_class, split)
    for c, k in enumerate(per_class):
        chosen.append(rng.permutation(np.flatnonzero(y == c))[:k])
    return np.sort(np.concatenate(chosen))


def _warn_if_short(y: np.ndarray, per_class: Sequence[int], split: str) -> None:
    available = [int(np.count_nonzero(y == c)) for c in range(len(per_class))]
    if any(k > n for k, n in zip(per_class, available, strict=True)):
        log.warning(
            "data.limit asks for %s neg/pos %s reviews, only %s exist: using what there is",
            "/".join(map(str, per_class)),
            split,
            "/".join(map(str, available)),
        )


def _movie_counts(y: np.ndarray, movies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each review's movie as 0..M-1, and the (M, 2) neg/pos review counts per movie."""
    _, inverse = np.unique(movies, return_inverse=True)
    counts = np.zeros((int(inverse.max(initial=-1)) + 1, 2), dtype=np.int64)
    np.add.at(counts, (inverse, np.asarray(y, dtype=np.int64)), 1)
    return inverse, counts


def _movie_sample(
    y: np.ndarray,
    movies: np.ndarray,
    per_class: Sequence[int],
    rng: np.random.Generator,
    split: str,
) -> np.ndarray:
    """Seeded sample of whole movies that fills ``per_class`` exactly, in canonical order.

    Movies, in shuffled order, are taken whole while they fit both classes' quotas; the few
    reviews still missing then come from the next movies in that order, so at most a handful
    of movies at the slice's edge are cut (the slice's own movie split stays leak-free anyway:
    it groups the reviews the slice holds).
    """
    _warn_if_short(y, per_class, split)
    inverse, counts = _movie_counts(y, movies)
    order = rng.permutation(len(counts))
    left = np.minimum(per_class, counts.sum(axis=0))
    whole = np.zeros(len(counts), dtype=bool)
    for g in order:
        if np.all(counts[g] <= left):
            whole[g] = True
            left -= counts[g]
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    chosen = [np.flatnonzero(whole[inverse])]
    for c in range(2):
        rest = np.flatnonzero(~whole[inverse] & (y == c))
        chosen.append(rest[np.argsort(rank[inverse[rest]], kind="stable")][: left[c]])
    return np.sort(np.concatenate(chosen))


def apply_limit(enc: Encoded, limit: int, seed: int) -> Encoded:
    """Stratified slice of the (cached) full data; vocabulary unchanged.

    With ``val_split`` resolved to "movie", each split's slice takes whole movies (see
    :func:`_movie_sample`), so it keeps the full data's reviews-per-movie structure; with
    "random" it is the per-class sample it always was, so earlier slices reproduce.
    """
    per_class = (limit // 2, limit - limit // 2)
    rngs = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    by_movie = enc.val_split == "movie"
    parts = []
    for y, movies, rng, split in (
        (enc.y_train, enc.movie_train, rngs[0], "train"),
        (enc.y_test, enc.movie_test, rngs[1], "test"),
    ):
        if by_movie and movies is not None:
            parts.append(_movie_sample(y, movies, per_class, rng, split))
        else:
            parts.append(_stratified_sample(y, per_class, rng, split))
    tr, te = parts
    key: dict[str, Any] = {"base": enc.cache_key, "limit": limit, "seed": seed}
    if by_movie:
        key["by_movie"] = True
    return dataclasses.replace(
        enc,
        train=enc.train.take(tr),
        y_train=enc.y_train[tr],
        test=enc.test.take(te),
        y_test=enc.y_test[te],
        movie_train=None if enc.movie_train is None else enc.movie_train[tr],
        movie_test=None if enc.movie_test is None else enc.movie_test[te],
        fingerprint=hash_json(key),
        limit=limit,
    )


def split_indices(
    labels: np.ndarray, val_fraction: float = 0.2, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the training split for training and for validation: stratified and seeded, so
    every trial of a sweep validates on the same reviews; the test split is never touched.

    Both come back shuffled (seeded) so that class-sorted order never reaches training.
    """
    val_fraction = float(val_fraction)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} must be in (0, 1)")
    y = np.asarray(labels)
    rng = np.random.default_rng([seed, 3])
    train_idx, val_idx = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = round(len(idx) * val_fraction)
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    tr = rng.permutation(np.concatenate(train_idx)) if train_idx else np.zeros(0, np.int64)
    va = rng.permutation(np.concatenate(val_idx)) if val_idx else np.zeros(0, np.int64)
    return tr, va


def movie_split_indices(
    labels: np.ndarray, movies: np.ndarray, val_fraction: float = 0.2, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """Rows for training and validation with every movie wholly on one side (no movie leaks).

    Seeded greedy passes over the movies in shuffled order fill validation towards
    ``val_fraction`` of each class: first with the movies that fit what is still missing, then
    with any that bring it closer. So the fraction and the label balance are kept as closely
    as whole movies allow (on IMDB's training split: exactly). Both parts come back shuffled
    (seeded), like :func:`split_indices`.
    """
    val_fraction = float(val_fraction)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} must be in (0, 1)")
    y = np.asarray(labels)
    inverse, counts = _movie_counts(y, np.asarray(movies))
    if len(counts) < 2:
        raise DataError(f"data.val_split=movie needs 2 movies or more, the data has {len(counts)}")
    rng = np.random.default_rng([seed, 4])
    order = rng.permutation(len(counts))
    target = val_fraction * counts.sum(axis=0)
    taken = np.zeros(2)
    in_val = np.zeros(len(counts), dtype=bool)

    def gap(reviews: np.ndarray) -> float:
        return float(np.abs(reviews - target).sum())

    for fits in (True, False):  # movies that fit what is missing, then any that get closer
        for g in order[~in_val[order]]:
            after = taken + counts[g]
            if np.all(after <= target) if fits else gap(after) < gap(taken):
                in_val[g], taken = True, after
    if in_val.all() or not in_val.any():  # tiny data: each side needs one movie at least
        in_val[order[0]] = not in_val[order[0]]
    val_rows = in_val[inverse]
    return rng.permutation(np.flatnonzero(~val_rows)), rng.permutation(np.flatnonzero(val_rows))


#: The confirmation slice is drawn once, by this fixed seed: every run of every seed and every
#: sweep of the data sees the same slice, so nothing a seed picks can reach it.
CONFIRM_SEED = 7


def _split(
    encoded: Encoded, rows: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` of the training split cut in two the way ``val_split`` says (whole movies, or
    stratified at random); the second part holds ``fraction`` of them."""
    y = encoded.y_train[rows]
    if encoded.val_split == "movie":
        if encoded.movie_train is None:
            raise ValueError("val_split='movie' needs movie ids")
        kept, held = movie_split_indices(y, encoded.movie_train[rows], fraction, seed)
    else:
        kept, held = split_indices(y, fraction, seed)
    return rows[kept], rows[held]


def confirmation_split(encoded: Encoded, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the training split left for selection, and the confirmation slice
    (``data.confirm_fraction`` of it, whole movies where the data names them): the slice that
    only the confirmation stage scores on, after every choice was made elsewhere."""
    every = np.arange(len(encoded.y_train))
    if not fraction:
        return every, every[:0]
    return _split(encoded, every, fraction, CONFIRM_SEED)


def validation_split(
    encoded: Encoded, val_fraction: float = 0.2, seed: int = 42, confirm_fraction: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation rows of ``encoded``'s training split, the way its resolved
    ``val_split`` says: whole movies (:func:`movie_split_indices`) or :func:`split_indices`.
    With ``confirm_fraction``, both come from what the confirmation slice leaves, validation
    still ``val_fraction`` of the whole split."""
    if not confirm_fraction:
        rows = np.arange(len(encoded.y_train))
        return _split(encoded, rows, val_fraction, seed)
    rest, _ = confirmation_split(encoded, confirm_fraction)
    return _split(encoded, rest, val_fraction / (1.0 - confirm_fraction), seed)


def val_movies(
    encoded: Encoded, val_fraction: float = 0.2, seed: int = 42, confirm_fraction: float = 0.0
) -> int | None:
    """How many movies validation holds (None: the data names no movies)."""
    if encoded.movie_train is None:
        return None
    _, val = validation_split(encoded, val_fraction, seed, confirm_fraction)
    return len(np.unique(encoded.movie_train[val]))
