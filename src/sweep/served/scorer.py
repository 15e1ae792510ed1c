"""The served model's work: review text to the harness's own token ids, then P(positive).

Shipped with every logged model as part of the package `attention_sweep_served` (see
`sweep.served`), so it imports nothing from `sweep` but the modules shipped beside it, and
those relatively. The ids are the harness's by construction: the same `tokenize`, vocabulary
and `pad` that made the training data, cut and padded as the run's batches were, and the same
n-gram hash (`with_ngrams`) over the whole review before it is cut, as the data cache did.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from ..data.encoding import LABEL_NAMES, encode_texts, with_ngrams, word_index
from ..data.ragged import pad
from ..layers import NgramEmbedding, SelfAttention

#: The model's artifacts: the trained Keras classifier and its `Preprocessing`.
CLASSIFIER, PREPROCESSING = "classifier", "preprocessing"
#: Reviews per forward pass: a request's memory stays bounded (attention is quadratic).
BATCH = 64
#: The narrowest bucketed input: one token (an empty review) would be a softmax over one key,
#: which Keras warns about; a masked pad beside it changes nothing.
MIN_WIDTH = 2


@dataclass(frozen=True)
class Preprocessing:
    """How the run turned a review into the classifier's input; the served model repeats it."""

    vocabulary: list[str]  # index -> word, the reserved ids first (`data.encoding`)
    seq_len: int
    padding: str = "pre"
    truncating: str = "pre"
    ngrams: int = 1  # > 1: each word's hashed n-gram ids beside it (`data.encoding.with_ngrams`)
    ngram_buckets: int = 0

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: str | Path) -> Preprocessing:
        return cls(**json.loads(Path(path).read_text()))


class Scorer:
    """A trained classifier and its preprocessing: raw reviews in, P(pos) and label out."""

    def __init__(self, classifier: keras.Model, preprocessing: Preprocessing) -> None:
        self.classifier, self.preprocessing = classifier, preprocessing
        self._index = word_index(preprocessing.vocabulary)
        # seq_len for a model trained on fixed batches; None for bucketed ones (any length)
        self._width: int | None = classifier.input_shape[1]

    @classmethod
    def from_artifacts(cls, artifacts: Mapping[str, str], member: int = 0) -> Scorer:
        """The scorer of a logged model (or of its `member`th), from its artifacts' paths."""
        layers = {keras.saving.get_registered_name(c): c for c in (SelfAttention, NgramEmbedding)}
        classifier = keras.saving.load_model(
            artifacts[artifact(CLASSIFIER, member)], custom_objects=layers, compile=False
        )
        return cls(classifier, Preprocessing.load(artifacts[artifact(PREPROCESSING, member)]))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """The classifier's input: each review's ids cut to `seq_len` and padded as in training,
        to `seq_len` (fixed batches) or to the longest review (bucketed: masking makes the
        padding irrelevant, and a short request costs no `seq_len`² attention)."""
        p = self.preprocessing
        ids = with_ngrams(encode_texts(texts, self._index), p.ngrams, p.ngram_buckets)
        width = self._width or min(p.seq_len, max(MIN_WIDTH, int(ids.lengths.max(initial=1))))
        return pad(ids, width, p.padding, p.truncating)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """The classifier's softmax, (reviews, 2), in chunks of BATCH reviews."""
        parts = [np.zeros((0, len(LABEL_NAMES)), np.float32)]
        for start in range(0, len(texts), BATCH):
            x = self.encode(texts[start : start + BATCH])
            # Keras's compiled predict step: ~1-2 ms for two reviews, where an eager call is ~7
            parts.append(np.asarray(self.classifier.predict_on_batch(x)))
        return np.concatenate(parts)

    def predict(self, texts: Sequence[str]) -> list[tuple[float, str]]:
        """Per review: P(pos), and the label the harness's accuracy counts (the argmax)."""
        return answers(self.probabilities(texts))


class Ensemble:
    """Scorers whose probabilities are averaged (`export.ensemble`); each member reads a
    review its own way (its vocabulary, `seq_len`, n-grams)."""

    def __init__(self, members: Sequence[Scorer]) -> None:
        self.members = list(members)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return np.mean([m.probabilities(texts) for m in self.members], axis=0)

    def predict(self, texts: Sequence[str]) -> list[tuple[float, str]]:
        return answers(self.probabilities(texts))


def artifact(name: str, member: int) -> str:
    """The artifact key of an ensemble's `member`th classifier or preprocessing (the first's
    keys are a single model's, so one model is an ensemble of one)."""
    return name if member == 0 else f"{name}_{member}"


def load(artifacts: Mapping[str, str]) -> Scorer | Ensemble:
    """A logged model's scorer: one classifier, or the average of several."""
    count = sum(1 for key in artifacts if key.split("_")[0] == CLASSIFIER)
    if count == 1:
        return Scorer.from_artifacts(artifacts)
    return Ensemble([Scorer.from_artifacts(artifacts, m) for m in range(count)])


def answers(probabilities: np.ndarray) -> list[tuple[float, str]]:
    """Per review: P(pos), and the label the harness's accuracy counts (the argmax)."""
    labels = [LABEL_NAMES[i] for i in probabilities.argmax(axis=1)]
    return list(zip(probabilities[:, 1].tolist(), labels, strict=True))
