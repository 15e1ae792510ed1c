"""The confirmation stage (`search.confirm`): a slice no trial sees, a selection recorded before
anything trains, fresh seeds paired across the configurations, nothing run twice on a restart."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweep import data, tracking, train, tuner
from sweep.tuner import confirm
from sweep.vocabulary import CONFIRM_OF_TAG, SELECTION_TAG

SPACE = {"model.attention.output_dim": {"type": "choice", "values": [8, 4]}}


def _study(make_sweep: Callable[..., DictConfig], *overrides: str) -> DictConfig:
    return make_sweep(
        SPACE,
        "search.tuner=grid",
        "train.epochs=2",
        "data.confirm_fraction=0.2",
        "data.split_per_seed=true",
        "search.confirm.enabled=true",
        "search.confirm.seeds=2",
        *overrides,
    )


def test_the_slice_is_disjoint_from_every_seeds_split_and_the_same_for_all(
    make_config: Callable[..., DictConfig],
) -> None:
    cfg = make_config("data.confirm_fraction=0.2")
    encoded = train.load(cfg)
    rest, held = data.confirmation_split(encoded, 0.2)
    assert len(held) == round(0.2 * len(encoded.y_train))
    assert set(rest).isdisjoint(held) and len(rest) + len(held) == len(encoded.y_train)
    for seed in (1, 2, 3):
        tr, va = data.validation_split(encoded, 0.2, seed, confirm_fraction=0.2)
        assert set(held).isdisjoint(tr) and set(held).isdisjoint(va)
        assert len(va) == round(0.2 * len(encoded.y_train))  # still 20% of the whole split
    again, _ = data.validation_split(encoded, 0.2, 1, confirm_fraction=0.0)
    assert len(again) > len(tr)  # without a slice, training keeps those reviews
    x, y = train.confirmation(encoded, cfg)
    assert x.shape == (len(held), cfg.data.seq_len) and np.array_equal(y, encoded.y_train[held])


def test_confirm_without_a_slice_is_refused_in_one_line(refused: Callable[..., str]) -> None:
    line = refused("+experiment=smoke", "search.confirm.enabled=true")
    assert "search.confirm.enabled" in line and "data.confirm_fraction" in line


def test_selection_by_mean_and_the_base_once() -> None:
    scores = {"a": [0.80, 0.82], "b": [0.85, 0.83], "c": [0.70, 0.71]}

    class Fake:  # the two fields select() reads of an MLflow run
        def __init__(self, run_id: str, tags: dict[str, str]) -> None:
            self.info = type("Info", (), {"run_id": run_id})
            self.data = type("Data", (), {"tags": tags})

    runs = [Fake("a", {"trial_id": "0", "initial": "base"}), Fake("b", {"trial_id": "1"})]
    runs.append(Fake("c", {"trial_id": "2"}))
    picks = confirm.select(runs, scores, sign=1.0)  # type: ignore[arg-type]
    assert [(p.roles, p.run_id, p.n) for p in picks] == [
        ("best", "b", 2),
        ("runner-up, base", "a", 2),
    ]
    assert picks[0].screened == pytest.approx(0.84)


@pytest.mark.slow
def test_a_study_confirms_its_selection_once_and_a_rerun_trains_nothing(
    make_sweep: Callable[..., DictConfig],
) -> None:
    cfg = _study(make_sweep, "search.executions_per_trial=2")
    tuner.run(cfg)
    parent = tracking.sweep_parent(str(cfg.name))
    holder = tracking.confirmation_run(parent.info.run_id)
    assert holder is not None and holder.info.status == "FINISHED"
    picks = json.loads(holder.data.tags[SELECTION_TAG])
    assert [p["roles"].split(", ")[0] for p in picks][:2] == ["best", "runner-up"]
    assert all(p["n"] == 2 for p in picks)  # two executions each
    runs = tracking.trial_runs(holder.info.run_id)
    assert len(tracking.trial_runs(parent.info.run_id)) == 2  # the stage is no trial
    seeds = Counter((r.data.tags[CONFIRM_OF_TAG], r.data.tags["seed"]) for r in runs)
    assert set(seeds.values()) == {1} and len(seeds) == 2 * len(picks)
    assert {s for _, s in seeds} == {"1042", "1043"}  # fresh, the same for each configuration
    for run in runs:
        assert run.info.status == "FINISHED"
        score = run.data.metrics["confirmed_accuracy"]
        epoch = int(run.data.metrics["confirmed_epoch"])
        history = MlflowClient().get_metric_history(run.info.run_id, "confirm_accuracy")
        assert score == next(m.value for m in history if m.step == epoch - 1)
    tuner.run(cfg)  # the same command again: the selection is read back, nothing retrains
    after = tracking.trial_runs(holder.info.run_id)
    assert {r.info.run_id for r in after} == {r.info.run_id for r in runs}
