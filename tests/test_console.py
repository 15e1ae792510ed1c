"""What a user reads: a quiet console, numbers rounded for people, progress with an ETA, and
each command's last line the link to its experiment in the MLflow UI."""

from __future__ import annotations

import math
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweep import leaderboard, quiet, tracking
from sweep.tuner.trials import TrialTracking, _span
from sweep.vocabulary import EXPERIMENT_KIND_TAG
from tests.conftest import PYTHON, copy_store, run_cli, tiny_overrides

#: Lines TensorFlow 2.21 logs while its libraries load (seen on a 2-core CPU machine).
STARTUP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1795965528.180249   13493 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results.\n",
    "I0000 00:00:1795965528.180562   13493 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.\n",
    "W0000 00:00:1795965528.180562   13493 some.cc:1] a warning\n",
    "E0000 00:00:1795965531.287166   13493 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
]
#: Every line of `python -m sweep ...` that TensorFlow's C++ side, or absl, wrote.
TF_LINE = re.compile(rf"{re.escape(quiet.ABSL_BANNER)}|{quiet.ABSL_LINE.pattern}", re.MULTILINE)
#: The per-trial line: i/N, values, outcome, best so far, elapsed, ETA.
TRIAL_LINE = re.compile(
    r"trial (\d+)/(\d+)  (.+)  ->  val_accuracy=(\d\.\d{4})  \(best (\d\.\d{4})\)  "
    r"elapsed (\d+s|\d+m\d\ds), ETA (\d+s|\d+m\d\ds)$"
)


@pytest.mark.parametrize(
    ("level", "hidden"),
    [(0, set()), (1, {0, 1, 2}), (2, {0, 1, 2, 3}), (3, {0, 1, 2, 3, 4})],
)
def test_startup_lines_below_the_level_are_noise(level: int, hidden: set[int]) -> None:
    assert {i for i, line in enumerate(STARTUP) if quiet.is_startup_noise(line, level)} == hidden
    assert not quiet.is_startup_noise("I0000 is how my review starts\n", 3)
    assert not quiet.is_startup_noise("sweep.data: read 400 reviews\n", 3)


def test_held_stderr_passes_on_everything_but_the_startup_lines(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with quiet.held_stderr(3):
        for line in [*STARTUP[:3], "Traceback: something real\n", *STARTUP[3:]]:
            os.write(2, line.encode())
    assert capfd.readouterr().err == "Traceback: something real\n"


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        ([], False),
        (["+experiment=smoke", "train.verbose=2"], False),
        (["hydra.verbose=true"], True),
        (["hydra.verbose=[sweep.tuner]"], True),
        (["hydra.verbose=false"], False),
    ],
)
def test_hydra_verbose_asks_for_tensorflow_lines(argv: list[str], verbose: bool) -> None:
    assert quiet.verbose_requested(argv) is verbose


def _import_tensorflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """A fresh process that imports the package, then TensorFlow, and runs one op."""
    code = "import sweep, tensorflow as tf; print(int(tf.constant(1) + 1))"
    return subprocess.run(
        [PYTHON, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_tensorflow_is_quiet_unless_asked(cli_env: dict[str, str]) -> None:
    """TF_CPP_MIN_LOG_LEVEL=0 or hydra.verbose=true bring TensorFlow's start-up lines back. That
    they are kept off by default is what the sweep and export below show (their stderr empty)
    and tests/test_reliability.py's refused command lines (no TensorFlow line)."""
    for asked in (
        _import_tensorflow({**cli_env, "TF_CPP_MIN_LOG_LEVEL": "0"}),
        _import_tensorflow(cli_env, "hydra.verbose=true"),
    ):
        assert asked.stdout == "2\n"
        assert TF_LINE.search(asked.stderr), asked.stderr


def test_spans_read_as_durations() -> None:
    assert [_span(s) for s in (0.4, 45, 185, 7620)] == ["0s", "45s", "3m05s", "2h07m"]


def test_hyperparameter_values_are_shown_to_four_significant_digits() -> None:
    shown = [leaderboard.shown(v) for v in ("0.000234567", "64", "sqrt_dk", 0.1 + 0.2, True)]
    assert shown == ["0.0002346", "64", "sqrt_dk", "0.3", "True"]


def _table() -> pd.DataFrame:
    rows = [
        ("0", "FINISHED", "64", "0.001", 0.8512345, 12.0),
        ("1", "FINISHED", "128", "0.0003", 0.8399999, 20.5),
        ("2", "FAILED", "16", "0.003", None, None),
        ("3", "FINISHED", "64", "0.000123456", 0.8301, 11.9),
    ]
    return pd.DataFrame(
        [
            {
                "trial_id": t,
                "status": s,
                "model.attention.output_dim": dim,
                "train.learning_rate": lr,
                "best_val_accuracy": best,
                "seconds_per_epoch": sec,
                "run_id": f"run{t}",
            }
            for t, s, dim, lr, best, sec in rows
        ]
    )


def test_the_description_leads_with_the_best_trial_then_the_top_trials_and_verdicts() -> None:
    hps = ["model.attention.output_dim", "train.learning_rate"]
    text = leaderboard.description(
        _table(),
        hps,
        "val_accuracy",
        max_trials=10,
        link=lambda r: f"#/runs/{r}",
        board="#/board",
        top=2,
    )
    lines = text.splitlines()
    assert lines[0] == (
        "Best val_accuracy 0.8512: trial-0 (output_dim=64, learning_rate=0.001); "
        "3 finished, 1 failed of 10 trials. [All trials, best first](#/board)"
    )
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + 2  # header, rule, the top two
    assert "[trial-0](#/runs/run0)" in table[2] and "0.8512" in table[2] and "12.0" in table[2]
    assert "[trial-1](#/runs/run1)" in table[3] and "0.8400" in table[3]
    assert "trial-3" not in text and "0.8399999" not in text
    # three trials cannot separate two knobs (128 only ever ran with 0.0003): the description
    # says so in the answer page's one line, rather than estimating anything
    assert (
        "- cannot separate model.attention.output_dim, train.learning_rate: the runs never vary "
        "them independently"
    ) in text


def test_no_finished_trial_says_so() -> None:
    table = _table().assign(status="FAILED")
    text = leaderboard.description(table, ["model.attention.output_dim"], "val_accuracy")
    assert text == "No trial finished yet (0 finished, 4 failed trials).\n"


def test_runs_page_links() -> None:
    assert tracking.runs_page("sqlite:///mlruns/mlflow.db", "3") == (
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    )
    assert tracking.runs_page("http://mlflow.lab:8080/", "3", "leaderboard") == (
        "http://mlflow.lab:8080/#/experiments/3/runs?workflowType=machine_learning"
        "&viewStateShareKey=leaderboard"
    )


def test_experiments_are_typed_as_model_training(make_config: Callable[..., DictConfig]) -> None:
    cfg = make_config()
    tracking.configure(cfg.tracking)
    client = MlflowClient()
    created = tracking.use_experiment("typed", cfg.tracking)
    older = client.create_experiment("untyped")  # as an earlier version left it
    assert tracking.use_experiment("untyped", cfg.tracking) == older
    for experiment in (created, older):
        tags = client.get_experiment(experiment).tags
        assert tags[EXPERIMENT_KIND_TAG] == "custom_model_development"


def _last_line(output: str) -> str:
    return output.rstrip("\n").splitlines()[-1]


@pytest.mark.slow
def test_a_sweep_and_its_export_read_cleanly_and_end_with_the_runs_link(
    tmp_path: Path, tiny_imdb: Path, migrated_store: Path, cli_env: dict[str, str]
) -> None:
    """What a user's terminal shows, so real processes: TensorFlow's lines are held back there."""
    overrides = [*tiny_overrides(tmp_path, tiny_imdb), "search.max_trials=2"]
    copy_store(migrated_store, tmp_path)
    swept = run_cli(["+experiment=smoke", *overrides], tmp_path, cli_env)
    assert swept.returncode == 0, swept.stderr[-3000:]
    assert swept.stderr == ""  # nothing from TensorFlow, absl or MLflow
    assert not TF_LINE.search(swept.stdout), swept.stdout

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    link = (
        f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs"
        "?workflowType=machine_learning&viewStateShareKey=leaderboard"
    )
    assert _last_line(swept.stdout) == link
    assert "mlflow ui --backend-store-uri sqlite:///" in swept.stdout.splitlines()[-2]

    trials = [m for line in swept.stdout.splitlines() if (m := TRIAL_LINE.search(line))]
    assert [(m[1], m[2]) for m in trials] == [("1", "2"), ("2", "2")]
    assert trials[0][7] != "0s" and trials[1][7] == "0s"  # ETA: one trial's time, then none
    best = max(
        r.data.metrics["best_val_accuracy"]
        for r in client.search_runs([experiment.experiment_id], "tags.trial_id != ''")
    )
    done = re.search(r"sweep smoke done: best val_accuracy = (\S+)$", swept.stdout, re.MULTILINE)
    assert done and re.fullmatch(r"\d\.\d{4}", done[1]), swept.stdout
    assert math.isclose(float(done[1]), best, abs_tol=5e-5)
    assert trials[-1][5] == done[1]

    exported = run_cli(["+experiment=smoke", *overrides], tmp_path, cli_env, "sweep.export")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert exported.stderr == ""
    assert _last_line(exported.stdout) == link
    ranked = re.search(r"#1  best_val_accuracy = (\S+)   re-run", exported.stdout)
    assert ranked and ranked[1] == done[1]


def test_eta_is_the_mean_trial_time_times_the_trials_left_within_the_time_budget() -> None:
    eta = TrialTracking._eta
    plain = SimpleNamespace(oracle=SimpleNamespace())
    assert [eta(plain, 3, 60.0, 2), eta(plain, 0, 60.0, 2), eta(plain, 3, 60.0, 0)] == [
        "1m30s",
        "0s",
        "-",
    ]
    budget = SimpleNamespace(budget=("2m", 120.0), clock=time.monotonic() - 60)
    assert eta(SimpleNamespace(oracle=budget), 10, 60.0, 2) == "1m30s"  # 60 s left + a trial
    spent = SimpleNamespace(budget=("1m", 60.0), clock=time.monotonic() - 61)
    assert eta(SimpleNamespace(oracle=spent), 10, 61.0, 2) == "0s"


def test_a_single_run_ends_with_its_runs_link(
    make_config: Callable[..., DictConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    from sweep.__main__ import run as command  # what `python -m sweep` runs

    cfg = make_config("train.epochs=1")
    command(cfg)
    experiment = MlflowClient().get_experiment_by_name(cfg.name).experiment_id
    assert _last_line(capsys.readouterr().out) == (
        f"http://127.0.0.1:5000/#/experiments/{experiment}/runs?workflowType=machine_learning"
    )


def test_effects_group_a_float_steps_values_as_people_read_them() -> None:
    """Keras Tuner's float step gives 0.2 + 0.1 = 0.30000000000000004: one group, shown 0.3."""
    table = pd.DataFrame(
        {
            "model.dropout": ["0.2", "0.30000000000000004", "0.3", "0.2"],
            "val_accuracy": [1, 2, 3, 4],
        }
    )
    effects = leaderboard.effects(table, ["model.dropout"], "val_accuracy")
    assert sorted(effects["value"]) == ["0.2", "0.3"]
    assert effects.set_index("value").loc["0.3", "count"] == 2
