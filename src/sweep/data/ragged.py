"""Variable-length token sequences kept flat (:class:`Ragged`), and padding them to a batch shape.

Why flat: slicing, gathering and padding 25k reviews per trial are then a few vectorised numpy
calls instead of a Python loop over lists.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Ragged:
    """Variable-length int sequences as one flat array plus offsets (fast to slice and pad).

    Sequence ``i`` is ``values[offsets[i]:offsets[i + 1]]``. Each position may carry several
    ids (values of shape ``(total, k)``: a word and its n-grams), which travel together.
    """

    values: np.ndarray  # int32 (total,) or (total, k)
    offsets: np.ndarray  # int64 (n + 1,), offsets[0] == 0

    def __post_init__(self) -> None:
        values = np.ascontiguousarray(self.values, dtype=np.int32)
        offsets = np.ascontiguousarray(self.offsets, dtype=np.int64)
        if values.ndim not in (1, 2) or offsets.ndim != 1 or len(offsets) == 0:
            raise ValueError("Ragged needs 1-d or 2-d values and non-empty 1-d offsets")
        if offsets[0] != 0 or offsets[-1] != len(values):
            raise ValueError("Ragged offsets must start at 0 and end at len(values)")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "offsets", offsets)

    @classmethod
    def from_sequences(cls, sequences: Sequence[Sequence[int]] | Ragged) -> Ragged:
        """Build from a list of lists / arrays (e.g. keras-style data); 2-d arrays (a row of
        ids a position, as a Ragged of them yields) keep their rows."""
        if isinstance(sequences, Ragged):
            return sequences
        seqs = [np.asarray(s, dtype=np.int32) for s in sequences]
        seqs = [s if s.ndim == 2 else s.reshape(-1) for s in seqs]
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


def pad(
    sequences: Ragged | Sequence[Sequence[int]],
    seq_len: int,
    padding: str = "pre",
    truncating: str = "pre",
) -> np.ndarray:
    """Pad/truncate to ``(n, seq_len)`` int32 like ``keras.utils.pad_sequences`` (value 0);
    ``(n, seq_len, k)`` for sequences of k ids a position.

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
    per_position = ragged.values.shape[1:]
    out = np.zeros((n, seq_len, *per_position), dtype=np.int32)
    dst_start = np.arange(n, dtype=np.int64) * seq_len + (seq_len - kept if padding == "pre" else 0)
    within = np.arange(len(ragged.values), dtype=np.int64) - np.repeat(ragged.offsets[:-1], kept)
    out.reshape(n * seq_len, *per_position)[np.repeat(dst_start, kept) + within] = ragged.values
    return out
