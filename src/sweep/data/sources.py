"""Where the reviews come from: an aclImdb archive or directory, or ``keras.datasets.imdb``.

Each source names itself for the cache fingerprint (:meth:`identity`) and builds the full
encoding (:meth:`build`): sequences, labels, split and movie per review, train before test.

Movies: the archive's ``aclImdb/{train,test}/urls_{pos,neg}.txt`` name each review's movie (line i
belongs to review ``<i>_<rating>.txt``; ``.../title/tt<digits>/...``). When present, every review
keeps its movie (the ``tt`` number) so validation can hold out whole movies: the training split
has up to 30 reviews per movie, and a random split would validate on movies it trained on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tarfile
import time
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from sweep.data import encoding
from sweep.data.encoding import INDEX_FROM, LABEL_NAMES, OOV, SPECIAL_TOKENS, START
from sweep.data.ragged import Ragged
from sweep.errors import DataError, first_line

log = logging.getLogger(__name__)

KERAS_SOURCE = "keras.datasets.imdb"
SOURCES = ("auto", "files", "keras")
SPLIT_NAMES = ("train", "test")
NO_MOVIE = -1  # the movie of a review whose split has no links file

_MEMBER_RE = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg)/([^/]+\.txt)$")
_LINKS_RE = re.compile(r"^(?:\./)?aclImdb/(train|test)/urls_(pos|neg)\.txt$")
_MOVIE_RE = re.compile(rb"/title/tt(\d+)")
_PATH_HINT = "pass data.path=/path/to/aclImdb_v1.tar.gz (or an extracted aclImdb/ directory)"
_LAYOUT = "aclImdb/{train,test}/{pos,neg}/*.txt"

_Entry = tuple[int, int, str, str, int, int]  # split, label, name, full path, size, mtime_ns
_Raw = tuple[int, int, str, bytes]  # split, label, name, bytes
_Links = dict[tuple[int, int], tuple[str, bytes]]  # (split, label) -> (name to show, bytes)


class _Review(NamedTuple):
    split: int  # 0 train, 1 test
    label: int  # 0 neg, 1 pos
    name: str
    text: str
    movie: int = NO_MOVIE


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


class FileSource:
    """An aclImdb archive (.tar.gz, streamed) or an extracted directory."""

    def __init__(self, raw_path: str | os.PathLike) -> None:
        self.path = Path(os.path.expanduser(os.fspath(raw_path))).resolve()
        self.label = _describe(raw_path, self.path)
        if not self.path.exists():
            raise DataError(f"{self.label} does not exist; {_PATH_HINT}")
        self.is_dir = self.path.is_dir()
        self.description = f"{'dir' if self.is_dir else 'archive'}:{self.path}"
        self._entries: list[_Entry] | None = None

    def _root(self) -> Path:
        nested = self.path / "aclImdb"
        return nested if nested.is_dir() else self.path

    def _scan(self) -> list[_Entry]:
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

    def _read_directory(self) -> tuple[list[_Raw], _Links]:
        try:
            raw = [(s, c, name, _read_bytes(p)) for s, c, name, p, _, _ in self._scan()]
            links = {k: (str(f), f.read_bytes()) for k, f in self._link_files().items()}
        except OSError as e:
            raise DataError(f"{self.label}: cannot read reviews: {first_line(e)}") from e
        return raw, links

    def _read_archive(self) -> tuple[list[_Raw], _Links]:
        """One streaming pass over the .tar.gz: reviews and movie-links files as they come."""
        raw: list[_Raw] = []
        links: _Links = {}
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
                    split, label = SPLIT_NAMES.index(m[1]), LABEL_NAMES.index(m[2])
                    raw.append((split, label, m[3], f.read()))
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise DataError(
                f"{self.label}: cannot read the archive (truncated or corrupt?): {first_line(e)}"
            ) from e
        raw.sort(key=lambda r: r[:3])
        return raw, links

    def _movies(self, raw: list[_Raw], links: _Links) -> list[int]:
        """Each review's movie (its ``tt`` number), or NO_MOVIE for a split without links."""
        movies = [NO_MOVIE] * len(raw)
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

    def _reviews(self) -> tuple[list[_Review], int, int]:
        """The decoded, non-empty reviews with their movies; and how many were empty / not UTF-8."""
        reviews: list[_Review] = []
        empty = invalid = 0
        raw, links = self._read_directory() if self.is_dir else self._read_archive()
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
        return reviews, empty, invalid

    def _check_both_classes(self, reviews: list[_Review]) -> None:
        """Each split needs pos and neg reviews: the usual sign of a wrong path or layout."""
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

    def build(self, num_words: int) -> dict[str, Any]:
        """Read, check and tokenise every review: the full encoding the cache keeps."""
        t0 = time.perf_counter()
        reviews, empty, invalid = self._reviews()
        self._check_both_classes(reviews)
        t1 = time.perf_counter()
        n_train = sum(r.split == 0 for r in reviews)  # reviews are sorted: train first
        sequences, vocabulary = encoding.encode([r.text for r in reviews], n_train, num_words)
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


class KerasSource:
    """``keras.datasets.imdb``: tokenised by keras, with its own vocabulary and no movies."""

    description = KERAS_SOURCE
    label = KERAS_SOURCE

    def __init__(self, auto: bool) -> None:
        self.auto = auto

    def identity(self) -> dict[str, Any]:
        return {"kind": "keras", "name": KERAS_SOURCE}

    def _load(self, num_words: int) -> tuple[Any, Any, Any, Any, dict[str, int]]:
        """keras' arrays, or a DataError naming the fix that fits how the source was chosen."""
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
        return x_train, y_train, x_test, y_test, word_index

    def build(self, num_words: int) -> dict[str, Any]:
        """keras' sequences in (split, label) order like the file source, and its vocabulary."""
        x_train, y_train, x_test, y_test, word_index = self._load(num_words)
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
            "movies": np.full(len(sequences), NO_MOVIE, dtype=np.int64),  # keras has no links
            "vocabulary": vocabulary,
            "skipped_empty": 0,
            "skipped_invalid_utf8": 0,
        }


def resolve_source(source: str, path: str | os.PathLike | None) -> FileSource | KerasSource:
    """``data.source`` and ``data.path`` to one source: a path wins under "auto", else keras."""
    if source not in SOURCES:
        raise ValueError(f"data.source={source!r} is not one of {', '.join(SOURCES)}")
    if source == "keras":
        if path is not None:
            log.warning("data.source=keras ignores data.path=%s", path)
        return KerasSource(auto=False)
    if path is not None and os.fspath(path) != "":
        return FileSource(path)
    if source == "files":
        raise DataError(f"data.source=files needs a path: {_PATH_HINT}")
    return KerasSource(auto=True)
