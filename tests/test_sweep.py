"""The sweep on tiny data: a real Keras Tuner oracle and a real SQLite MLflow store."""

from __future__ import annotations

import math
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweep import tracking, train
from sweep.__main__ import run as main_run
from sweep.config import compose_config
from sweep.errors import SweepError
from sweep.tuner import hypermodel, trials
from sweep.tuner import run as sweep_run
from sweep.tuner.trials import TrialTracking
from tests.conftest import (
    DIMS,
    NO_REPLICATES,
    PARENT_TAG,
    PYTHON,
    RUN_ARTIFACTS,
    Interrupt,
    Swept,
    assert_complete_record,
    copy_store,
    runs_of,
    sweep_runs,
    tiny_overrides,
)


def test_a_sweep_logs_a_parent_and_one_child_per_trial(swept: Swept) -> None:
    """The session's sweep: a grid of two widths, two executions each, the best model logged."""
    assert 0.5 < swept.best <= 1.0  # the tiny data is learnable: better than chance
    assert_complete_record(swept.cfg, 2)
    parents, children = swept.runs()
    client = MlflowClient(swept.uri)
    parent = parents[0]
    assert parent.data.params["search.tuner"] == "grid"
    assert "model.attention.output_dim" in parent.data.params["search.space"]
    assert {
        "leaderboard.csv",
        "objective_by_hyperparameter.png",
        "parallel_coordinates.png",
        "search.yaml",
    } <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(swept.best)
    assert sorted(c.data.params["model.attention.output_dim"] for c in children) == ["12", "4"]
    for child in children:
        assert child.data.tags["hyperparameters"] == "model.attention.output_dim"
        for tag in ("trial_id", "seed", "data_fingerprint", "version.keras", "version.mlflow"):
            assert child.data.tags[tag], tag
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [0, 0, 1, 1]  # each execution, each epoch
        losses = client.get_metric_history(child.info.run_id, "val_loss")
        first = [m.value for m in losses if m.step == 0]
        assert len(first) == 2 and first[0] != first[1], "each execution: its own seed"
        scores = client.get_metric_history(child.info.run_id, "execution_best_val_accuracy")
        assert sorted(m.step for m in scores) == [0, 1]
        assert child.data.metrics["best_val_accuracy"] == pytest.approx(
            sum(m.value for m in scores) / 2
        ), "a trial scores the mean of its executions"
        for metric in (
            "duration_s",
            "seconds_per_epoch",
            "param_count",
            "attention_entropy",
            "attention_saturation",
            "best_val_accuracy",
        ):
            assert math.isfinite(child.data.metrics[metric]), metric
        assert 0.0 <= child.data.metrics["attention_entropy"] <= 1.0 + 1e-6
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert artifacts >= RUN_ARTIFACTS
    assert len({c.data.metrics["param_count"] for c in children}) == 2, "two widths built"
    best_run = parent.data.tags["best_run_id"]
    assert best_run in {c.info.run_id for c in children}
    assert client.search_logged_models(
        [parent.info.experiment_id], filter_string=f"source_run_id = '{best_run}'"
    )


def snapshot(swept: Swept) -> list[tuple[str, str, int | None]]:
    """(run id, status, end time) of every run of the sweep."""
    parents, children = swept.runs()
    return sorted((r.info.run_id, r.info.status, r.info.end_time) for r in [*parents, *children])


@pytest.mark.parametrize(
    ("overrides", "space", "change"),
    [
        (
            [],
            {"model.attention.output_dim": {"type": "choice", "values": [4, 16]}},
            r"values.*\[4, 12\] -> \[4, 16\]",
        ),
        (["search.pruning=median"], None, r"search\.pruning: None -> median"),
        (["search.tuner=random"], None, r"search\.tuner: grid -> random"),
    ],
    ids=["space", "pruning", "tuner"],
)
def test_resuming_with_changed_settings_is_refused_and_writes_nothing(
    swept: Swept, overrides: list[str], space: dict | None, change: str
) -> None:
    state_file = Path(swept.cfg.sweep.dir) / swept.cfg.name / "sweep.json"
    state = state_file.read_text()
    before = snapshot(swept)
    with pytest.raises(SweepError, match=change):
        sweep_run(swept.config(swept.work, *overrides, space=space))
    assert state_file.read_text() == state
    assert snapshot(swept) == before


@pytest.mark.slow
def test_overwrite_starts_a_new_parent_and_keeps_the_old_record(
    swept: Swept, tmp_path: Path
) -> None:
    swept.copy(tmp_path)
    other = {"model.attention.output_dim": {"type": "choice", "values": [4, 16]}}
    fresh = swept.config(tmp_path, "search.max_trials=1", "sweep.overwrite=true", space=other)
    sweep_run(fresh)
    parents, children = sweep_runs(fresh)
    assert len(parents) == 2, "overwrite starts a new parent and keeps the old record"
    per_parent = Counter(c.data.tags[PARENT_TAG] for c in children)
    assert sorted(per_parent.values()) == [1, 2]
    assert {p.info.status for p in parents} == {"FINISHED"}


@pytest.mark.slow
def test_nan_trial_fails_and_the_sweep_goes_on(make_sweep: Callable[..., DictConfig]) -> None:
    cfg = make_sweep(
        {"train.learning_rate": {"type": "choice", "values": [1e38, 0.01]}},  # the NaN one first
        "search.tuner=grid",
        "search.max_trials=2",
        "train.optimizer=sgd",
        "train.epochs=1",
    )
    sweep_run(cfg)
    _, children = sweep_runs(cfg)
    status = {r.data.params["train.learning_rate"]: r for r in children}
    assert status["0.01"].info.status == "FINISHED"
    assert status["1e+38"].info.status == "FAILED"
    assert "NaN" in status["1e+38"].data.tags["error"]


@pytest.mark.slow
def test_the_standing_is_refreshed_after_the_first_trial_and_at_the_end(
    make_sweep: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each refresh reads every trial run of the sweep: after the first trial, then at most
    every `REFRESH_S` (here never), and at the sweep's end, whose leaderboard has every trial."""
    monkeypatch.setattr(trials, "REFRESH_S", math.inf)
    refreshed: list[int] = []
    real = tracking.log_leaderboard

    def log_leaderboard(parent_run_id: str, standing: tracking.Standing) -> float | None:
        refreshed.append(len(sweep_runs(cfg)[1]))  # trial runs so far
        return real(parent_run_id, standing)

    monkeypatch.setattr(tracking, "log_leaderboard", log_leaderboard)
    space = {"model.attention.output_dim": {"type": "choice", "values": [4, 8, 12]}}
    cfg = make_sweep(space, "search.tuner=grid", "search.max_trials=3", "train.epochs=1")
    sweep_run(cfg)
    assert refreshed == [1, 3]
    (parent,), _ = sweep_runs(cfg)
    board = MlflowClient(str(cfg.tracking.uri)).download_artifacts(
        parent.info.run_id, "leaderboard.csv"
    )
    assert len(Path(board).read_text().strip().splitlines()) == 1 + 3


@pytest.mark.slow
def test_raising_trial_fails_with_its_error_and_the_sweep_goes_on(
    make_sweep: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial that raises as its model is built, or as its outcome is logged (after its fit:
    the soak's trial whose upload was refused had no reason recorded), is FAILED with its
    error beside the run; the next trial finishes."""
    real_build, real_outcome = hypermodel.build_model, TrialTracking._log_outcome

    def build(cfg: DictConfig):
        if cfg.model.attention.output_dim == 8:
            raise RuntimeError("out of memory building output_dim=8")
        return real_build(cfg)

    def outcome(self: TrialTracking, cfg: DictConfig, *args: Any) -> None:
        if cfg.model.attention.output_dim == 4:
            raise RuntimeError("upload refused for output_dim=4")
        real_outcome(self, cfg, *args)

    monkeypatch.setattr(hypermodel, "build_model", build)
    monkeypatch.setattr(TrialTracking, "_log_outcome", outcome)
    space = {"model.attention.output_dim": {"type": "choice", "values": [8, 4, 12]}}
    cfg = make_sweep(space, "search.tuner=grid", "search.max_trials=3", "train.epochs=1")
    sweep_run(cfg)
    _, children = sweep_runs(cfg)
    by_dim = {r.data.params.get("model.attention.output_dim"): r for r in children}
    for dim, error in (("8", "out of memory building output_dim=8"), ("4", "upload refused")):
        assert by_dim[dim].info.status == "FAILED"
        assert error in by_dim[dim].data.tags["error"], by_dim[dim].data.tags
    assert by_dim["12"].info.status == "FINISHED"


def test_consecutive_failures_stop_the_sweep_clearly(
    make_sweep: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("broken training code")

    monkeypatch.setattr(train, "fit", broken)
    cfg = make_sweep(
        DIMS, "search.tuner=grid", "search.max_trials=3", "search.max_consecutive_failures=2"
    )
    with pytest.raises(SweepError, match="consecutive failures"):
        sweep_run(cfg)
    parents, children = sweep_runs(cfg)
    assert [r.info.status for r in children] == ["FAILED", "FAILED"]
    assert all("broken training code" in r.data.tags["error"] for r in children)
    assert parents[0].info.status == "FAILED"


@pytest.mark.slow
def test_an_interrupted_hyperband_sweep_resumes_without_repeating_trials(
    make_sweep: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Grid, random and bayesian are interrupted and resumed the same way by
    tests/test_search_options.py's initial-points test; Hyperband's brackets are here."""
    cfg = make_sweep(DIMS, "search.tuner=hyperband", "train.epochs=2", "search.hyperband_factor=2")
    interrupt = Interrupt(at_fit=2)
    monkeypatch.setattr(train, "fit", interrupt(train.fit))
    with pytest.raises(KeyboardInterrupt):
        sweep_run(cfg)
    monkeypatch.undo()
    _, children = sweep_runs(cfg)
    assert sorted(r.info.status for r in children) == ["FINISHED", "KILLED"]

    sweep_run(cfg)
    _, children = sweep_runs(cfg)
    finished = [r for r in children if r.info.status == "FINISHED"]
    expected = len({r.data.tags["trial_id"] for r in children})
    assert_complete_record(cfg, expected)
    assert len(finished) == expected >= 2
    killed = [r for r in children if r.info.status == "KILLED"]
    assert len(killed) == 1
    assert killed[0].data.tags["trial_id"] in {r.data.tags["trial_id"] for r in finished}, (
        "the interrupted trial must be retried"
    )

    sweep_run(cfg)  # a finished sweep re-run logs nothing new
    assert len(sweep_runs(cfg)[1]) == len(children)


def statuses(uri: str, experiment: str) -> list[tuple[str, str, bool]]:
    """(trial_id, status, is_parent) of every run, read from the store another process writes."""
    parents, children = runs_of(uri, experiment)
    return [("", r.info.status, True) for r in parents] + [
        (r.data.tags["trial_id"], r.info.status, False) for r in children
    ]


def _kill_mid_trial(
    command: list[str], work: Path, env: dict[str, str], uri: str, kill: int
) -> int:
    """Start the sweep, send `kill` once a trial is RUNNING after trial 0 FINISHED; exit code."""
    process = subprocess.Popen(
        command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            children = [s for s in statuses(uri, "dim_search") if not s[2]]
            if any(s[1] == "FINISHED" for s in children) and any(
                s[1] == "RUNNING" for s in children
            ):
                break
            time.sleep(0.2)
        assert process.poll() is None, "the sweep ended before it could be stopped mid-trial"
        process.send_signal(kill)
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_signals_mid_trial_then_resume_completes_without_duplicates(
    tmp_path: Path, tiny_imdb: Path, migrated_store: Path, cli_env: dict[str, str]
) -> None:
    """A real process stopped while its second trial trains, by Ctrl-C, then the same command
    again, killed (-9) while it retrains that trial, then again to the end (in this process:
    the signals are what needs processes). The grid's first trial trains 1 epoch, its second
    20 (long enough to be seen RUNNING). One sweep for both signals: each resume starts from
    what the one before it left."""
    args = [
        *tiny_overrides(tmp_path, tiny_imdb),
        "+experiment=dim_search",
        *NO_REPLICATES,
        "search.space={train.epochs: {type: choice, values: [1, 20]}}",
        "search.max_trials=2",
        "search.patience=0",
    ]
    uri = copy_store(migrated_store, tmp_path)  # read while the sweep writes: no migration race
    command = [PYTHON, "-m", "sweep", *args]
    # Ctrl-C: the harness closes its runs itself
    assert _kill_mid_trial(command, tmp_path, cli_env, uri, signal.SIGINT) == 130
    before = statuses(uri, "dim_search")
    assert {s[0] for s in before if s[1] == "FINISHED" and not s[2]} == {"0"}
    assert not [s for s in before if s[1] == "RUNNING"], before
    assert sum(1 for s in before if s[1] == "KILLED" and not s[2]) == 1
    # kill -9 of the resumed sweep: its runs stay RUNNING until the next start closes them
    assert _kill_mid_trial(command, tmp_path, cli_env, uri, signal.SIGKILL) == -signal.SIGKILL
    before = statuses(uri, "dim_search")
    assert {s[0] for s in before if s[1] == "FINISHED" and not s[2]} == {"0"}, before
    assert any(s[1] == "RUNNING" for s in before)

    # the same command to the end, in this process (a resume is not about the process)
    main_run(compose_config(args))
    after = statuses(uri, "dim_search")
    assert not [s for s in after if s[1] == "RUNNING"], after
    finished = Counter(s[0] for s in after if s[1] == "FINISHED" and not s[2])
    assert set(finished) == {"0", "1"}, finished
    assert max(finished.values()) == 1, f"a finished trial was repeated: {finished}"
    assert sum(1 for s in after if s[1] == "KILLED" and not s[2]) == 2
    assert [s[1] for s in after if s[2]] == ["FINISHED"], "one parent, resumed and finished"


@pytest.mark.slow
def test_vocabulary_size_and_batching_are_searchable(
    make_sweep: Callable[..., DictConfig],
) -> None:
    """A smaller vocabulary than the sweep's base needs its own encoding (else token ids
    overflow the embedding); batching is a knob like any other."""
    space = {
        "data.num_words": {"type": "choice", "values": [16, 64]},
        "train.batching": {"type": "choice", "values": ["bucketed", "fixed"]},
    }
    cfg = make_sweep(
        space, "search.tuner=grid", "search.max_trials=4", "data.seq_len=48", "train.epochs=1"
    )
    sweep_run(cfg)
    assert_complete_record(cfg, 4)
    _, children = sweep_runs(cfg)
    grid = {(r.data.params["data.num_words"], r.data.params["train.batching"]) for r in children}
    assert grid == {("16", "bucketed"), ("16", "fixed"), ("64", "bucketed"), ("64", "fixed")}
    sizes = {r.data.params["data.num_words"]: r.data.metrics["param_count"] for r in children}
    assert sizes["16"] < sizes["64"]  # the embedding shrank with the vocabulary


@pytest.mark.slow
@pytest.mark.parametrize("per_seed", [True, False], ids=["split-per-seed", "one-split"])
def test_each_seed_redraws_the_split_shared_by_every_trial(
    make_sweep: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch, per_seed: bool
) -> None:
    """`data.split_per_seed`: execution k of every trial validates on the split of seed + k
    (paired across trials: split noise is measured and cancels in comparisons); off, every
    execution keeps the config's split."""
    real_fit, seen = train.fit, []

    def fit(model: Any, cfg: DictConfig, xy: train.Arrays, **kwargs: Any) -> Any:
        reviews = (tuple(xy.y_val), tuple(xy.val.lengths))  # which reviews, in which order
        seen.append((cfg.model.attention.output_dim, cfg.seed, reviews))
        return real_fit(model, cfg, xy, **kwargs)

    monkeypatch.setattr(train, "fit", fit)
    cfg = make_sweep(
        {"model.attention.output_dim": {"type": "choice", "values": [4, 8]}},
        "search.tuner=grid",
        "search.max_trials=2",
        "search.executions_per_trial=2",
        "train.epochs=1",
        f"data.split_per_seed={per_seed}",
    )
    sweep_run(cfg)
    assert len(seen) == 4
    splits = {(dim, seed): reviews for dim, seed, reviews in seen}
    assert {seed for _, seed in splits} == {42, 43}
    for seed in (42, 43):  # paired: both widths validate on the same reviews per seed
        assert splits[(4, seed)] == splits[(8, seed)]
    assert (splits[(4, 42)] != splits[(4, 43)]) is per_seed
