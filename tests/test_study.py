"""What the answer page adds for a study: the uniform-attention control, screened vs confirmed,
the expected best of n trials, and the README block it rewrites. Sweeps are logged as the
tuner logs them (tests/test_report.py's `log_sweep`); nothing trains."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pytest
from omegaconf import DictConfig

from sweep import tracking
from sweep.errors import ReportError
from sweep.report import report, study
from sweep.report.job import END, START
from sweep.vocabulary import CONFIRM_OF_TAG, SELECTION_TAG, STAGE_TAG
from tests.test_report import _noisy, log_sweep, store  # noqa: F401  (store: a fixture)

SCALE = "model.attention.scale"


def _scales(cfg: DictConfig) -> list[str]:
    """Scale 8 and none beat uniform by 0.05 and 0.003 (noise 0.004, 4 seeds each)."""
    trials = [
        ({SCALE: s}, _noisy(m, 4, 0.004, i))
        for i, (s, m) in enumerate([(8.0, 0.85), ("none", 0.803), ("uniform", 0.80)])
    ]
    return log_sweep(cfg, "scales", [SCALE], trials)


def test_the_expected_best_of_n_is_unbiased_and_its_band_holds_it() -> None:
    rng = np.random.default_rng(3)
    scores = list(rng.normal(0.8, 0.01, 40))
    curve = study.tuning_curve(scores, "val_accuracy", 1.0, 0.95)
    assert curve is not None and curve.n[-1] == 40
    assert curve.estimate[0] == pytest.approx(np.mean(scores))  # best of 1: the mean
    assert curve.estimate[-1] == pytest.approx(max(scores))  # best of all: the maximum
    assert all(a <= b for a, b in zip(curve.estimate, curve.estimate[1:], strict=False))
    assert all(
        lo <= e <= hi for lo, e, hi in zip(curve.low, curve.estimate, curve.high, strict=True)
    )
    # Tang et al.: E[max of 2 without replacement] = sum_i y_(i) * (i - 1) / C(N, 2)
    ys = np.sort(scores)
    pairs = sum(ys[i] * i for i in range(40)) / (40 * 39 / 2)
    assert curve.estimate[1] == pytest.approx(pairs)
    assert study.tuning_curve(scores[:5], "val_accuracy", 1.0, 0.95) is None
    assert study.tuning_curve(scores, "val_loss", -1.0, 0.95) is None


def _confirmation(cfg: DictConfig, slices: dict[str, list[float]]) -> None:
    """A confirmation stage as `sweep.tuner.confirm` logs one, under the sweep `scales`."""
    parent = tracking.sweep_parent("scales")
    runs = tracking.trial_runs(parent.info.run_id)
    trials = {r.data.tags["trial_id"]: r for r in runs if "trial_id" in r.data.tags}
    picks = [
        {"roles": role, "run_id": trials[t].info.run_id, "trial_id": t, "screened": m}
        | {"sd": 0.004, "n": 4}
        for role, t, m in (("best", "0", 0.85), ("runner-up", "1", 0.803), ("base", "2", 0.80))
    ]
    tags = {STAGE_TAG: tracking.CONFIRMATION, "mlflow.parentRunId": parent.info.run_id}
    tags[SELECTION_TAG] = json.dumps(picks)
    experiment = parent.info.experiment_id
    with mlflow.start_run(experiment_id=experiment, tags=tags) as holder:
        for pick, role in zip(picks, slices, strict=True):
            for k, value in enumerate(slices[role]):
                child = {"mlflow.parentRunId": holder.info.run_id, "seed": str(1042 + k)}
                child |= {CONFIRM_OF_TAG: pick["run_id"], "trial_id": pick["trial_id"]}
                with mlflow.start_run(experiment_id=experiment, nested=True, tags=child):
                    mlflow.log_metrics({"confirmed_accuracy": value, "best_val_accuracy": value})


def test_the_control_screened_vs_confirmed_and_the_readme_block(
    tmp_path: Path,
    store: Callable[..., DictConfig],  # noqa: F811
) -> None:
    """One page: scale 8 matters against uniform, none does not; the confirmed gap is paired by
    seed and the curse measured; README's block becomes the page's headline, nothing else moves."""
    cfg = store()
    ids = _scales(cfg)
    slices = {"best": [0.84, 0.845, 0.842], "runner-up": [0.80, 0.81, 0.805]}
    _confirmation(cfg, slices | {"base": [0.79, 0.80, 0.795]})
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{START}\nold answer\n{END}\n\nafter\n")
    text = report(store(f"report.readme={readme}")).read_text()
    control = text.split("the `scale=uniform` control)", 1)[1].split("###", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in control.splitlines() if "|" in line}
    assert "**matters**" in rows["8"] and "97.50% CI" in rows["8"], rows  # 2 comparisons
    assert "**matters**" not in rows["none"], rows
    section = text.split("Screened vs confirmed", 1)[1].split("###", 1)[0]
    assert "0.8423 ± 0.0025 (3)" in section  # the best's slice accuracy over its 3 seeds
    gap = next(line for line in section.splitlines() if line.startswith("| best - runner-up"))
    assert "+0.0373" in gap and "**matters**" in gap  # paired by seed: 0.04, 0.035, 0.037
    assert "winner's curse, measured" in section and "-0.0077" in section  # 0.8423 - 0.85
    assert all(run_id in text for run_id in ids)  # the stage run is no trial: nothing else cited
    written = readme.read_text()
    assert written.startswith("# Title\n\nbefore\n\n" + START)
    assert written.endswith(END + "\n\nafter\n") and "old answer" not in written
    assert "| model.attention.scale" in written and text.split("\n\n")[1] in written
    readme.write_text("no block here\n")
    with pytest.raises(ReportError, match=r"report\.readme="):
        report(store(f"report.readme={readme}"))
