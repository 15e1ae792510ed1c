"""Median pruning (`search.pruning=median`): a trial worse than the earlier trials' median at the
same epoch stops there, and is visibly pruned. Real Keras Tuner oracles, a real SQLite store."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path

import keras_tuner
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweep import train
from sweep.__main__ import run as main_run
from sweep.config import compose_config
from sweep.errors import ConfigError
from sweep.pruning import MedianStop, median_curve
from sweep.tuner import run as sweep_run
from tests.conftest import (
    NO_REPLICATES,
    Interrupt,
    assert_complete_record,
    copy_store,
    runs_of,
    sweep_runs,
    tiny_overrides,
)

LR = "train.learning_rate"
#: Learning rates the tiny data learns at, and ones at which it learns nothing in a few epochs.
GOOD, BAD = [0.03, 0.01], [1e-6, 1e-7]
EPOCHS = 4


def lr_space(*values: float) -> dict:
    return {LR: {"type": "choice", "values": list(values)}}


def good_first(make_config: Callable[..., DictConfig], *overrides: str) -> DictConfig:
    """The smoke sweep over every rate, the good ones its initial points (tried first)."""
    return make_config(
        "+experiment=smoke",
        "search.patience=0",
        f"search.space={{{LR}: {{type: choice, values: {[*GOOD, *BAD]}}}}}",
        f"search.initial=[{{{LR}: {GOOD[0]}}}, {{{LR}: {GOOD[1]}}}]",
        "search.pruning=median",
        *overrides,
    )


def by_lr(cfg: DictConfig) -> dict[float, list]:
    """Learning rate -> the FINISHED trial runs that trained at it."""
    found: dict[float, list] = {}
    for run in sweep_runs(cfg)[1]:
        if run.info.status == "FINISHED":
            found.setdefault(float(run.data.params[LR]), []).append(run)
    return found


def leaderboard_csv(cfg: DictConfig) -> pd.DataFrame:
    parent = sweep_runs(cfg)[0][0]
    text = MlflowClient(cfg.tracking.uri).download_artifacts(parent.info.run_id, "leaderboard.csv")
    return pd.read_csv(io.StringIO(Path(text).read_text()), dtype={"trial_id": str})


# --- the rule itself ------------------------------------------------------------------------


class FakeModel:
    stop_training = False


def fit_epochs(stop: MedianStop, values: list[float], epochs: int | None = None) -> list[int]:
    """Feed `values` as a fit's epochs; the epochs (1-based) after which it asked to stop."""
    model = FakeModel()
    stop.set_model(model)
    stop.set_params({"epochs": epochs or len(values)})
    stop.on_train_begin()
    asked = []
    for epoch, value in enumerate(values):
        stop.on_epoch_end(epoch, {"val_loss": value, "val_accuracy": value})
        if model.stop_training:  # Keras ends the fit here
            asked.append(epoch + 1)
            break
    return asked


def test_median_curve_needs_enough_trials_per_epoch() -> None:
    curves = [{0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.7, 1: 0.8}, {0: 0.9, 1: float("nan")}]
    assert median_curve(curves) == {0: 0.7, 1: 0.7}  # epoch 2: one trial only; NaN left out
    assert median_curve(curves, min_trials=3) == {0: 0.7}


@pytest.mark.parametrize(
    ("direction", "values", "asked"),
    [
        ("max", [0.50, 0.55, 0.60, 0.65], [2]),  # 0.55 < median 0.70 at epoch 2
        ("max", [0.90, 0.90, 0.90, 0.90], []),  # better than the median throughout
        ("max", [0.50, 0.80, 0.50, 0.50], [3]),  # best so far 0.80 < median 0.85 at epoch 3
        ("min", [0.90, 0.80, 0.70, 0.60], [2]),  # loss above the median at epoch 2
        ("min", [0.10, 0.10, 0.10, 0.10], []),
    ],
)
def test_median_stop_follows_the_objectives_direction(
    direction: str, values: list[float], asked: list[int]
) -> None:
    objective = keras_tuner.Objective(
        "val_loss" if direction == "min" else "val_accuracy", direction
    )
    medians = {0: 0.6, 1: 0.7, 2: 0.85, 3: 0.9} if direction == "max" else {0: 0.95, 1: 0.7}
    stop = MedianStop(medians, objective, min_epochs=2)
    assert fit_epochs(stop, values) == asked
    assert stop.pruned_at == (asked[0] if asked else None)


def test_median_stop_waits_for_min_epochs_and_never_stops_at_the_last_epoch() -> None:
    objective = keras_tuner.Objective("val_accuracy", "max")
    medians = {0: 0.9, 1: 0.9, 2: 0.9}
    assert fit_epochs(MedianStop(medians, objective, min_epochs=1), [0.5, 0.5, 0.5]) == [1]
    assert fit_epochs(MedianStop(medians, objective, min_epochs=3), [0.5, 0.5, 0.5]) == []
    assert fit_epochs(MedianStop({}, objective), [0.5, 0.5, 0.5]) == [], "no medians yet"


def test_median_stop_copies_share_the_outcome() -> None:
    """Keras Tuner deep-copies a trial's callbacks for each execution: a later execution of a
    pruned trial stops at the same epoch, and the trial knows it was pruned."""
    import copy

    objective = keras_tuner.Objective("val_accuracy", "max")
    stop = MedianStop({0: 0.9, 1: 0.9, 2: 0.9}, objective)
    first, second = copy.deepcopy(stop), copy.deepcopy(stop)
    assert fit_epochs(first, [0.5, 0.5, 0.5, 0.5]) == [1]
    assert fit_epochs(second, [0.95, 0.95, 0.95, 0.95]) == [1], "stopped where the first was"
    assert stop.pruned_at == 1


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["search.pruning=mean"],
            "config error: search.pruning=mean: expected one of none, median",
        ),
        (
            ["search.pruning_min_epochs=0"],
            "config error: search.pruning_min_epochs=0: must be at least 1",
        ),
        (
            ["search.pruning=median", "search.pruning_min_epochs=3", "train.epochs=3"],
            "config error: search.pruning_min_epochs=3: must be less than train.epochs (3), "
            "else no trial is ever pruned",
        ),
    ],
)
def test_bad_pruning_settings_are_one_line(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose_config(["+experiment=smoke", *overrides])
    assert str(err.value) == message


def test_pruning_defaults_to_none() -> None:
    cfg = compose_config(["+experiment=smoke"])
    assert (cfg.search.pruning, cfg.search.pruning_min_epochs) == ("none", 1)


# --- sweeps -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("pruning", ["median", "none"])
def test_a_clearly_worse_trial_is_pruned_and_shown_pruned(
    make_sweep: Callable[..., DictConfig],
    caplog: pytest.LogCaptureFixture,
    pruning: str,
) -> None:
    """A grid over the learning rate, the absurd one last: with median pruning it stops early,
    FINISHED and tagged pruned, a completed Keras Tuner trial; without, it runs every epoch."""
    cfg = make_sweep(
        lr_space(*GOOD, BAD[1]),
        "search.tuner=grid",
        "search.max_trials=3",
        "search.initial=[]",
        f"train.epochs={EPOCHS}",
        f"search.pruning={pruning}",
    )
    with caplog.at_level(logging.INFO, logger="sweep.tuner"):
        sweep_run(cfg)
    assert_complete_record(cfg, 3)
    runs = {lr: found[0] for lr, found in by_lr(cfg).items()}
    bad = runs[BAD[1]]
    epochs_run = int(bad.data.metrics["epochs_run"])
    board = leaderboard_csv(cfg).set_index("trial_id")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trial ")]
    for lr in GOOD:  # the first two have no earlier trials to be judged by
        assert runs[lr].data.metrics["epochs_run"] == EPOCHS
        assert "pruned" not in runs[lr].data.tags
    if pruning == "none":
        assert epochs_run == EPOCHS, "without pruning the bad trial runs every epoch"
        assert "pruned" not in bad.data.tags
        assert board["pruned"].isna().all()
        assert not [line for line in lines if "pruned" in line]
        return
    assert epochs_run < EPOCHS
    assert bad.data.tags["pruned"] == "true"
    assert bad.data.tags["pruned_at_epoch"] == str(epochs_run)
    trial_id = bad.data.tags["trial_id"]
    assert board.loc[trial_id, "pruned"] == f"PRUNED at epoch {epochs_run}"
    assert board.loc[trial_id, "status"] == "FINISHED"
    assert board["pruned"].notna().sum() == 1
    assert [line for line in lines if "pruned" in line] == [
        next(line for line in lines if line.startswith("trial 3/3"))
    ]
    assert f"pruned at epoch {epochs_run}" in lines[-1]
    stored = Path(cfg.sweep.dir) / cfg.name / "tuner" / f"trial_{trial_id}" / "trial.json"
    assert json.loads(stored.read_text())["status"] == "COMPLETED"
    parent = sweep_runs(cfg)[0][0]
    assert "3 finished (1 pruned)" in parent.data.tags["mlflow.note.content"]


@pytest.mark.slow
def test_a_resumed_sweep_does_not_rerun_a_pruned_trial(
    make_sweep: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_sweep(
        lr_space(*GOOD, BAD[1], 0.003),
        "search.tuner=grid",
        "search.max_trials=4",
        "search.initial=[]",
        f"train.epochs={EPOCHS}",
        "search.pruning=median",
    )
    monkeypatch.setattr(train, "fit", Interrupt(at_fit=4)(train.fit))
    with pytest.raises(KeyboardInterrupt):  # in the trial after the pruned one
        sweep_run(cfg)
    monkeypatch.undo()
    pruned = by_lr(cfg)[BAD[1]]
    assert [r.data.tags.get("pruned") for r in pruned] == ["true"]

    sweep_run(cfg)
    assert_complete_record(cfg, 4)
    trial_id = pruned[0].data.tags["trial_id"]
    again = [r for r in sweep_runs(cfg)[1] if r.data.tags["trial_id"] == trial_id]
    assert [r.info.run_id for r in again] == [pruned[0].info.run_id], "re-run after resume"
    killed = [r for r in sweep_runs(cfg)[1] if r.info.status == "KILLED"]
    assert [float(r.data.params[LR]) for r in killed] == [0.003]


@pytest.mark.slow
@pytest.mark.parametrize("tuner", ["random", "bayesian"])
def test_every_tuner_prunes(make_config: Callable[..., DictConfig], tuner: str) -> None:
    """The tuner's own picks after the initial points can only be the bad rates (no point is
    tried twice), and are pruned."""
    cfg = good_first(
        make_config, f"search.tuner={tuner}", "search.max_trials=4", f"train.epochs={EPOCHS}"
    )
    sweep_run(cfg)
    found = by_lr(cfg)
    assert not [r for r in sweep_runs(cfg)[1] if r.info.status != "FINISHED"]
    first = [r for lr in GOOD for r in found[lr] if r.data.tags["trial_id"] in ("0", "1")]
    assert [r.data.tags.get("pruned") for r in first] == [None, None], "nothing to judge by yet"
    bad = [r for lr in BAD for r in found.get(lr, [])]
    assert bad, f"the {tuner} tuner tried no bad rate: {sorted(found)}"
    for run in bad:
        assert run.data.tags.get("pruned") == "true", run.data.params[LR]
        assert run.data.metrics["epochs_run"] < EPOCHS


@pytest.mark.slow
def test_hyperband_prunes_from_scratch_trials(make_config: Callable[..., DictConfig]) -> None:
    """Hyperband (3 epochs, factor 3): three 1-epoch trials (the good rates first, never judged:
    one epoch is their last), the best continued to 3 epochs, then 3-epoch trials from scratch,
    judged against the epoch-1 median of the first three."""
    cfg = good_first(make_config, "search.tuner=hyperband", "search.hyperband_factor=3")
    cfg.train.epochs = 3
    sweep_run(cfg)
    children = sweep_runs(cfg)[1]
    assert children and not [r for r in children if r.info.status != "FINISHED"]
    from_scratch_bad = []
    for run in children:
        trial = Path(cfg.sweep.dir) / cfg.name / "tuner" / f"trial_{run.data.tags['trial_id']}"
        values = json.loads((trial / "trial.json").read_text())["hyperparameters"]["values"]
        long = values["tuner/epochs"] == 3 and values["tuner/initial_epoch"] == 0
        if long and values[LR] in BAD:
            from_scratch_bad.append(run)
        elif run.data.tags.get("pruned"):
            raise AssertionError(f"pruned: {values}")  # 1-epoch trials, a good rate continued
    assert from_scratch_bad, "no bad rate was trained from scratch for 3 epochs"
    for run in from_scratch_bad:
        assert run.data.tags.get("pruned") == "true"
        assert run.data.metrics["epochs_run"] == 1


@pytest.mark.slow
def test_a_distributed_worker_prunes_from_the_shared_record(
    tmp_path: Path, tiny_imdb: Path, migrated_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sweep.workers=1`: a chief serving the grid, a worker training it, both logging to the
    sweep's MLflow server; the worker reads the earlier trials from there and prunes. (The
    launcher runs here; the server, the chief and the worker it starts are processes.)"""
    uri = copy_store(migrated_store, tmp_path)  # the sweep's server starts on a ready store
    args = [
        *(o for o in tiny_overrides(tmp_path, tiny_imdb) if not o.startswith("tracking.uri=")),
        "+experiment=dim_search",
        *NO_REPLICATES,
        "search.patience=0",
        f"search.space={{{LR}: {{type: choice, values: [{GOOD[0]}, {GOOD[1]}, {BAD[1]}]}}}}",
        "search.tuner=grid",
        "search.max_trials=3",
        "search.initial=[]",
        f"train.epochs={EPOCHS}",
        "search.pruning=median",
        f"tracking.uri={uri}",
        "sweep.workers=1",
    ]
    monkeypatch.chdir(tmp_path)
    main_run(compose_config(args))
    _, children = runs_of(uri, "dim_search")
    assert sorted(r.info.status for r in children) == ["FINISHED"] * 3
    pruned = {float(r.data.params[LR]): r.data.tags.get("pruned") for r in children}
    assert pruned == {GOOD[0]: None, GOOD[1]: None, BAD[1]: "true"}
    assert all(r.data.tags["worker_id"] == "worker0" for r in children)
