"""Adaptive seed repeats (`search.replicates`): the decision rule on numbers chosen here, and the
sweep's repeats end to end (real Keras Tuner oracle, real MLflow store, real models built and
logged; where a test must know the seed noise, `train.fit` reports a score drawn from a known
distribution for each configuration and seed instead of fitting)."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweep import leaderboard, stats, tracking, tuner
from sweep.objective import Objective
from sweep.vocabulary import NOTE_TAG, REPLICATE_OF_TAG, REPLICATES_STOP_TAG, VERDICT_TAG

MAX = Objective("val_accuracy", "max")


def test_a_clear_gap_is_different_and_a_tiny_one_with_many_seeds_is_no_difference() -> None:
    rng = np.random.default_rng(0)
    clear = {"a": list(0.9 + rng.normal(0, 0.01, 3)), "b": list(0.6 + rng.normal(0, 0.01, 3))}
    assert stats.decide(clear, MAX, alpha=0.05, margin=0.01, top=2).verdict == stats.MATTERS
    same = {"a": list(0.8 + rng.normal(0, 0.01, 40)), "b": list(0.8 + rng.normal(0, 0.01, 40))}
    decided = stats.decide(same, MAX, alpha=0.05, margin=0.01, top=2)
    assert decided.verdict == stats.SAME, decided
    few = {k: v[:3] for k, v in same.items()}  # too few seeds to tell either way
    assert stats.decide(few, MAX, alpha=0.05, margin=0.01, top=2).verdict == stats.UNDECIDED


def test_peeking_more_often_asks_for_more_evidence() -> None:
    """alpha is split over the looks (Bonferroni): a gap decided at one look is not at 50."""
    scores = {"a": [0.80, 0.81, 0.82], "b": [0.77, 0.78, 0.79]}
    once = stats.decide(scores, MAX, alpha=0.05, margin=0.001, top=2, looks=1)
    often = stats.decide(scores, MAX, alpha=0.05, margin=0.001, top=2, looks=50)
    assert (once.verdict, often.verdict) == (stats.MATTERS, stats.UNDECIDED)


def test_holm_adjusts_a_family_and_direction_min_ranks_low_first() -> None:
    assert stats.holm([0.01, 0.04, float("nan")])[:2] == pytest.approx([0.02, 0.04])
    low = Objective("val_loss", "min")
    assert stats.ranked({"a": [0.5], "b": [0.3]}, low) == ["b", "a"]
    gap = stats.welch("b", [0.30, 0.31], "a", [0.50, 0.52], low.sign)
    assert gap.gap > 0 and gap.p < 0.05


def _fake_fit(means: dict[float, float], sd: float) -> Callable[..., keras.callbacks.History]:
    """`train.fit` that trains nothing: val_accuracy drawn from N(means[learning rate], sd),
    the same for a configuration and seed every time."""

    def fit(model: keras.Model, cfg: DictConfig, xy: Any, **kwargs: Any) -> Any:
        lr = round(float(cfg.train.learning_rate), 6)
        rng = np.random.default_rng(zlib.crc32(f"{lr}/{cfg.seed}".encode()))
        score = float(means[lr] + rng.normal(0, sd))
        logs = {"loss": 0.5, "accuracy": score, "val_loss": 0.5, "val_accuracy": score}
        history = keras.callbacks.History()
        for callback in [*kwargs.get("callbacks", []), history]:  # one epoch, as fit calls them
            callback.set_model(model)
            callback.on_train_begin()
            callback.on_epoch_end(0, dict(logs))
            callback.on_train_end()
        return history

    return fit


def _sweep(make_sweep: Callable[..., DictConfig], *overrides: str) -> DictConfig:
    return make_sweep(
        {"train.learning_rate": {"type": "choice", "values": [0.01, 0.02]}},
        "search.tuner=grid",
        "search.initial=[]",
        "search.replicates.enabled=true",
        "train.epochs=1",
        *overrides,
    )


def _repeats(parent: str) -> list[Any]:
    return [r for r in tracking.trial_runs(parent) if REPLICATE_OF_TAG in r.data.tags]


def _parent(cfg: DictConfig) -> Any:
    return tracking.sweep_parent(str(cfg.name))


@pytest.mark.slow
def test_configurations_within_seed_noise_get_seeds_until_no_difference(
    make_sweep: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """0.800 vs 0.802 with seed noise 0.01: undecided at 3 seeds, so seeds are added until the
    gap is shown within the 0.02 margin, inside the budget of 8 seeds each."""
    monkeypatch.setattr("sweep.train.fit", _fake_fit({0.01: 0.800, 0.02: 0.802}, 0.01))
    cfg = _sweep(make_sweep, "search.replicates.margin=0.02", "search.replicates.max_seeds=8")
    cfg.search.replicates.max_runs = 14
    tuner.run(cfg)
    parent = _parent(cfg)
    tags = parent.data.tags
    assert tags[VERDICT_TAG].startswith(stats.SAME), tags[VERDICT_TAG]
    assert tags[REPLICATES_STOP_TAG].startswith("decided after"), tags[REPLICATES_STOP_TAG]
    seeds = int(tags[REPLICATES_STOP_TAG].split()[2])
    assert 3 < seeds <= 8  # more than the minimum, within the budget
    assert len(_repeats(parent.info.run_id)) == 2 * (seeds - 1)
    table = leaderboard.frame(
        tracking.trial_runs(parent.info.run_id), ["train.learning_rate"], "val_accuracy"
    )
    assert list(table["seeds"]) == [seeds, seeds] and table["std_best_val_accuracy"].gt(0).all()


@pytest.mark.slow  # a real process / a sweep of its own (issue 15: not in the quick loop)
def test_a_clear_difference_stops_after_the_minimum_and_a_rerun_repeats_nothing(
    make_sweep: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sweep.train.fit", _fake_fit({0.01: 0.9, 0.02: 0.6}, 0.01))
    cfg = _sweep(make_sweep)
    tuner.run(cfg)
    parent = _parent(cfg)
    assert parent.data.tags[VERDICT_TAG].startswith(stats.MATTERS)
    assert parent.data.tags[REPLICATES_STOP_TAG] == "decided after 3 seeds per leader"
    first = {r.info.run_id for r in _repeats(parent.info.run_id)}
    assert len(first) == 4  # 2 more seeds for each of the two
    seeds = sorted(int(r.data.tags["seed"]) for r in _repeats(parent.info.run_id))
    assert seeds == [43, 43, 44, 44]
    tuner.run(cfg)  # the same command again: every repeat is found in MLflow
    assert {r.info.run_id for r in _repeats(parent.info.run_id)} == first
    text = MlflowClient().get_run(parent.info.run_id).data.tags[NOTE_TAG]
    assert "± " in text and "(3 seeds)" in text  # the standing shows mean ± std over seeds


@pytest.mark.slow  # a real process / a sweep of its own (issue 15: not in the quick loop)
def test_repeats_on_demand_for_a_finished_sweep_within_the_run_budget(
    make_sweep: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sweep.train.fit", _fake_fit({0.01: 0.80, 0.02: 0.80}, 0.01))
    cfg = _sweep(make_sweep, "search.replicates.enabled=false")
    tuner.run(cfg)
    assert not _repeats(_parent(cfg).info.run_id)
    cfg.search.replicates.enabled, cfg.search.replicates.max_runs = True, 3
    tuner.run(cfg)  # the finished sweep resumes: no trial runs again, 3 repeats do
    parent = _parent(cfg)
    assert len(_repeats(parent.info.run_id)) == 3
    assert parent.data.tags[REPLICATES_STOP_TAG] == "max_runs 3 repeats run"
    assert tracking.trials_done(parent.info.run_id) == 2  # repeats are no trials


@pytest.mark.slow
def test_real_training_clear_difference_is_decided_at_the_minimum(
    make_sweep: Callable[..., DictConfig],
) -> None:
    """Tiny data, real fits: a learning rate that learns against one that cannot."""
    cfg = make_sweep(
        {"train.learning_rate": {"type": "choice", "values": [0.03, 1.0e-7]}},
        "search.tuner=grid",
        "search.initial=[]",
        "search.replicates.enabled=true",
    )
    tuner.run(cfg)
    tags = _parent(cfg).data.tags
    assert tags[VERDICT_TAG].startswith(stats.MATTERS), tags
    assert tags[REPLICATES_STOP_TAG].startswith("decided after"), (
        tags
    )  # tiny validation: noisy seeds
