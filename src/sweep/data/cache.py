"""The on-disk cache of the full encoding: its fingerprint, its file format, read and write.

Why: reading and tokenising 50k reviews takes seconds, a sweep has many trials. The file is a
``.npz`` keyed by a fingerprint of (format, tokeniser, ``num_words``, source identity, and the
n-gram settings when ``data.ngrams`` > 1), written atomically and checksummed, so a stale,
foreign or half-written file is rebuilt, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from sweep.data.encoding import NGRAM_HASH, TOKENIZER_VERSION
from sweep.data.ragged import Ragged
from sweep.errors import first_line

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: movie ids per review
_CACHE_ARRAYS = ("tokens", "offsets", "labels", "split", "movies", "vocabulary", "meta")


class _CacheInvalid(Exception):
    pass


def hash_json(obj: object) -> str:
    """A short, stable fingerprint of JSON-able settings (key order does not matter)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(
    source_identity: dict[str, Any], num_words: int, ngrams: int = 1, buckets: int = 0
) -> str:
    """The cache key of a full encoding: it changes with anything that changes the encoding
    (a word-only encoding's key is the one it had before n-grams existed)."""
    settings: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "tokenizer": TOKENIZER_VERSION,
        "num_words": num_words,
        "source": source_identity,
    }
    if ngrams > 1:
        settings["ngrams"] = {"n": ngrams, "buckets": buckets, "hash": NGRAM_HASH}
    return hash_json(settings)


def file_for(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / f"imdb-{key}.npz"


def new_meta(key: str, num_words: int, source: str, built: dict[str, Any]) -> dict[str, Any]:
    """What a freshly built encoding's cache file says about itself (read back on a hit)."""
    return {
        "format": CACHE_FORMAT,
        "fingerprint": key,
        "num_words": num_words,
        "source": source,
        "tokenizer": TOKENIZER_VERSION,
        "skipped_empty": built["skipped_empty"],
        "skipped_invalid_utf8": built["skipped_invalid_utf8"],
    }


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key in _CACHE_ARRAYS:
        a = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        digest.update(a.data)
    return digest.hexdigest()


def _json_bytes(obj: object) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)


def write(file: Path, built: dict[str, Any], meta: dict[str, Any]) -> None:
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


def read(file: Path, key: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Return (built, meta) if the cache parses, matches the fingerprint and the checksum."""
    if not file.exists():
        return None
    try:
        return _parse(file, key)
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


def _parse(file: Path, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(built, meta) of a cache file; raises when it is unreadable, stale or inconsistent."""
    with np.load(file, allow_pickle=False) as z:
        arrays = {name: z[name] for name in _CACHE_ARRAYS}
        stored = z["checksum"].tobytes().decode("ascii")
    meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
    if meta.get("fingerprint") != key or meta.get("format") != CACHE_FORMAT:
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
    return built, meta
