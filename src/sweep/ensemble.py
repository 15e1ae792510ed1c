"""`export.ensemble=K`: the final model as the average of the sweep's top K configurations.

Each member is retrained on every training review, as `export.evaluate` retrains the best
(`train.retrained`: its trial's peak epoch count, its seed), in a nested run of its own with
its config and per-epoch metrics; their P(pos) on the test reviews are averaged and that
average is scored once. The members are the export's top K by the sweep's objective on
validation: the test split picks nothing, not even K, which the experiment fixes beforehand.

The average has a validation score of its own, first: each member fitted as its trial was (the
training part, its seed, its peak epoch count) and their P(pos) on the trials' validation split
(by movie) averaged. That is what the test score is compared with: the members' own validation
scores say nothing of what averaging adds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import keras
import mlflow
import numpy as np
from omegaconf import DictConfig

from sweep import data, tracking
from sweep.model import build_model
from sweep.served.scorer import Preprocessing
from sweep.tracking.callbacks import log_served_ensemble
from sweep.train import arrays, final_evaluation, fit, load, preprocessing, retrained
from sweep.vocabulary import ENSEMBLE_OF_TAG, FINAL_TAG, SOURCE_RUN_TAG

log = logging.getLogger(__name__)

#: Test reviews per forward pass.
BATCH = 256


def final_model(
    members: Sequence[tuple[DictConfig, str]], registered_model: str
) -> dict[str, float]:
    """The final model's single test evaluation: the best (one member) or the average."""
    if len(members) == 1:
        (cfg, run_id), *_ = members
        return final_evaluation(cfg, registered_model, run_id)
    return ensemble_evaluation(members, registered_model)


def ensemble_evaluation(
    members: Sequence[tuple[DictConfig, str]], registered_model: str
) -> dict[str, float]:
    """Retrain each (config, trial run id) member on the whole training split, average their
    probabilities on the test split and evaluate that average once; log and register it."""
    first = members[0][0]
    tracking.configure(first.tracking)
    tracking.use_experiment(first.name, first.tracking)
    encoded = [load(cfg) for cfg, _ in members]  # before any training: a bad path fails first
    tags = {
        **tracking.standard_tags(first, encoded[0].fingerprint),
        FINAL_TAG: "true",
        ENSEMBLE_OF_TAG: ",".join(run_id for _, run_id in members),
    }
    fitted: list[tuple[keras.Model, Preprocessing]] = []
    total, y_test = None, None
    with tracking.tracked_run(run_name=f"{first.name}-ensemble", tags=tags):
        mlflow.log_metric("val_accuracy", validation_accuracy(members, encoded))
        for rank, ((cfg, run_id), one) in enumerate(zip(members, encoded, strict=True), 1):
            member_tags = {**tracking.standard_tags(cfg, one.fingerprint), SOURCE_RUN_TAG: run_id}
            with tracking.tracked_run(
                run_name=f"{cfg.name}-ensemble-{rank}", nested=True, tags=member_tags
            ):
                model, test, labels = retrained(cfg, one)
            if y_test is not None and not np.array_equal(y_test, labels):
                raise ValueError(f"member {rank}'s test reviews are not in the others' order")
            x_test = data.pad(test, cfg.data.seq_len, cfg.data.padding)
            p = np.asarray(model.predict(x_test, batch_size=BATCH, verbose=0), dtype=np.float64)
            total, y_test = (p if total is None else total + p), labels
            fitted.append((model, preprocessing(cfg, one)))
        assert total is not None and y_test is not None  # members is not empty
        metrics = {f"test_{k}": v for k, v in _scores(total / len(members), y_test).items()}
        mlflow.log_metrics({**metrics, "ensemble_size": float(len(members))})
        log_served_ensemble(fitted, registered_model)
    log.info(
        "final model, the average of %d: test_accuracy %.4f (registered as %s)",
        len(members),
        metrics["test_accuracy"],
        registered_model,
    )
    return metrics


def validation_accuracy(
    members: Sequence[tuple[DictConfig, str]], encoded: Sequence[data.Encoded]
) -> float:
    """The average's accuracy on the trials' validation split, each member fitted on the
    training part as its trial was (its seed, its epochs: the trial's peak count)."""
    total, y_val = None, None
    for (cfg, _), one in zip(members, encoded, strict=True):
        xy = arrays(one, cfg)
        if y_val is not None and not np.array_equal(y_val, xy.y_val):
            raise ValueError("the members' validation splits differ: set one data.val_split")
        keras.utils.set_random_seed(cfg.seed)
        model = build_model(cfg)
        fit(model, cfg, xy)
        p = np.asarray(model.predict(xy.x_val, batch_size=BATCH, verbose=0), dtype=np.float64)
        total, y_val = (p if total is None else total + p), xy.y_val
    assert total is not None and y_val is not None  # members is not empty
    accuracy = _scores(total / len(members), y_val)["accuracy"]
    log.info("the average of %d: val_accuracy %.4f", len(members), accuracy)
    return accuracy


def _scores(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy (the argmax, as Keras counts it) and cross-entropy of averaged softmaxes."""
    chosen = probabilities[np.arange(len(labels)), labels]
    return {
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)),
        "loss": float(-np.mean(np.log(np.clip(chosen, 1e-7, 1.0)))),
    }
