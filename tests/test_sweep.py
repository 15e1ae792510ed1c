"""The sweep on tiny data: a real Keras Tuner oracle and a real SQLite MLflow store."""

from __future__ import annotations

import math
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from sweep import tracking, train
from sweep.errors import SweepError
from sweep.tuner import hypermodel
from sweep.tuner import run as sweep_run
from tests.conftest import PYTHON, RUN_ARTIFACTS, tiny_overrides

DIMS = {"model.attention.output_dim": {"type": "choice", "values": [4, 8, 12]}}


def runs_of(cfg: DictConfig) -> tuple[list, list]:
    """(parents, children) of the sweep's MLflow experiment."""
    mlflow.set_tracking_uri(cfg.tracking.uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(cfg.name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def assert_complete_record(cfg: DictConfig, expected_trials: int) -> None:
    parents, children = runs_of(cfg)
    assert len(parents) == 1
    finished = [r for r in children if r.info.status == "FINISHED"]
    ids = Counter(r.data.tags["trial_id"] for r in finished)
    assert len(ids) == expected_trials, ids
    assert max(ids.values()) == 1, f"a finished trial was logged twice: {ids}"
    assert not [r for r in [*parents, *children] if r.info.status == "RUNNING"]


def test_sweep_logs_parent_and_one_child_per_trial(make_sweep: Callable[..., DictConfig]) -> None:
    cfg = make_sweep(DIMS, "search.tuner=grid", "search.max_trials=3", "tracking.log_models=best")
    best = sweep_run(cfg)
    assert 0.5 < best <= 1.0  # the tiny data is learnable: better than chance
    assert_complete_record(cfg, 3)
    parents, children = runs_of(cfg)
    client = MlflowClient()
    parent = parents[0]
    assert parent.data.params["search.tuner"] == "grid"
    assert "model.attention.output_dim" in parent.data.params["search.space"]
    assert {
        "leaderboard.csv",
        "objective_by_hyperparameter.png",
        "parallel_coordinates.png",
        "search.yaml",
    } <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(best)
    for child in children:
        assert child.data.tags["hyperparameters"] == "model.attention.output_dim"
        assert child.data.params["model.attention.output_dim"] in {"4", "8", "12"}
        for tag in ("trial_id", "seed", "data_fingerprint", "version.keras", "version.mlflow"):
            assert tag in child.data.tags
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [0, 1]
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
    best_run = parent.data.tags["best_run_id"]
    assert client.search_logged_models(
        [parent.info.experiment_id], filter_string=f"source_run_id = '{best_run}'"
    )


def test_nan_trial_fails_and_the_sweep_goes_on(make_sweep: Callable[..., DictConfig]) -> None:
    cfg = make_sweep(
        {"train.learning_rate": {"type": "choice", "values": [0.01, 1e38]}},
        "search.tuner=grid",
        "search.max_trials=2",
        "train.optimizer=sgd",
    )
    sweep_run(cfg)
    _, children = runs_of(cfg)
    status = {r.data.params["train.learning_rate"]: r for r in children}
    assert status["0.01"].info.status == "FINISHED"
    assert status["1e+38"].info.status == "FAILED"
    assert "NaN" in status["1e+38"].data.tags["error"]


def test_raising_trial_fails_with_its_error_and_the_sweep_goes_on(
    make_sweep: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_build = hypermodel.build_model

    def build(cfg: DictConfig):
        if cfg.model.attention.output_dim == 8:
            raise RuntimeError("out of memory building output_dim=8")
        return real_build(cfg)

    monkeypatch.setattr(hypermodel, "build_model", build)
    cfg = make_sweep(DIMS, "search.tuner=grid", "search.max_trials=3")
    sweep_run(cfg)
    _, children = runs_of(cfg)
    by_dim = {r.data.params.get("model.attention.output_dim"): r for r in children}
    assert by_dim["8"].info.status == "FAILED"
    assert "out of memory building output_dim=8" in by_dim["8"].data.tags["error"]
    assert by_dim["4"].info.status == by_dim["12"].info.status == "FINISHED"


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
    parents, children = runs_of(cfg)
    assert [r.info.status for r in children] == ["FAILED", "FAILED"]
    assert parents[0].info.status == "FAILED"


class Interrupt:
    """Ctrl-C in the middle of the n-th fit, as a user would press it."""

    def __init__(self, at_fit: int) -> None:
        self.calls, self.at_fit = 0, at_fit

    def __call__(self, real):
        def fit(*args, **kwargs):
            self.calls += 1
            if self.calls == self.at_fit:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        return fit


@pytest.mark.parametrize(
    ("tuner", "extra", "trials"),
    [
        ("grid", ["search.max_trials=3"], 3),
        ("random", ["search.max_trials=3"], 3),
        ("bayesian", ["search.max_trials=3"], 3),
        ("hyperband", ["train.epochs=2", "search.hyperband_factor=2"], None),
    ],
)
def test_interrupted_sweep_resumes_without_repeating_trials(
    make_sweep: Callable[..., DictConfig],
    monkeypatch: pytest.MonkeyPatch,
    tuner: str,
    extra: list[str],
    trials: int | None,
) -> None:
    cfg = make_sweep(DIMS, f"search.tuner={tuner}", *extra)
    interrupt = Interrupt(at_fit=2)
    monkeypatch.setattr(train, "fit", interrupt(train.fit))
    with pytest.raises(KeyboardInterrupt):
        sweep_run(cfg)
    monkeypatch.undo()
    _, children = runs_of(cfg)
    assert sorted(r.info.status for r in children) == ["FINISHED", "KILLED"]

    sweep_run(cfg)
    _, children = runs_of(cfg)
    finished = [r for r in children if r.info.status == "FINISHED"]
    expected = trials or len({r.data.tags["trial_id"] for r in children})
    assert_complete_record(cfg, expected)
    assert len(finished) == expected >= 2
    killed = [r for r in children if r.info.status == "KILLED"]
    assert len(killed) == 1
    assert killed[0].data.tags["trial_id"] in {r.data.tags["trial_id"] for r in finished}, (
        "the interrupted trial must be retried"
    )

    sweep_run(cfg)  # a finished sweep re-run logs nothing new
    assert len(runs_of(cfg)[1]) == len(children)


def test_resume_with_a_changed_space_is_refused(make_sweep: Callable[..., DictConfig]) -> None:
    cfg = make_sweep(DIMS, "search.tuner=grid", "search.max_trials=1")
    sweep_run(cfg)
    other = {"model.attention.output_dim": {"type": "choice", "values": [4, 16]}}
    changed = make_sweep(other, "search.tuner=grid", "search.max_trials=1")
    with pytest.raises(SweepError, match=r"values.*\[4, 8, 12\] -> \[4, 16\]"):
        sweep_run(changed)
    fresh = make_sweep(other, "search.tuner=grid", "search.max_trials=1", "sweep.overwrite=true")
    sweep_run(fresh)
    parents, _ = runs_of(cfg)
    assert len(parents) == 2, "overwrite starts a new parent and keeps the old record"


def statuses(uri: str, experiment: str) -> list[tuple[str, str, bool]]:
    """(trial_id, status, is_parent) of every run, read from the store another process writes."""
    tracking.configure(
        OmegaConf.create(
            {"uri": uri, "artifact_root": uri.removeprefix("sqlite:///") + "-artifacts"}
        )
    )
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return [
        (r.data.tags.get("trial_id", ""), r.info.status, "mlflow.parentRunId" not in r.data.tags)
        for r in client.search_runs([found.experiment_id], max_results=1000)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_signal_mid_trial_then_resume_completes_without_duplicates(
    tmp_path, tiny_imdb, cli_env, kill: signal.Signals
) -> None:
    args = [
        *tiny_overrides(tmp_path, tiny_imdb),
        "+experiment=dim_search",
        "search.max_trials=3",
        "search.patience=0",
        "train.epochs=40",
    ]
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    command = [PYTHON, "-m", "sweep", *args]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            children = (
                [s for s in statuses(uri, "dim_search") if not s[2]]
                if (tmp_path / "mlruns" / "mlflow.db").exists()
                else []
            )
            if any(s[1] == "FINISHED" for s in children) and any(
                s[1] == "RUNNING" for s in children
            ):
                break
            time.sleep(0.2)
        assert process.poll() is None, "the sweep ended before it could be killed mid-trial"
        process.send_signal(kill)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    before = statuses(uri, "dim_search")
    finished_before = {s[0] for s in before if s[1] == "FINISHED" and not s[2]}
    assert finished_before
    if kill == signal.SIGINT:  # Ctrl-C: the harness closes its runs itself
        assert process.returncode == 130
        assert not [s for s in before if s[1] == "RUNNING"], before
        assert sum(1 for s in before if s[1] == "KILLED" and not s[2]) == 1
    else:  # kill -9: the runs stay RUNNING until the next start closes them
        assert any(s[1] == "RUNNING" for s in before)

    result = subprocess.run(
        command, cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    after = statuses(uri, "dim_search")
    assert not [s for s in after if s[1] == "RUNNING"], after
    finished = Counter(s[0] for s in after if s[1] == "FINISHED" and not s[2])
    assert set(finished) == {"0", "1", "2"}, finished
    assert max(finished.values()) == 1, f"a finished trial was repeated: {finished}"
    assert sum(1 for s in after if s[1] == "KILLED" and not s[2]) == 1
    assert [s[1] for s in after if s[2]] == ["FINISHED"], "one parent, resumed and finished"


def test_vocabulary_size_and_batching_are_searchable(
    make_sweep: Callable[..., DictConfig],
) -> None:
    """A smaller vocabulary than the sweep's base needs its own encoding (else token ids
    overflow the embedding); batching is a knob like any other."""
    space = {
        "data.num_words": {"type": "choice", "values": [16, 64]},
        "train.batching": {"type": "choice", "values": ["bucketed", "fixed"]},
    }
    cfg = make_sweep(space, "search.tuner=grid", "search.max_trials=4", "data.seq_len=48")
    sweep_run(cfg)
    assert_complete_record(cfg, 4)
    _, children = runs_of(cfg)
    grid = {(r.data.params["data.num_words"], r.data.params["train.batching"]) for r in children}
    assert grid == {("16", "bucketed"), ("16", "fixed"), ("64", "bucketed"), ("64", "fixed")}
    sizes = {r.data.params["data.num_words"]: r.data.metrics["param_count"] for r in children}
    assert sizes["16"] < sizes["64"]  # the embedding shrank with the vocabulary
