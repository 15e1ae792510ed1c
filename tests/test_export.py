"""Export: the sweep's answer out of MLflow, runnable best configs, clear refusals."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweep import cli, train
from sweep.__main__ import run as main_run
from sweep.config import compose_config
from sweep.errors import ExportError
from sweep.export import export
from sweep.tuner import run as sweep_run
from tests.conftest import (
    DIMS,
    REAL_DATA,
    Swept,
    own_lines,
    run_module_noting_imports,
    sweep_runs,
    tiny_overrides,
)


def test_export_writes_the_answer_and_the_best_config_reproduces(
    swept: Swept, tmp_path: Path
) -> None:
    cfg = swept.copy(tmp_path)  # export logs to the parent and the re-run adds a run
    result = export(cfg)
    out = Path(cfg.sweep.dir) / cfg.name / "export"
    assert result.directory == out
    table = pd.read_csv(out / "leaderboard.csv")
    assert len(table) == 2 and set(table["status"]) == {"FINISHED"}
    assert table["best_val_accuracy"].is_monotonic_decreasing
    assert {
        "model.attention.output_dim",
        "duration_s",
        "param_count",
        "run_id",
        "final_val_accuracy",
    } <= set(table.columns)
    assert [p.name for p in result.configs] == ["rank1.yaml", "rank2.yaml"]
    effects = pd.read_csv(out / "effects.csv")
    assert set(effects["value"].astype(str)) == {"4", "12"}
    assert effects["best"].sum() == 1
    said = (out / "effects.md").read_text()  # two executions each: the noise is measured
    assert "- model.attention.output_dim: **" in said and "noise unknown" not in said, said
    assert (out / "accuracy_vs_cost.png").stat().st_size > 0

    client = MlflowClient(cfg.tracking.uri)
    parent = client.get_run(table["run_id"][0]).data.tags["mlflow.parentRunId"]
    logged = {a.path for a in client.list_artifacts(parent, "export")}
    assert "export/leaderboard.csv" in logged and "export/rank1.yaml" in logged
    assert not list((swept.work / "sweeps").rglob("export")), "the session's sweep is untouched"
    assert not list((swept.work / "mlruns").rglob("export"))

    # the printed command re-runs the best trial: same params
    command = result.commands[0].split()
    assert command[:3] == ["python", "-m", "sweep"]
    best = compose_config(config_name=command[-1], config_dir=Path(command[4]))
    main_run(best)
    experiment = client.get_experiment_by_name(cfg.name).experiment_id
    rerun = client.search_runs([experiment], "tags.mlflow.runName = 'smoke-run'")
    assert len(rerun) == 1
    trial = client.get_run(table["run_id"][0])
    assert rerun[0].data.params == trial.data.params
    assert len(swept.runs()[0]) == 1, "the re-run logged to the copy, not the session's store"


def test_export_of_unknown_experiment_says_so_and_writes_nothing(
    make_config: Callable[..., DictConfig],
) -> None:
    cfg = make_config("+experiment=smoke", "name=never_run")
    with pytest.raises(ExportError, match="no sweep named never_run"):
        export(cfg)
    assert not (Path(cfg.sweep.dir) / "never_run").exists()


def test_export_without_finished_trials_says_so_and_writes_nothing(
    make_sweep: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("broken")

    monkeypatch.setattr(train, "fit", broken)
    cfg = make_sweep(DIMS, "search.tuner=grid", "search.max_trials=1")
    sweep_run(cfg)  # one trial, failed
    assert [r.info.status for r in sweep_runs(cfg)[1]] == ["FAILED"]
    with pytest.raises(ExportError, match="no finished trial"):
        export(cfg)
    assert not (Path(cfg.sweep.dir) / cfg.name / "export").exists()


@pytest.mark.slow
def test_final_evaluation_is_a_separate_registered_run(
    swept: Swept, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    swept.copy(tmp_path)
    monkeypatch.chdir(tmp_path)  # sweep.dir relative, as the default is
    cfg = swept.config(
        tmp_path,
        "export.top_k=1",
        "export.evaluate=true",
        "export.registered_model=tiny-best",
        "sweep.dir=sweeps",
    )
    export(cfg)
    client = MlflowClient(cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.name).experiment_id
    final = client.search_runs([experiment], "tags.final = 'true'")
    assert len(final) == 1
    assert 0.5 < final[0].data.metrics["test_accuracy"] <= 1.0  # learnable: above chance
    trial_runs = client.search_runs([experiment], "tags.trial_id != ''")
    assert len(trial_runs) == 2
    assert all("test_accuracy" not in r.data.metrics for r in trial_runs), (
        "the test split is for the final evaluation only"
    )
    versions = client.search_model_versions("name = 'tiny-best'")
    assert len(versions) == 1 and versions[0].run_id == final[0].info.run_id


@pytest.mark.slow
def test_cli_export_of_unknown_experiment_is_one_line(
    tmp_path: Path, tiny_imdb: Path, cli_env: dict[str, str]
) -> None:
    """...without TensorFlow: Keras loads only for a model export retrains."""
    args = [*tiny_overrides(tmp_path, tiny_imdb), "+experiment=dim_search"]
    result, loaded = run_module_noting_imports("sweep.export", args, tmp_path, cli_env)
    assert result.returncode == 2
    lines = own_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("no sweep named dim_search"), result.stderr
    assert not (tmp_path / "sweeps" / "dim_search").exists()
    assert loaded == []


@pytest.mark.integration
@pytest.mark.skipif(not REAL_DATA.exists(), reason=f"real IMDB not found at {REAL_DATA}")
def test_a_new_users_path_on_real_data_with_the_default_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Sweep, export with a final evaluation, re-run the best: as the README says, with the
    default relative store, sweep and cache paths (the other tests make every path absolute).
    All three run here, from the user's directory (what their processes print:
    tests/test_console.py); the re-run export prints goes through `python -m sweep`'s own
    command line (Hydra's parser, the checks), as a user would paste it."""
    monkeypatch.chdir(tmp_path)
    smoke = ["+experiment=smoke", f"data.path={REAL_DATA}"]
    main_run(compose_config(smoke))
    with caplog.at_level("INFO", logger="sweep.export"):
        exported = export(compose_config([*smoke, "export.top_k=1", "export.evaluate=true"]))
    assert (tmp_path / "sweeps" / "smoke" / "export" / "rank1.yaml").is_file()
    printed = re.search(r"re-run: (python -m sweep .*rank1)$", caplog.text, re.MULTILINE)
    assert printed and printed.group(1) == exported.commands[0], caplog.text[-3000:]
    monkeypatch.setattr(sys, "argv", ["sweep", *printed.group(1).split()[3:]])
    cli.main(main_run)  # a process of its own: ~5 s of CPU to import TensorFlow and the rest

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke").experiment_id
    trials = client.search_runs(
        [experiment], "tags.trial_id != ''", order_by=["metrics.best_val_accuracy DESC"]
    )
    assert len(trials) == 3
    final = client.search_runs([experiment], "tags.final = 'true'")
    assert len(final) == 1 and 0.5 < final[0].data.metrics["test_accuracy"] <= 1.0
    again = client.search_runs([experiment], "tags.mlflow.runName = 'smoke-run'")
    # rank 1 as export ranked it (trials may tie on best_val_accuracy on a slice this small)
    leaderboard = pd.read_csv(tmp_path / "sweeps" / "smoke" / "export" / "leaderboard.csv")
    best = client.get_run(leaderboard["run_id"].iloc[0])
    assert best.data.tags["trial_id"] and best.info.run_id in {r.info.run_id for r in trials}
    assert len(again) == 1 and again[0].data.params == best.data.params
