"""The served model as MLflow builds it (models from code): review text in, P(positive) out.

MLflow copies this file into every logged model and runs it when the model loads. The work is
done by the shipped copy of `sweep.served.scorer` (the package `attention_sweep_served`, in the
model's `code/`), imported in `load_context`, once MLflow has put that code on `sys.path`.
The type hints are the model's interface: MLflow derives the signature from them and answers
a request that is not a list of strings with a clear error (HTTP 400).
"""

from __future__ import annotations

import mlflow
import pydantic
from mlflow.pyfunc import PythonModel, PythonModelContext


class Sentiment(pydantic.BaseModel):
    """One review's answer: P(pos), and the label the harness's accuracy counts (argmax)."""

    probability: float
    label: str


class ReviewSentiment(PythonModel):
    """Raw reviews in, one `Sentiment` each out."""

    def load_context(self, context: PythonModelContext) -> None:
        from attention_sweep_served.served.scorer import load

        self._scorer = load(context.artifacts)

    def predict(self, model_input: list[str], params: dict | None = None) -> list[Sentiment]:
        return [
            Sentiment(probability=p, label=label) for p, label in self._scorer.predict(model_input)
        ]


mlflow.models.set_model(ReviewSentiment())
