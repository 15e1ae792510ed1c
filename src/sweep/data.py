"""IMDB data layer: read once, tokenise once, cache, then slice / split / pad cheaply per run.

Why this shape: a sweep runs many trials that differ in ``seq_len`` and friends. Reading and
tokenising 50k reviews takes seconds, so it is done once into an *unpadded* ragged encoding that
is cached on disk under a fingerprint of (source, tokeniser settings). Every trial then limits,
splits and pads from that encoding in milliseconds; nothing is ever re-tokenised for a new
``seq_len``.

Conventions (keras ``imdb`` style): index 0 = padding, 1 = start of review, 2 = out of
vocabulary, words from 3 in order of training-split frequency; every index is ``< num_words``.
Labels: neg = 0, pos = 1.

Movies: the archive's ``aclImdb/{train,test}/urls_{pos,neg}.txt`` name each review's movie (line i
belongs to review ``<i>_<rating>.txt``; ``.../title/tt<digits>/...``). When present, every review
keeps its movie (the ``tt`` number) so validation can hold out whole movies: the training split
has up to 30 reviews per movie, and a random split would validate on movies it trained on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import struct
import tarfile
import tempfile
import time
import zipfile
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from sweep.errors import ConfigError, DataError, first_line

log = logging.getLogger(__name__)

__all__ = [
    "DataError",
    "Encoded",
    "Ragged",
    "load_encoded",
    "movie_split_indices",
    "pad",
    "split_indices",
    "tokenize",
    "validation_split",
]

PAD, START, OOV, INDEX_FROM = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<start>", "<oov>")
TOKENIZER_VERSION = "imdb-words-v1"  # bump when tokenise()/encoding changes: invalidates caches
CACHE_FORMAT = 2  # 2: movie ids per review
KERAS_SOURCE = "keras.datasets.imdb"
SOURCES = ("auto", "files", "keras")
VAL_SPLITS = ("auto", "movie", "random")
SPLIT_NAMES = ("train", "test")
LABEL_NAMES = ("neg", "pos")

_MEMBER_RE = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg)/([^/]+\.txt)$")
_LINKS_RE = re.compile(r"^(?:\./)?aclImdb/(train|test)/urls_(pos|neg)\.txt$")
_MOVIE_RE = re.compile(rb"/title/tt(\d+)")
_NO_MOVIE = -1
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_PATH_HINT = "pass data.path=/path/to/aclImdb_v1.tar.gz (or an extracted aclImdb/ directory)"
_LAYOUT = "aclImdb/{train,test}/{pos,neg}/*.txt"


# --------------------------------------------------------------------------------------------
# Ragged sequences
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Ragged:
    """Variable-length int sequences as one flat array plus offsets (fast to slice and pad).

    Sequence ``i`` is ``values[offsets[i]:offsets[i + 1]]``.
    """

    values: np.ndarray  # int32 (total,)
    offsets: np.ndarray  # int64 (n + 1,), offsets[0] == 0

    def __post_init__(self) -> None:
        values = np.ascontiguousarray(self.values, dtype=np.int32)
        offsets = np.ascontiguousarray(self.offsets, dtype=np.int64)
        if values.ndim != 1 or offsets.ndim != 1 or len(offsets) == 0:
            raise ValueError("Ragged needs 1-d values and non-empty 1-d offsets")
        if offsets[0] != 0 or offsets[-1] != len(values):
            raise ValueError("Ragged offsets must start at 0 and end at len(values)")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "offsets", offsets)

    @classmethod
    def from_sequences(cls, sequences: Sequence[Sequence[int]] | Ragged) -> Ragged:
        """Build from a list of lists / arrays (e.g. keras-style data)."""
        if isinstance(sequences, Ragged):
            return sequences
        seqs = [np.asarray(s, dtype=np.int32).reshape(-1) for s in sequences]
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        if seqs:
            np.cumsum([len(s) for s in seqs], out=offsets[1:])
        values = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int32)
        return cls(values, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} sequences")
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.values[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def truncate(self, seq_len: int, side: str = "pre") -> Ragged:
        """Each sequence cut to its last (`pre`) or first (`post`) `seq_len` values."""
        lengths = self.lengths
        kept = np.minimum(lengths, seq_len)
        start = self.offsets[:-1] + (lengths - kept if side == "pre" else 0)
        offsets = np.zeros(len(kept) + 1, dtype=np.int64)
        np.cumsum(kept, out=offsets[1:])
        gather = np.arange(offsets[-1], dtype=np.int64) + np.repeat(start - offsets[:-1], kept)
        return Ragged(self.values[gather], offsets)

    def take(self, indices: np.ndarray | Sequence[int]) -> Ragged:
        """Select sequences by index (vectorised gather, order as given)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        lengths = self.lengths[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        shift = np.repeat(self.offsets[:-1][idx] - offsets[:-1], lengths)
        gather = np.arange(offsets[-1], dtype=np.int64) + shift
        return Ragged(self.values[gather], offsets)

    def tolist(self) -> list[list[int]]:
        return [seq.tolist() for seq in self]


# --------------------------------------------------------------------------------------------
# Public data containers
# --------------------------------------------------------------------------------------------


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
        return {w: i for i, w in enumerate(self.vocabulary) if i >= INDEX_FROM}

    def decode(self, sequence: Sequence[int]) -> str:
        """Turn indices back into text (debugging / sanity checks)."""
        vocab = self.vocabulary
        return " ".join(vocab[i] if 0 <= i < len(vocab) else "<oov>" for i in map(int, sequence))


# --------------------------------------------------------------------------------------------
# Tokenising and encoding
# --------------------------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens; ``<br />`` counts as whitespace. Kept simple and fast."""
    return _TOKEN_RE.findall(text.lower().replace("<br />", " "))


class _AutoIds(dict):
    """word -> provisional id, assigned on first sight (C-speed lookups for known words)."""

    def __missing__(self, key: str) -> int:
        value = self[key] = len(self)
        return value


class _Review(NamedTuple):
    split: int  # 0 train, 1 test
    label: int  # 0 neg, 1 pos
    name: str
    text: str
    movie: int = _NO_MOVIE


def _encode(reviews: list[_Review], num_words: int) -> tuple[Ragged, list[str]]:
    """Tokenise every review once; vocabulary from the training split only.

    Words get provisional ids while scanning; training counts come from ``np.bincount`` and a
    remap table turns provisional ids into final ones, so no token strings are kept around.
    """
    ids = _AutoIds()
    get_id = ids.__getitem__
    flat = array("i")
    lengths = np.empty(len(reviews), dtype=np.int64)
    n_train = 0
    for i, review in enumerate(reviews):
        tokens = _TOKEN_RE.findall(review.text.lower().replace("<br />", " "))
        flat.extend(map(get_id, tokens))
        lengths[i] = len(tokens)
        n_train += review.split == 0
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

    offsets = np.zeros(len(reviews) + 1, dtype=np.int64)
    np.cumsum(lengths + 1, out=offsets[1:])
    values = np.empty(offsets[-1], dtype=np.int32)
    is_word = np.ones(offsets[-1], dtype=bool)
    is_word[offsets[:-1]] = False
    values[~is_word] = START
    values[is_word] = remap[provisional]
    return Ragged(values, offsets), vocabulary


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def _sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _describe(raw: str | os.PathLike, resolved: Path) -> str:
    shown = os.fspath(raw)
    return f"data.path={shown}" + ("" if shown == str(resolved) else f" ({resolved})")


class _FileSource:
    """An aclImdb archive (.tar.gz, streamed) or an extracted directory."""

    def __init__(self, raw_path: str | os.PathLike) -> None:
        self.path = Path(os.path.expanduser(os.fspath(raw_path))).resolve()
        self.label = _describe(raw_path, self.path)
        if not self.path.exists():
            raise DataError(f"{self.label} does not exist; {_PATH_HINT}")
        self.is_dir = self.path.is_dir()
        self.description = f"{'dir' if self.is_dir else 'archive'}:{self.path}"
        self._entries: list[tuple[int, int, str, str, int, int]] | None = None

    def _root(self) -> Path:
        nested = self.path / "aclImdb"
        return nested if nested.is_dir() else self.path

    def _scan(self) -> list[tuple[int, int, str, str, int, int]]:
        """(split, label, name, full path, size, mtime_ns) of every review file, sorted."""
        if self._entries is None:
            root = self._root()
            entries = []
            for s, split in enumerate(SPLIT_NAMES):
                for c, cls in enumerate(LABEL_NAMES):
                    folder = root / split / cls
                    if not folder.is_dir():
                        continue
                    with os.scandir(folder) as it:
                        for entry in it:
                            if entry.name.endswith(".txt") and entry.is_file():
                                st = entry.stat()
                                entries.append(
                                    (s, c, entry.name, entry.path, st.st_size, st.st_mtime_ns)
                                )
            entries.sort()
            self._entries = entries
        return self._entries

    def _link_files(self) -> dict[tuple[int, int], Path]:
        """(split, label) -> the movie-links file of a directory, where one exists."""
        root = self._root()
        files = {
            (s, c): root / split / f"urls_{cls}.txt"
            for s, split in enumerate(SPLIT_NAMES)
            for c, cls in enumerate(LABEL_NAMES)
        }
        return {key: file for key, file in files.items() if file.is_file()}

    def identity(self) -> dict[str, Any]:
        """Content sha256 for an archive (~0.1 s); names, sizes and mtimes for a directory."""
        if not self.is_dir:
            return {"kind": "archive", "sha256": _sha256_file(self.path)}
        listing = "".join(
            f"{SPLIT_NAMES[s]}/{LABEL_NAMES[c]}/{name}\t{size}\t{mtime}\n"
            for s, c, name, _, size, mtime in self._scan()
        ) + "".join(
            f"{file}\t{file.stat().st_size}\t{file.stat().st_mtime_ns}\n"
            for file in self._link_files().values()
        )
        digest = hashlib.sha256(listing.encode())
        return {"kind": "dir", "files_sha256": digest.hexdigest()}

    def _raw_reviews(
        self,
    ) -> tuple[list[tuple[int, int, str, bytes]], dict[tuple[int, int], tuple[str, bytes]]]:
        """(split, label, name, bytes) of every review, sorted; and the movie-links files found,
        (split, label) -> (name to show, bytes)."""
        if self.is_dir:
            try:
                raw = [(s, c, name, _read_bytes(p)) for s, c, name, p, _, _ in self._scan()]
                links = {k: (str(f), f.read_bytes()) for k, f in self._link_files().items()}
            except OSError as e:
                raise DataError(f"{self.label}: cannot read reviews: {first_line(e)}") from e
            return raw, links
        raw, links = [], {}
        try:
            with tarfile.open(self.path, "r:gz") as tf:
                for member in tf:
                    m = _MEMBER_RE.match(member.name)
                    link = _LINKS_RE.match(member.name) if m is None else None
                    if (m is None and link is None) or not member.isfile():
                        continue
                    f = tf.extractfile(member)
                    if f is None:
                        continue
                    if link is not None:
                        key = (SPLIT_NAMES.index(link[1]), LABEL_NAMES.index(link[2]))
                        links[key] = (f"aclImdb/{link[1]}/urls_{link[2]}.txt", f.read())
                        continue
                    raw.append(
                        (
                            SPLIT_NAMES.index(m.group(1)),
                            LABEL_NAMES.index(m.group(2)),
                            m.group(3),
                            f.read(),
                        )
                    )
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise DataError(
                f"{self.label}: cannot read the archive (truncated or corrupt?): {first_line(e)}"
            ) from e
        raw.sort(key=lambda r: r[:3])
        return raw, links

    def _movies(
        self,
        raw: list[tuple[int, int, str, bytes]],
        links: dict[tuple[int, int], tuple[str, bytes]],
    ) -> list[int]:
        """Each review's movie (its ``tt`` number), or _NO_MOVIE for a split without links."""
        movies = [_NO_MOVIE] * len(raw)
        for s, split in enumerate(SPLIT_NAMES):
            found = [c for c in range(len(LABEL_NAMES)) if (s, c) in links]
            if len(found) == 1:
                missing = f"aclImdb/{split}/urls_{LABEL_NAMES[1 - found[0]]}.txt"
                raise DataError(f"{self.label}: {links[s, found[0]][0]} has no partner {missing}")
            for c in found:
                where, text = links[s, c]
                lines = text.splitlines()
                rows = [i for i, r in enumerate(raw) if r[:2] == (s, c)]
                if len(lines) != len(rows):
                    raise DataError(
                        f"{self.label}: {where} has {len(lines)} lines but "
                        f"aclImdb/{split}/{LABEL_NAMES[c]}/ holds {len(rows)} reviews "
                        "(line i names the movie of review <i>_<rating>.txt)"
                    )
                for i in rows:
                    name = raw[i][2]
                    number = name.split("_", 1)[0]
                    line = int(number) if number.isdigit() else len(lines)
                    found_movie = _MOVIE_RE.search(lines[line]) if line < len(lines) else None
                    if found_movie is None:
                        raise DataError(
                            f"{self.label}: {where} names no movie (.../title/tt<digits>/...) "
                            f"for review {split}/{LABEL_NAMES[c]}/{name}"
                        )
                    movies[i] = int(found_movie[1])
        return movies

    def build(self, num_words: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        reviews: list[_Review] = []
        empty = invalid = 0
        raw, links = self._raw_reviews()
        movies = self._movies(raw, links)
        for (s, c, name, data), movie in zip(raw, movies, strict=True):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                invalid += 1
                continue
            if not text.strip():
                empty += 1
                continue
            reviews.append(_Review(s, c, name, text, movie))
        if empty or invalid:
            log.warning("%s: skipped %d empty and %d non-UTF-8 reviews", self.label, empty, invalid)
        for s, split in enumerate(SPLIT_NAMES):
            per_class = [sum(r.split == s and r.label == c for r in reviews) for c in (0, 1)]
            if sum(per_class) == 0:
                raise DataError(
                    f"{self.label}: no {split} reviews found (expected {_LAYOUT}); {_PATH_HINT}"
                )
            if min(per_class) == 0:
                raise DataError(
                    f"{self.label}: the {split} split has only one class "
                    f"({per_class[0]} neg, {per_class[1]} pos reviews); it needs both pos/ and neg/"
                )
        t1 = time.perf_counter()
        sequences, vocabulary = _encode(reviews, num_words)
        log.info(
            "read %d reviews from %s in %.2f s, tokenised in %.2f s",
            len(reviews),
            self.label,
            t1 - t0,
            time.perf_counter() - t1,
        )
        return {
            "sequences": sequences,
            "labels": np.array([r.label for r in reviews], dtype=np.int8),
            "split": np.array([r.split for r in reviews], dtype=np.uint8),
            "movies": np.array([r.movie for r in reviews], dtype=np.int64),
            "vocabulary": vocabulary,
            "skipped_empty": empty,
            "skipped_invalid_utf8": invalid,
        }


def _keras_imdb_load(num_words: int) -> tuple[Any, Any, Any, Any, dict[str, int]]:
    """keras.datasets.imdb (downloads to the keras cache); patched out in tests."""
    from keras.datasets import imdb  # lazy: importing keras costs seconds

    (x_train, y_train), (x_test, y_test) = imdb.load_data(
        num_words=num_words, start_char=START, oov_char=OOV, index_from=INDEX_FROM
    )
    return x_train, y_train, x_test, y_test, imdb.get_word_index()


class _KerasSource:
    description = KERAS_SOURCE
    label = KERAS_SOURCE

    def __init__(self, auto: bool) -> None:
        self.auto = auto

    def identity(self) -> dict[str, Any]:
        return {"kind": "keras", "name": KERAS_SOURCE}

    def build(self, num_words: int) -> dict[str, Any]:
        try:
            x_train, y_train, x_test, y_test, word_index = _keras_imdb_load(num_words)
        except Exception as e:  # import error, no internet, bad download: all user-fixable
            reason = first_line(e)
            if self.auto:
                raise DataError(
                    f"no IMDB data: {_PATH_HINT}, or allow {KERAS_SOURCE} to download it "
                    f"(needs internet): {reason}"
                ) from e
            raise DataError(
                f"{KERAS_SOURCE} could not load IMDB (needs internet or a keras cache); "
                f"or use data.source=files and {_PATH_HINT}: {reason}"
            ) from e
        parts, labels, split = [], [], []
        for s, (xs, ys) in enumerate(((x_train, y_train), (x_test, y_test))):
            ys = np.asarray(ys, dtype=np.int8).reshape(-1)
            order = np.argsort(ys, kind="stable")  # (split, label) order like the file source
            parts.extend(xs[i] for i in order)
            labels.append(ys[order])
            split.append(np.full(len(ys), s, dtype=np.uint8))
        vocabulary = [*SPECIAL_TOKENS, *(["<unused>"] * (num_words - len(SPECIAL_TOKENS)))]
        for word, rank in word_index.items():
            if 0 <= rank + INDEX_FROM < num_words:
                vocabulary[rank + INDEX_FROM] = word
        sequences = Ragged.from_sequences(parts)
        if len(sequences.values) and int(sequences.values.max()) >= num_words:
            raise DataError(f"{KERAS_SOURCE} returned indices >= num_words={num_words}")
        return {
            "sequences": sequences,
            "labels": np.concatenate(labels),
            "split": np.concatenate(split),
            "movies": np.full(len(sequences), _NO_MOVIE, dtype=np.int64),  # keras has no links
            "vocabulary": vocabulary,
            "skipped_empty": 0,
            "skipped_invalid_utf8": 0,
        }


def _resolve_source(source: str, path: str | os.PathLike | None) -> _FileSource | _KerasSource:
    if source not in SOURCES:
        raise ValueError(f"data.source={source!r} is not one of {', '.join(SOURCES)}")
    if source == "keras":
        if path is not None:
            log.warning("data.source=keras ignores data.path=%s", path)
        return _KerasSource(auto=False)
    if path is not None and os.fspath(path) != "":
        return _FileSource(path)
    if source == "files":
        raise DataError(f"data.source=files needs a path: {_PATH_HINT}")
    return _KerasSource(auto=True)


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------

_CACHE_ARRAYS = ("tokens", "offsets", "labels", "split", "movies", "vocabulary", "meta")


class _CacheInvalid(Exception):
    pass


def _hash_json(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in _CACHE_ARRAYS:
        a = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        digest.update(a.data)
    return digest.hexdigest()


def _json_bytes(obj: object) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)


def _write_cache(file: Path, built: dict[str, Any], meta: dict[str, Any]) -> None:
    """Atomic write: temp file in the same directory, fsync, os.replace."""
    seqs: Ragged = built["sequences"]
    arrays = {
        "tokens": seqs.values.astype("<i4", copy=False),
        "offsets": seqs.offsets.astype("<i8", copy=False),
        "labels": built["labels"].astype("i1", copy=False),
        "split": built["split"].astype("u1", copy=False),
        "movies": built["movies"].astype("<i8", copy=False),
        "vocabulary": _json_bytes(built["vocabulary"]),
        "meta": _json_bytes(meta),
    }
    checksum = np.frombuffer(_checksum(arrays).encode(), dtype=np.uint8)
    tmp_name = None
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=file.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, checksum=checksum, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, file)
        tmp_name = None
        log.info("cached encoded IMDB data at %s", file)
    except OSError as e:
        log.warning("could not write data cache %s (continuing without it): %s", file, e)
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def _read_cache(file: Path, fingerprint: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Return (built, meta) if the cache parses, matches the fingerprint and the checksum."""
    if not file.exists():
        return None
    try:
        with np.load(file, allow_pickle=False) as z:
            arrays = {key: z[key] for key in _CACHE_ARRAYS}
            stored = z["checksum"].tobytes().decode("ascii")
        meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
        if meta.get("fingerprint") != fingerprint or meta.get("format") != CACHE_FORMAT:
            raise _CacheInvalid("fingerprint mismatch")
        if _checksum(arrays) != stored:
            raise _CacheInvalid("checksum mismatch")
        vocabulary = json.loads(arrays["vocabulary"].tobytes().decode("utf-8"))
        built = {
            "sequences": Ragged(arrays["tokens"], arrays["offsets"]),
            "labels": arrays["labels"],
            "split": arrays["split"],
            "movies": arrays["movies"],
            "vocabulary": vocabulary,
            "skipped_empty": int(meta["skipped_empty"]),
            "skipped_invalid_utf8": int(meta["skipped_invalid_utf8"]),
        }
        if len({len(built[k]) for k in ("sequences", "labels", "split", "movies")}) != 1:
            raise _CacheInvalid("inconsistent array sizes")
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        EOFError,
        zipfile.BadZipFile,
        struct.error,
        zlib.error,
        _CacheInvalid,
    ) as e:
        log.warning("cache %s is corrupt/stale (%s), rebuilding", file, first_line(e))
        return None
    return built, meta


def _to_encoded(built: dict[str, Any], meta: dict[str, Any], from_cache: bool) -> Encoded:
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
        movie_train=movie_train if np.all(movie_train != _NO_MOVIE) else None,
        movie_test=movie_test if np.all(movie_test != _NO_MOVIE) else None,
    )


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


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


def _apply_limit(enc: Encoded, limit: int, seed: int) -> Encoded:
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
        fingerprint=_hash_json(key),
        limit=limit,
    )


def _val_split_kind(val_split: str, movies: np.ndarray | None, label: str) -> str:
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


def load_encoded(
    source: str = "auto",
    path: str | os.PathLike | None = None,
    num_words: int = 20000,
    cache_dir: str | os.PathLike = ".cache/data",
    limit: int | None = None,
    seed: int = 42,
    val_split: str = "auto",
) -> Encoded:
    """Load the tokenised, unpadded IMDB data, from the on-disk cache when it is valid.

    Call once per sweep; pad per trial with :func:`pad`. ``limit`` takes a stratified,
    seeded sample of ``limit`` reviews per split from the full (cached) data (whole movies
    when validating by movie); the vocabulary stays the one built from the full training split.
    ``val_split`` (auto | movie | random) is resolved here, once: ``Encoded.val_split`` says
    which :func:`validation_split` uses; "movie" without movie links is a ConfigError.
    """
    if isinstance(num_words, bool) or not isinstance(num_words, int) or num_words <= INDEX_FROM:
        raise ValueError(f"data.num_words={num_words!r} must be an int > {INDEX_FROM}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 2):
        raise ValueError(f"data.limit={limit!r} must be None or an int >= 2")
    src = _resolve_source(source, path)
    kind = _val_split_kind(val_split, None, src.label) if isinstance(src, _KerasSource) else None
    fingerprint = _hash_json(
        {
            "format": CACHE_FORMAT,
            "tokenizer": TOKENIZER_VERSION,
            "num_words": num_words,
            "source": src.identity(),
        }
    )
    cache_file = Path(cache_dir) / f"imdb-{fingerprint}.npz"
    t0 = time.perf_counter()
    cached = _read_cache(cache_file, fingerprint)
    if cached is not None:
        built, meta = cached
        encoded = _to_encoded(built, meta, from_cache=True)
        seconds = time.perf_counter() - t0
        log.info("loaded %s from cache %s in %.2f s", src.label, cache_file, seconds)
    else:
        built = src.build(num_words)
        meta = {
            "format": CACHE_FORMAT,
            "fingerprint": fingerprint,
            "num_words": num_words,
            "source": src.description,
            "tokenizer": TOKENIZER_VERSION,
            "skipped_empty": built["skipped_empty"],
            "skipped_invalid_utf8": built["skipped_invalid_utf8"],
        }
        encoded = _to_encoded(built, meta, from_cache=False)
        _write_cache(cache_file, built, meta)
    kind = kind or _val_split_kind(val_split, encoded.movie_train, src.label)
    encoded = dataclasses.replace(encoded, val_split=kind)
    if limit is not None:
        encoded = _apply_limit(encoded, limit, seed)
    return encoded


def pad(
    sequences: Ragged | Sequence[Sequence[int]],
    seq_len: int,
    padding: str = "pre",
    truncating: str = "pre",
) -> np.ndarray:
    """Pad/truncate to ``(n, seq_len)`` int32 like ``keras.utils.pad_sequences`` (value 0).

    Vectorised over the ragged representation, so re-padding 25k reviews per trial is cheap.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len <= 0:
        raise ValueError(f"seq_len={seq_len!r} must be a positive int")
    if padding not in ("pre", "post"):
        raise ValueError(f"padding={padding!r} must be 'pre' or 'post'")
    if truncating not in ("pre", "post"):
        raise ValueError(f"truncating={truncating!r} must be 'pre' or 'post'")
    seq_len = int(seq_len)
    ragged = Ragged.from_sequences(sequences).truncate(seq_len, truncating)
    kept, n = ragged.lengths, len(ragged)
    out = np.zeros((n, seq_len), dtype=np.int32)
    dst_start = np.arange(n, dtype=np.int64) * seq_len + (seq_len - kept if padding == "pre" else 0)
    within = np.arange(len(ragged.values), dtype=np.int64) - np.repeat(ragged.offsets[:-1], kept)
    out.reshape(-1)[np.repeat(dst_start, kept) + within] = ragged.values
    return out


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


def validation_split(
    encoded: Encoded, val_fraction: float = 0.2, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation rows of ``encoded``'s training split, the way its resolved
    ``val_split`` says: whole movies (:func:`movie_split_indices`) or :func:`split_indices`."""
    if encoded.val_split == "movie":
        if encoded.movie_train is None:
            raise ValueError("val_split='movie' needs movie ids")
        return movie_split_indices(encoded.y_train, encoded.movie_train, val_fraction, seed)
    return split_indices(encoded.y_train, val_fraction, seed)


def val_movies(encoded: Encoded, val_fraction: float = 0.2, seed: int = 42) -> int | None:
    """How many movies validation holds (None: the data names no movies)."""
    if encoded.movie_train is None:
        return None
    _, val = validation_split(encoded, val_fraction, seed)
    return len(np.unique(encoded.movie_train[val]))
