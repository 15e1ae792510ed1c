"""One tracked run, and the command line's handling of bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweep import batches, train
from sweep.__main__ import run as main_run
from sweep.config import compose_config
from sweep.errors import USER_ERROR_EXIT, DataError
from sweep.train import run as train_run
from tests.conftest import REAL_DATA, RUN_ARTIFACTS, own_lines, run_cli, runs_of, tiny_overrides


def only_run(uri: str, experiment: str) -> mlflow.entities.Run:
    parents, children = runs_of(uri, experiment)
    assert len(parents) == 1 and not children
    return parents[0]


def test_single_run_logs_everything(make_config: Callable[..., DictConfig]) -> None:
    # seq_len 48: the tiny reviews (12-35 tokens) fill it by half, so batches are bucketed
    cfg = make_config(
        "tracking.log_models=best",
        "tracking.log_figures=true",
        "model.attention.scale=learned",
        "data.seq_len=48",
    )
    assert len(batches.boundaries(48, train.arrays(train.load(cfg), cfg).train.lengths)) > 1
    best = train_run(cfg)
    run = only_run(cfg.tracking.uri, "base")
    client = MlflowClient(cfg.tracking.uri)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.attention.output_dim"] == "8"
    assert params["model.attention.scale"] == "learned"
    assert params["model.attention.initializer.class_name"] == "RandomUniform"
    assert params["train.learning_rate"] == "0.03"
    assert params["data.seq_len"] == "48"
    assert params["train.batching"] == "bucketed"
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
        assert sorted(steps) == [0, 1], metric
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(best)
    assert run.data.metrics["duration_s"] > 0
    tags = run.data.tags
    assert tags["seed"] == "42"
    assert len(tags["data_fingerprint"]) >= 12
    assert tags["version.keras"] == keras.__version__
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts >= RUN_ARTIFACTS
    config_text = Path(client.download_artifacts(run.info.run_id, "config.yaml")).read_text()
    assert "output_dim: 8" in config_text
    models = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    assert len(models) == 1
    model = mlflow.pyfunc.load_model(models[0].model_uri)  # raw text in (test_served.py)
    answers = model.predict(["a great film", "an awful, boring film. " * 20])  # any length
    assert [a.label for a in answers] == ["pos", "neg"] and 0 < answers[0].probability < 1


def test_missing_data_is_one_clear_line_before_any_run(
    make_config: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = make_config(f"data.path={tmp_path / 'nowhere.tar.gz'}")
    with pytest.raises(DataError) as err:
        main_run(cfg)
    assert "\n" not in str(err.value) and "nowhere.tar.gz does not exist" in str(err.value)
    assert runs_of(cfg.tracking.uri, "base") == ([], [])


@pytest.mark.slow
def test_cli_missing_data_is_one_clear_line(
    tmp_path: Path, cli_env: dict[str, str], tiny_imdb: Path
) -> None:
    """A user error raised inside the job (not by the command line's checks), as a real
    process shows it: exit 2, one line."""
    args = [*tiny_overrides(tmp_path, tiny_imdb), f"data.path={tmp_path / 'nowhere.tar.gz'}"]
    result = run_cli(args, tmp_path, cli_env)
    assert result.returncode == USER_ERROR_EXIT
    lines = own_lines(result.stderr)
    assert len(lines) == 1 and "nowhere.tar.gz does not exist" in lines[0], result.stderr


@pytest.mark.integration
@pytest.mark.skipif(not REAL_DATA.exists(), reason=f"real IMDB not found at {REAL_DATA}")
def test_original_model_on_a_slice_of_real_imdb(tmp_path: Path) -> None:
    """End to end: real reviews, the original model, one tracked run (in this process; a
    single run in a real process: the re-run of tests/test_export.py's new user's path)."""
    args = [
        *tiny_overrides(tmp_path, REAL_DATA),
        "data.limit=2000",
        "data.num_words=20000",
        "data.seq_len=64",
        "model.embedding_dim=128",
        "model.attention.output_dim=128",
        "train.learning_rate=2e-4",
        "train.epochs=2",
        "tracking.log_models=best",
    ]
    main_run(compose_config(args))
    run = only_run(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "base")
    assert run.info.status == "FINISHED"
    assert run.data.params["data.limit"] == "2000"
    assert run.data.metrics["val_accuracy"] > 0.5  # 2000 real reviews, 2 epochs: above chance
