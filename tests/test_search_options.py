"""What users of Optuna and W&B reach for first: a time budget, warm-start points, and search
spaces edited on the command line. Real Keras Tuner oracles, a real SQLite MLflow store."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweep import __main__ as entry
from sweep import cli, train
from sweep.config import compose_config
from sweep.errors import ConfigError
from sweep.schema import parse_duration
from sweep.space import SearchSpace
from sweep.tuner import initial_points
from sweep.tuner import run as sweep_run
from tests.conftest import (
    Interrupt,
    Swept,
    assert_complete_record,
    copy_store,
    runs_of,
    sweep_runs,
    tiny_overrides,
    user_experiment,
)

DIM = "model.attention.output_dim"
#: Four widths; the tiny config's own (8) is one of them, so `base` is a point of the space.
DIMS = f"search.space={{{DIM}: {{type: choice, values: [4, 8, 12, 16]}}}}"


def by_trial(cfg: DictConfig, status: str = "FINISHED") -> dict[str, object]:
    """trial_id -> the trial's run, for the runs of one status."""
    _, children = sweep_runs(cfg)
    return {r.data.tags["trial_id"]: r for r in children if r.info.status == status}


# --- search.time_budget -------------------------------------------------------------------


@pytest.mark.slow
def test_time_budget_stops_new_trials_and_the_parent_says_why(
    make_config: Callable[..., DictConfig], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(
        "+experiment=smoke",
        "search.patience=0",
        f"search.space={{{DIM}: {{type: choice, values: [4, 8, 12, 16, 20]}}}}",
        "search.max_trials=5",
        "search.time_budget=0.1s",
        "train.epochs=1",
    )
    with caplog.at_level(logging.INFO, logger="sweep.tuner"):
        sweep_run(cfg)
    parents, children = sweep_runs(cfg)
    assert [r.info.status for r in children] == ["FINISHED"], "one trial, then the budget ends it"
    assert parents[0].info.status == "FINISHED", "the sweep stops cleanly"
    assert parents[0].data.tags["stop_reason"] == "time budget 0.1s spent after 1 trial"
    assert any("time budget 0.1s spent after 1 trial" in r.getMessage() for r in caplog.records)

    sweep_run(cfg)  # each command gets a fresh budget: one more trial
    parents, children = sweep_runs(cfg)
    assert_complete_record(cfg, 2)
    assert parents[0].data.tags["stop_reason"] == "time budget 0.1s spent after 1 trial"


def test_without_a_budget_the_parent_says_the_trials_ran_out(swept: Swept) -> None:
    assert swept.cfg.search.time_budget is None
    parents, _ = swept.runs()
    assert (
        parents[0].data.tags["stop_reason"] == f"max_trials {swept.cfg.search.max_trials} reached"
    )


@pytest.mark.parametrize(("value", "seconds"), [("90s", 90), ("30m", 1800), ("1h30m", 5400)])
def test_time_budget_forms(value: str, seconds: float) -> None:
    cfg = compose_config(["+experiment=smoke", f"search.time_budget={value}"])
    assert cfg.search.time_budget == value
    assert parse_duration("search.time_budget", value) == seconds


# --- search.initial -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("tuner", "trials"), [("grid", 4), ("random", 3), ("bayesian", 3)])
def test_initial_points_come_first_and_are_not_repeated_on_resume(
    make_config: Callable[..., DictConfig],
    monkeypatch: pytest.MonkeyPatch,
    tuner: str,
    trials: int,
) -> None:
    cfg = make_config(
        "+experiment=smoke",
        "search.patience=0",
        DIMS,
        f"search.tuner={tuner}",
        f"search.max_trials={trials}",
        f"search.initial=[base, {{{DIM}: 16}}]",
        "train.epochs=1",
    )
    monkeypatch.setattr(train, "fit", Interrupt(at_fit=2)(train.fit))
    with pytest.raises(KeyboardInterrupt):  # in the second initial point's trial
        sweep_run(cfg)
    monkeypatch.undo()
    _, children = sweep_runs(cfg)
    assert sorted(r.info.status for r in children) == ["FINISHED", "KILLED"]
    sweep_run(cfg)

    # resumed: every trial finished once, the interrupted one retried (this test is also the
    # interrupted-resume test of these three tuners: tests/test_sweep.py keeps hyperband's)
    assert_complete_record(cfg, trials)
    _, children = sweep_runs(cfg)
    killed = [r for r in children if r.info.status == "KILLED"]
    assert [r.data.tags["trial_id"] for r in killed] == ["1"]
    finished = by_trial(cfg)
    assert len(finished) == trials and "1" in finished
    sweep_run(cfg)  # a finished sweep re-run logs nothing new
    assert len(sweep_runs(cfg)[1]) == len(children)
    dims = {trial_id: run.data.params[DIM] for trial_id, run in finished.items()}
    assert (dims["0"], dims["1"]) == ("8", "16"), dims
    assert finished["0"].data.tags["initial"] == "base"
    assert finished["1"].data.tags["initial"] == "given"
    assert len(set(dims.values())) == trials, f"an initial point was tried twice: {dims}"
    assert not [t for t in finished if t not in ("0", "1") and "initial" in finished[t].data.tags]
    if tuner == "grid":  # the walk goes on from the base, skipping the points already tried
        assert dims == {"0": "8", "1": "16", "2": "4", "3": "12"}


@pytest.mark.slow
def test_hyperband_starts_with_the_initial_points(make_config: Callable[..., DictConfig]) -> None:
    cfg = make_config(
        "+experiment=smoke",
        "search.patience=0",
        DIMS,
        "search.tuner=hyperband",
        "search.hyperband_factor=2",
        "train.epochs=2",
        f"search.initial=[{{{DIM}: 12}}, base]",
    )
    sweep_run(cfg)
    finished = by_trial(cfg)
    first, second = (finished[t] for t in sorted(finished)[:2])  # ids 0000, 0001: no max_trials
    assert (first.data.params[DIM], second.data.params[DIM]) == ("12", "8")
    assert (first.data.tags["initial"], second.data.tags["initial"]) == ("given", "base")


def test_initial_points_resolve_in_order_once_and_base_only_when_a_point(
    make_config: Callable[..., DictConfig],
) -> None:
    space = (
        f"search.space={{{DIM}: {{type: choice, values: [4, 8]}}, "
        "model.dropout: {type: float, min: 0.0, max: 0.5, step: 0.25}}"
    )
    cfg = make_config("+experiment=smoke", space, f"search.initial=[base, {{{DIM}: 4}}, base]")
    # the config's dropout (0.5) is a point: base is (8, 0.5); a partial point takes the
    # config's values for what it leaves out
    assert initial_points(cfg, SearchSpace.of(cfg)) == [
        ("base", {DIM: 8, "model.dropout": 0.5}),
        ("given", {DIM: 4, "model.dropout": 0.5}),
    ]
    off = make_config("+experiment=smoke", space, "model.dropout=0.3", "search.initial=[base]")
    assert initial_points(off, SearchSpace.of(off)) == [], (
        "0.3 is not on the dropout steps: no base point"
    )
    none = make_config("+experiment=smoke", space, "search.initial=[]")
    assert initial_points(none, SearchSpace.of(none)) == []


@pytest.mark.parametrize(
    ("initial", "message"),
    [
        (
            f"[base, {{{DIM}: 48}}]",
            f"config error: search.initial[1].{DIM}=48: not one of the entry's values (8, 16, 32)",
        ),
        (
            "[{model.attention.outptu_dim: 8}]",
            "config error: search.initial[0].model.attention.outptu_dim=8: not a key of "
            f"search.space ({DIM}, model.attention.scale)",
        ),
        (
            "[{model.attention.scale: bogus}]",
            "config error: search.initial[0].model.attention.scale=bogus: not one of the entry's "
            "values (sqrt_dk, learned)",
        ),
        (
            "[basis]",
            "config error: search.initial[0]=basis: expected base, {best_of: EXPERIMENT} or a "
            "point {config.path: value, ...}",
        ),
        (
            "[{best_of: smoke, x: 1}]",
            "config error: search.initial[0]={'best_of': 'smoke', 'x': 1}: best_of stands alone: "
            "{best_of: EXPERIMENT}",
        ),
        (
            "[{best_of: ../x}]",
            "config error: search.initial[0].best_of=../x: not an experiment name",
        ),
    ],
)
def test_bad_initial_point_is_one_line_naming_the_key(initial: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose_config(["+experiment=smoke", f"search.initial={initial}"])
    assert str(err.value) == message


def test_best_of_warm_starts_from_another_sweeps_best_trial(
    swept: Swept, make_config: Callable[..., DictConfig]
) -> None:
    """`best_of: smoke`: the session's sweep, read where a sweep reads it (the store the global
    tracking URI names once the sweep has configured it)."""
    scores = {r.data.params[DIM]: r.data.metrics["best_val_accuracy"] for r in swept.runs()[1]}
    best = {dim for dim, score in scores.items() if score == max(scores.values())}
    store = f"tracking.uri={swept.uri}"
    mlflow.set_tracking_uri(swept.uri)

    second = make_config(
        "+experiment=smoke",
        "name=warm_b",
        store,
        "search.initial=[{best_of: smoke}]",
        f"search.space={{{DIM}: {{type: choice, values: [4, 8, 12]}}, "
        "model.attention.scale: {type: choice, values: [sqrt_dk, learned]}}",
    )
    # the scale the first sweep did not search: the config's (8.0) is no point here, so the
    # entry's first value
    [(label, point)] = initial_points(second, SearchSpace.of(second))
    assert label == "best_of=smoke"
    assert point["model.attention.scale"] == "sqrt_dk" and str(point[DIM]) in best, (point, scores)
    found = point[DIM]

    narrow = make_config(
        "+experiment=smoke",
        "name=warm_c",
        store,
        "search.initial=[{best_of: smoke}]",
        f"search.space={{{DIM}: {{type: choice, values: [32, 64]}}}}",
    )
    with pytest.raises(ConfigError) as err:
        initial_points(narrow, SearchSpace.of(narrow))
    assert str(err.value) == (
        f"config error: search.initial[0].best_of=smoke: its best trial's {DIM}={found} is not "
        "one of the entry's values (32, 64)"
    )
    nobody = make_config("+experiment=smoke", store, "search.initial=[{best_of: nobody}]")
    with pytest.raises(
        ConfigError, match=r"^config error: search.initial\[0\].best_of=nobody: no sweep"
    ):
        initial_points(nobody, SearchSpace.of(nobody))


# --- search spaces on the command line ----------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "space"),
    [
        (  # the form from the issue: the whole space
            ["search.space={data.seq_len: {type: choice, values: [16, 32]}}"],
            {"data.seq_len": [16, 32]},
        ),
        (
            ["+search.space={data.seq_len: {type: choice, values: [16, 32]}}"],
            {
                DIM: [8, 16, 32],
                "model.attention.scale": ["sqrt_dk", "learned"],
                "data.seq_len": [16, 32],
            },
        ),
        (
            ["+search.space.data.seq_len={type: choice, values: [16, 32]}"],
            {
                DIM: [8, 16, 32],
                "model.attention.scale": ["sqrt_dk", "learned"],
                "data.seq_len": [16, 32],
            },
        ),
        (
            ["~search.space.model.attention.scale"],
            {DIM: [8, 16, 32]},
        ),
        (
            ["search.space.model.attention.scale.values=[none, learned]"],
            {DIM: [8, 16, 32], "model.attention.scale": ["none", "learned"]},
        ),
        (  # an entry replaced whole: nothing of the old one is left
            [f"search.space.{DIM}={{type: int, min: 4, max: 16, step: 4}}"],
            {DIM: (4, 16, 4), "model.attention.scale": ["sqrt_dk", "learned"]},
        ),
    ],
)
def test_space_entries_are_added_changed_and_removed_on_the_command_line(
    overrides: list[str], space: dict
) -> None:
    cfg = compose_config(["+experiment=smoke", *overrides])
    found = {
        path: list(p["values"]) if p.type == "choice" else (p["min"], p["max"], p["step"])
        for path, p in cfg.search.space.items()
    }
    assert found == space
    if DIM in space and isinstance(space[DIM], tuple):
        assert cfg.search.space[DIM]["values"] is None


@pytest.mark.slow
def test_a_space_key_added_on_the_command_line_is_searched(
    make_config: Callable[..., DictConfig],
) -> None:
    cfg = make_config(
        "+experiment=smoke",
        "search.patience=0",
        "search.tuner=grid",
        "search.max_trials=2",
        f"~search.space.{DIM}",
        "~search.space.model.attention.scale",
        "+search.space.data.seq_len={type: choice, values: [12, 20]}",
        "train.epochs=1",
    )
    sweep_run(cfg)
    parents, children = sweep_runs(cfg)
    assert parents[0].data.params["search.space"] == "data.seq_len"
    assert sorted(r.data.params["data.seq_len"] for r in children) == ["12", "20"]
    assert {r.data.tags["hyperparameters"] for r in children} == {"data.seq_len"}


#: Malformed entries for data.seq_len, as YAML and as Hydra override values (the same text).
MALFORMED = [
    "{type: choice, values: [16, 0]}",
    "{type: gaussian}",
    "{type: int, min: 12, max: 4}",
    "{type: choice, values: []}",
    "{type: choice, valuez: [16]}",
    "{type: int, min: abc, max: 4}",
    "5",
]


@pytest.mark.parametrize("entry", MALFORMED)
@pytest.mark.parametrize(
    "form",
    ["+search.space.data.seq_len={entry}", "search.space={{data.seq_len: {entry}}}"],
)
def test_malformed_entry_on_the_command_line_gets_the_reason_a_file_gets(
    tmp_path: Path, entry: str, form: str
) -> None:
    conf = user_experiment(
        tmp_path, "mine", f"name: mine\nsearch:\n  space:\n    data.seq_len: {entry}\n"
    )
    with pytest.raises(ConfigError) as in_file:
        compose_config(["+experiment=mine"], config_dir=conf)
    with pytest.raises(ConfigError) as on_line:
        compose_config(["+experiment=smoke", form.format(entry=entry)])
    assert str(on_line.value) == str(in_file.value)
    assert on_line.value.key.startswith("search.space.data.seq_len"), str(on_line.value)
    assert "no such key" not in str(on_line.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "search.space.data.seq_len.values=[16, 32]",
            "config error: search.space.data.seq_len.values=[16, 32]: search.space has no entry "
            f"data.seq_len (entries: {DIM}, model.attention.scale); add one with "
            "+search.space.data.seq_len={type: ..., ...}",
        ),
        (
            "~search.space.data.seq_len",
            "config error: ~search.space.data.seq_len: not an entry of search.space "
            f"({DIM}, model.attention.scale)",
        ),
        (
            "search.space.model.attention.scale.valuez=[none]",
            "config error: search.space.model.attention.scale.valuez: no such field of a search "
            "space entry (type, values, min, max, step, sampling)",
        ),
        (
            "+search.space.data.seq_lne={type: choice, values: [16]}",
            "config error: search.space.data.seq_lne=data.seq_lne: not a config path under data., "
            "model. or train.",
        ),
    ],
)
def test_space_override_errors_name_the_culprit(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose_config(["+experiment=smoke", override])
    assert str(err.value) == message


@pytest.mark.slow
def test_command_line_space_runs_end_to_end(
    tmp_path: Path, tiny_imdb: Path, migrated_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dotted space keys through `python -m sweep`'s own entry point, run here: Hydra's parser
    of the whole command line, then each job's own edits (bad ones are refused before Hydra:
    tests/test_config.py; how a real process shows its lines: test_reliability)."""
    args = [
        *tiny_overrides(tmp_path, tiny_imdb),
        "+experiment=smoke",
        "search.patience=0",
        "search.tuner=grid",
        "search.max_trials=2",
        "train.epochs=1",
        "search.space={data.seq_len: {type: choice, values: [12, 20]}}",
    ]
    uri = copy_store(migrated_store, tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["sweep", *args])
    cli.main(entry.run)
    _, children = runs_of(uri, "smoke")
    assert sorted(r.data.params["data.seq_len"] for r in children) == ["12", "20"]
    # tiny_overrides' tracking.log_figures=false: no figure drawn (the runs that check them: swept)
    logged = {a.path for a in MlflowClient(uri).list_artifacts(children[0].info.run_id)}
    assert "config.yaml" in logged and not {p for p in logged if p.endswith(".png")}, logged
