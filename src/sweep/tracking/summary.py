"""A sweep's standing on its parent run: the leaderboard CSV, summary plots, the best value,
and the description (what the MLflow UI shows first) linking to the saved leaderboard view."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from sweep import leaderboard, plots
from sweep.objective import Objective
from sweep.tracking.queries import execution_scores, trial_runs
from sweep.tracking.ui import (
    LEADERBOARD_VIEW,
    leaderboard_view,
    runs_route,
    save_view,
    tag_experiment,
)
from sweep.vocabulary import BEST_RUN_TAG, NOTE_TAG

#: Trials the leaderboard in a sweep's descriptions shows; the most text a description holds.
DESCRIPTION_TOP, MAX_NOTE = 5, 8000


@dataclass(frozen=True)
class Standing:
    """What a sweep's standing is made of, read once from its config: the refresh after every
    trial takes this, not the config."""

    #: the searched config keys, in the space's order
    keys: tuple[str, ...]
    objective: Objective
    #: the trials the search plans; None when Hyperband decides
    max_trials: int | None
    executions: int
    pruning: bool
    #: the verdicts' level and practical floor: the answer page's (`report.alpha`, `.margin`)
    alpha: float = 0.05
    margin: float = 0.01

    @classmethod
    def of(cls, cfg: DictConfig) -> Standing:
        search, report = cfg.search, cfg.get("report") or {}
        return cls(
            keys=tuple(str(key) for key in search.space),
            objective=Objective(str(search.objective), str(search.direction)),
            max_trials=None if search.tuner == "hyperband" else int(search.max_trials),
            executions=int(search.executions_per_trial),
            pruning=search.get("pruning", "none") == "median",
            alpha=float(report.get("alpha", cls.alpha)),
            margin=float(report.get("margin", cls.margin)),
        )


def log_leaderboard(parent_run_id: str, standing: Standing) -> float | None:
    """Refresh the sweep's leaderboard CSV and summary plots on its parent run; the best value."""
    keys, objective = list(standing.keys), standing.objective
    table = leaderboard.frame(trial_runs(parent_run_id), keys, objective.name, objective.direction)
    client = MlflowClient()
    if table.empty:
        return None
    client.log_text(parent_run_id, table.to_csv(index=False), "leaderboard.csv")
    best_column = f"best_{objective.name}"
    finished = table[table["status"] == "FINISHED"].dropna(subset=[best_column])
    describe_sweep(parent_run_id, standing, table, finished)
    if finished.empty:
        return None
    client.log_figure(
        parent_run_id,
        plots.objective_by_hyperparameter(finished, keys, best_column),
        "objective_by_hyperparameter.png",
    )
    client.log_figure(
        parent_run_id,
        plots.parallel_coordinates(finished, keys, best_column),
        "parallel_coordinates.png",
    )
    best = float(finished[best_column].iloc[0])
    client.log_metric(parent_run_id, best_column, best)
    client.set_tag(parent_run_id, BEST_RUN_TAG, finished["run_id"].iloc[0])
    return best


def describe_sweep(
    parent_run_id: str, standing: Standing, table: pd.DataFrame, finished: pd.DataFrame
) -> str:
    """The sweep's standing (best trial, top trials, verdicts) as the description of its parent
    run and of its experiment, which is what the MLflow UI shows first; returns the markdown."""
    client, objective = MlflowClient(), standing.objective
    experiment = client.get_run(parent_run_id).info.experiment_id
    executions = None
    if standing.executions > 1:  # each trial's seeds: the noise the verdicts need
        executions = {run: execution_scores(run, objective.name) for run in finished["run_id"]}
    text = leaderboard.description(
        table,
        list(standing.keys),
        objective.name,
        objective.direction,
        max_trials=standing.max_trials,
        link=lambda run_id: (
            f"#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"
        ),
        board=runs_route(experiment, LEADERBOARD_VIEW),
        executions=executions,
        top=DESCRIPTION_TOP,
        alpha=standing.alpha,
        margin=standing.margin,
    )[:MAX_NOTE]
    _set_shared_tag(client, parent_run_id, text)
    tag_experiment(experiment, NOTE_TAG, text)
    view = leaderboard_view(parent_run_id, standing.keys, objective, standing.pruning)
    save_view(experiment, LEADERBOARD_VIEW, "All trials, best first", view)
    return text


def _set_shared_tag(client: MlflowClient, run_id: str, text: str) -> None:
    """The parent's note, which every worker rewrites after its trials: on PostgreSQL two
    first writes can race to insert the tag row (UniqueViolation, answered BAD_REQUEST; the
    short soak found it). The row is there then, and the second try updates it."""
    try:
        client.set_tag(run_id, NOTE_TAG, text)
    except MlflowException as err:
        if "UniqueViolation" not in str(err) and "unique constraint" not in str(err):
            raise
        client.set_tag(run_id, NOTE_TAG, text)
