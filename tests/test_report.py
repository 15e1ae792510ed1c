"""The answer page (`python -m sweep.report`): pooling sibling sweeps from MLflow, the linear
model's estimates, noise and verdicts, interactions, diagnostics, and bad input in one line.

Most tests write sweeps straight into a fresh MLflow store (as the tuner logs them: a parent
run with its config and search settings, nested trial runs with params, tags and metrics), so
the statistics are checked against numbers chosen here; the integration test runs the shipped
experiments on a slice of the real data."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from sweep import tracking
from sweep.errors import ReportError
from sweep.report import report
from sweep.vocabulary import STAGE_TAG
from tests.conftest import (
    REAL_DATA,
    nested,
    own_lines,
    run_cli,
    run_module_noting_imports,
    tiny_overrides,
)

BASE = {
    "model.attention.output_dim": 128,
    "model.attention.scale": 8.0,
    "train.epochs": 2,
    "train.learning_rate": 0.0002,
}


def log_sweep(
    where: DictConfig,
    name: str,
    knobs: Sequence[str],
    trials: Sequence[tuple[Mapping[str, Any], Sequence[float]]],
    base: Mapping[str, Any] = BASE,
    diagnostics: Callable[[Mapping[str, Any], float], tuple[float, float]] | None = None,
) -> list[str]:
    """A sweep as the tuner logs one: each trial's values and its seeds' scores (the first the
    trial, the rest seed repeats of it); returns the runs' ids."""
    experiment = tracking.use_experiment(name, where.tracking)
    ids = []
    with mlflow.start_run(experiment_id=experiment, tags={"sweep": name, "data_fingerprint": "fp"}):
        parent = mlflow.active_run().info.run_id
        mlflow.log_params(
            {"search.space": ", ".join(knobs), "search.objective": "val_accuracy"}
            | {"search.direction": "max"}
        )
        mlflow.log_text(OmegaConf.to_yaml(nested({"name": name, **base})), "config.yaml")
        for number, (values, scores) in enumerate(trials):
            config = {**base, **values}
            for i, score in enumerate(scores):
                tags = {"seed": str(42 + i), "mlflow.parentRunId": parent}
                tags |= {"trial_id": str(number)} if i == 0 else {}
                tags |= {} if i == 0 else {"replicate_of": "x", "replicate_trial_id": str(number)}
                with mlflow.start_run(experiment_id=experiment, nested=True, tags=tags) as run:
                    mlflow.log_params(config)
                    mlflow.log_text(
                        OmegaConf.to_yaml(nested({"name": name, **config})), "config.yaml"
                    )
                    entropy, saturation = (diagnostics or (lambda c, s: (0.9, 0.1)))(config, score)
                    mlflow.log_metrics(
                        {"best_val_accuracy": score, "attention_entropy": entropy}
                        | {"attention_saturation": saturation}
                    )
                    ids.append(run.info.run_id)
    return ids


@pytest.fixture
def store(tmp_path: Path, make_config: Callable[..., DictConfig]) -> Callable[..., DictConfig]:
    """A report config on a fresh store under tmp_path (sweeps are logged into it by the test)."""
    cfg = make_config(f"report.dir={tmp_path / 'reports'}")
    tracking.configure(cfg.tracking)
    mlflow.set_tracking_uri(str(cfg.tracking.uri))

    def make(*overrides: str) -> DictConfig:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))

    return make


def _noisy(mean: float, n: int, sd: float, seed: int) -> list[float]:
    return list(mean + np.random.default_rng(seed).normal(0, sd, n))


def test_the_page_pools_siblings_and_every_run_is_cited(
    store: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """dim-like and scale-like sweeps share a base: one pooled answer. Width makes no
    difference (within a margin of 0.05), the scale does (0.30 apart, noise 0.01); the noise is
    the seeds' pooled spread; every run id in the store is on the page."""
    cfg = store()
    dims = [({"model.attention.output_dim": d}, _noisy(0.80, 4, 0.01, d)) for d in (64, 128)]
    scales = [
        ({"model.attention.scale": s}, _noisy(m, 4, 0.01, i))
        for i, (s, m) in enumerate([("sqrt_dk", 0.50), (8.0, 0.80)])
    ]
    ids = log_sweep(cfg, "dims", ["model.attention.output_dim"], dims)
    ids += log_sweep(cfg, "scales", ["model.attention.scale"], scales)
    path = report(store("report.margin=0.05"))
    text = path.read_text()
    rows = {
        line.split("|")[1].strip(): line
        for line in text.splitlines()
        if line.startswith("| model.")
    }
    assert "**matters**" in rows["model.attention.scale"], rows
    assert "**no difference**" in rows["model.attention.output_dim"], rows
    # the base (128, 8.0) was measured in both sweeps with the same seeds: one measurement each
    # (their mean). 3 configurations, each with the same 4 seeds: a balanced design, so the seed
    # is a block: the residual of configuration + seed, 12 - 3 - 3 = 6 degrees of freedom
    base_seeds = np.mean([dims[1][1], scales[1][1]], axis=0)
    table = np.array([dims[0][1], scales[0][1], base_seeds])  # configuration x seed
    resid = table - table.mean(1, keepdims=True) - table.mean(0, keepdims=True) + table.mean()
    sigma = float(np.sqrt((resid**2).sum() / 6))
    shown = re.search(r"sigma = ([0-9.]+) val_accuracy with (\d+) degrees", text)
    assert shown and abs(float(shown.group(1)) - sigma) < 1e-4 and shown.group(2) == "6", shown
    assert "The seed is a block of the model" in text
    assert "attention was not tested against plain averaging" in text  # no scale=uniform
    assert all(run_id in text for run_id in ids)
    assert (path.parent / "effects_1.png").is_file() and (path.parent / "best.yaml").is_file()
    logged = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("answers").experiment_id]
    )
    artifacts = {a.path for a in MlflowClient().list_artifacts(logged[0].info.run_id)}
    assert {"answers.md", "effects_1.png", "diagnostics_1.png"} <= artifacts


def test_knobs_crossed_in_the_trials_have_their_interaction_measured(
    store: Callable[..., DictConfig],
) -> None:
    """A 2x2 grid with 3 seeds each where width helps only at the base scale 8: interaction
    measured and found; a knob no trial crosses with the others is 'not measured' (its one
    value beside the base ran at the grid's base point, so it is still separable)."""
    cfg = store()
    means = {(64, 8.0): 0.9, (64, "sqrt_dk"): 0.7, (128, 8.0): 0.7}
    means[(128, "sqrt_dk")] = 0.7
    grid = [
        ({"model.attention.output_dim": d, "model.attention.scale": s}, _noisy(m, 3, 0.01, i))
        for i, ((d, s), m) in enumerate(means.items())
    ]
    log_sweep(cfg, "grid", ["model.attention.output_dim", "model.attention.scale"], grid)
    log_sweep(cfg, "lrs", ["train.learning_rate"], [({"train.learning_rate": 0.1}, [0.5, 0.52])])
    text = report(store()).read_text()
    crossed = next(
        line for line in text.splitlines() if "output_dim x model.attention.scale" in line
    )
    assert "**matters**" in crossed and "+0.2" in crossed, crossed
    alone = next(line for line in text.splitlines() if "x train.learning_rate" in line)
    assert "not measured" in alone, alone


def test_the_diagnostics_table_says_whether_the_scale_moves_saturation(
    store: Callable[..., DictConfig],
) -> None:
    """Saturation rises with the scale word learned (0.6 vs 0.1) and tracks the score."""
    cfg = store()
    scales = [
        ({"model.attention.scale": s}, _noisy(m, 3, 0.01, i))
        for i, (s, m) in enumerate([("learned", 0.9), ("sqrt_dk", 0.7)])
    ]

    def diag(config: Mapping[str, Any], score: float) -> tuple[float, float]:
        return (0.5, (0.6 if config["model.attention.scale"] == "learned" else 0.1) + score / 100)

    log_sweep(cfg, "scales", ["model.attention.scale"], scales, diagnostics=diag)
    text = report(store()).read_text()
    share = next(line for line in text.splitlines() if "the scale's effect" in line)
    saturation = share.split("|")[3]
    assert "**matters**" in saturation, share
    said = next(line for line in text.splitlines() if "saturation predicts" in line)
    assert re.search(r"rho = (0\.9\d|1\.00) \(p 0", said), said


def test_attention_that_never_moved_gets_no_verdict_from_float_noise(
    store: Callable[..., DictConfig],
) -> None:
    """Issue 22: after one short epoch every scale's runs show entropy 1.0000 to four decimals;
    a p-value against that near-zero residual once read "changes it". Judged against the
    diagnostics' margin (0.01), the scale's effect on entropy is at most negligible."""
    cfg = store()
    scales = [
        ({"model.attention.scale": s}, [0.80, 0.81, 0.79]) for s in ("learned", "sqrt_dk", 8.0)
    ]

    def diag(config: Mapping[str, Any], score: float) -> tuple[float, float]:
        tiny = {"learned": 3e-9, "sqrt_dk": 2e-9}.get(config["model.attention.scale"], 0.0)
        return (1.0 - tiny - score * 1e-10, 0.0159)

    log_sweep(cfg, "scales", ["model.attention.scale"], scales, diagnostics=diag)
    text = report(store()).read_text()
    share = next(line for line in text.splitlines() if "the scale's effect" in line)
    entropy = share.split("|")[2]
    assert "**matters**" not in entropy and (
        "**no difference**" in entropy or "**real but negligible**" in entropy
    ), share


def test_named_experiments_with_different_bases_are_refused_in_one_line(
    store: Callable[..., DictConfig],
) -> None:
    cfg = store()
    log_sweep(
        cfg, "dims", ["model.attention.output_dim"], [({"model.attention.output_dim": 64}, [0.8])]
    )
    other = {**BASE, "train.epochs": 5}
    log_sweep(
        cfg, "scales", ["model.attention.scale"], [({"model.attention.scale": 2.0}, [0.8])], other
    )
    with pytest.raises(ReportError) as raised:
        report(store("report.experiments=[dims,scales]"))
    message = str(raised.value)
    assert "\n" not in message and "train.epochs (2 vs 5)" in message, message
    # every sweep in the store: reported apart, one section each
    text = report(store()).read_text()
    assert "## dims" in text and "## scales" in text


def test_the_best_configuration_shows_its_single_test_accuracy(
    store: Callable[..., DictConfig],
) -> None:
    cfg = store()
    ids = log_sweep(
        cfg,
        "dims",
        ["model.attention.output_dim"],
        [({"model.attention.output_dim": 64}, [0.7]), ({"model.attention.output_dim": 32}, [0.9])],
    )
    experiment = MlflowClient().get_experiment_by_name("dims").experiment_id
    with mlflow.start_run(
        experiment_id=experiment, tags={"final": "true", "source_run_id": ids[1]}
    ):
        mlflow.log_metric("test_accuracy", 0.8765)
    text = report(store()).read_text()
    best = text[text.index("## The best configuration found") :]
    assert "model.attention.output_dim=32" in best and "**0.8765**" in best, best


def test_an_unknown_experiment_is_refused_in_one_line(store: Callable[..., DictConfig]) -> None:
    cfg = store()
    log_sweep(
        cfg, "dims", ["model.attention.output_dim"], [({"model.attention.output_dim": 64}, [0.8])]
    )
    with pytest.raises(ReportError, match=r"^no sweep named nope in sqlite:"):
        report(store("report.experiments=[nope]"))


@pytest.mark.slow  # a real process / a sweep of its own (issue 15: not in the quick loop)
def test_cli_report_on_an_empty_store_exits_2_with_one_line(
    tmp_path: Path, tiny_imdb: Path, cli_env: dict[str, str]
) -> None:
    """...without TensorFlow: a report trains nothing (7 s of CPU with it, 3 without)."""
    args = tiny_overrides(tmp_path, tiny_imdb)
    result, loaded = run_module_noting_imports("sweep.report", args, tmp_path, cli_env)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = own_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("no sweep in the MLflow store"), lines
    assert not (tmp_path / "reports").exists()
    assert loaded == []


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(not REAL_DATA.exists(), reason=f"real IMDB not found at {REAL_DATA}")
def test_a_small_study_runs_and_answers_on_a_slice_of_real_data(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """attention_study as shipped, shrunk (800 real reviews, 2 x 2 x 2 cells with the original
    initializer, 2 seeds, 1 epoch), then the page: every run cited, each knob and pair answered,
    the control judged, the confirmation stage side by side with the screen, the trials curve."""
    space = "search.space.model.attention"
    small = [
        "+experiment=attention_study",
        f"data.path={REAL_DATA}",
        "data.limit=800",
        "data.num_words=2000",
        "model.embedding_dim=16",
        "model.attention.output_dim=16",
        "train.learning_rate=0.01",
        "train.epochs=1",
        "train.verbose=0",
        "tracking.log_models=none",
        "tracking.log_figures=false",  # the page reads metrics, not the runs' figures
        "search.executions_per_trial=2",
        "search.confirm.seeds=2",
        f"{space}.output_dim.values=[16,8]",
        f"{space}.scale.values=[8.0,uniform]",
        f"{space}.initializer.values=[{{class_name: RandomUniform, config: "
        "{minval: -0.05, maxval: 0.05}}]",
        "search.space.data.seq_len.values=[32,64]",
        "search.max_trials=8",
    ]
    done = run_cli(small, tmp_path, cli_env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = run_cli(["report.experiments=[attention_study]"], tmp_path, cli_env, "sweep.report")
    assert result.returncode == 0, result.stderr[-3000:]
    text = (tmp_path / "reports" / "answers.md").read_text()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("attention_study").experiment_id
    parent = client.search_runs([experiment], "tags.sweep = 'attention_study'")[-1]
    trials = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    trials = [r for r in trials if STAGE_TAG not in r.data.tags]
    assert len(trials) == 8 and all(r.info.run_id in text for r in trials)
    for knob in ("output_dim", "scale"):
        assert f"| model.attention.{knob}" in text, knob
    assert "| data.seq_len" in text and "only this value tried" in text  # the initializer
    control = text.split("the `scale=uniform` control)", 1)[1].split("###", 1)[0]
    assert "| 8 " in control and "minus uniform" in control
    section = text.split("Screened vs confirmed", 1)[1].split("###", 1)[0]
    assert "best (trial" in section and "base" in section and "| best - " in section
    assert "| 8 " in text.split("How many trials", 1)[1]  # 16 runs: the curve reaches n = 10
    assert (tmp_path / "reports" / "tuning_1.png").is_file()


def test_resume_recovery_and_the_page_read_every_run_across_pages(
    store: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's page tokens, followed to the end: with pages of 2 runs, the sweep's parent is
    found behind its 8 newer trial runs, the trials counted for resume, every run cited on the
    page, and every run a gone process left RUNNING closed."""
    monkeypatch.setattr(tracking.paging, "PAGE_SIZE", 2)
    cfg = store()
    dims = [({"model.attention.output_dim": d}, _noisy(0.8, 2, 0.01, d)) for d in (16, 32, 64, 128)]
    ids = log_sweep(cfg, "dims", ["model.attention.output_dim"], dims)
    parent = tracking.sweep_parent("dims")
    assert parent is not None and parent.info.run_id not in ids
    assert {r.info.run_id for r in tracking.trial_runs(parent.info.run_id)} == set(ids)
    assert tracking.trials_done(parent.info.run_id) == len(dims)
    text = report(store()).read_text()
    assert all(run_id in text for run_id in ids)
    client = MlflowClient()
    experiment = client.create_experiment("crashed")
    left = {client.create_run(experiment).info.run_id for _ in range(5)}  # no pid: gone
    assert set(tracking.close_stale_runs(experiment)) == left
