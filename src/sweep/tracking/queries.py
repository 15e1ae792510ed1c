"""What a sweep reads back from MLflow: its parent, trials, curves, scores and configs.

Resuming, pruning, distributed workers and export all decide from what the store holds, so a
restarted or remote process sees the same sweep.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlflow
import numpy as np
import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from sweep.objective import Objective
from sweep.tracking.paging import all_runs, first_run
from sweep.vocabulary import (
    ORACLE_PORT_TAG,
    PARENT_TAG,
    REPLICATE_OF_TAG,
    STAGE_TAG,
    SWEEP_TAG,
    TRIAL_ID_TAG,
)


def best_value(history: Mapping[str, list[float]], metric: str, direction: str) -> float:
    """The objective's best epoch value; NaN when the metric was never logged."""
    values = [v for v in history.get(metric, []) if np.isfinite(v)]
    best = Objective(metric, direction).best(values)
    return float("nan") if best is None else float(best)


def existing_run(run_id: str, experiment: str) -> str | None:
    """`run_id` if this store holds it in `experiment` (a sweep resumes its own parent)."""
    try:
        run = MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return None
    return run_id if run.info.experiment_id == experiment else None


def finished_trial(parent_run_id: str, trial_id: str, objective: str) -> dict[str, float] | None:
    """The objective of a trial already logged FINISHED under this parent, if any."""
    parent = MlflowClient().get_run(parent_run_id)
    runs = MlflowClient().search_runs(  # one is enough: the first says it is done
        [parent.info.experiment_id],
        f"tags.{PARENT_TAG} = '{parent_run_id}' and tags.{TRIAL_ID_TAG} = '{trial_id}' "
        "and attributes.status = 'FINISHED'",
        max_results=1,
    )
    if not runs or f"best_{objective}" not in runs[0].data.metrics:
        return None
    return {objective: runs[0].data.metrics[f"best_{objective}"]}


def _is_repeat(run: Run) -> bool:
    """A seed repeat of a trial (`search.replicates`), not a trial of the search."""
    return REPLICATE_OF_TAG in run.data.tags


#: The stage tag's value on a sweep's confirmation stage run.
CONFIRMATION = "confirmation"


def _children(parent_run_id: str) -> list[Run]:
    parent = MlflowClient().get_run(parent_run_id)
    return all_runs([parent.info.experiment_id], f"tags.{PARENT_TAG} = '{parent_run_id}'")


def trial_runs(parent_run_id: str) -> list[Run]:
    """Every child run of a sweep, whatever its status (trials and their seed repeats; not its
    stage runs)."""
    return [r for r in _children(parent_run_id) if STAGE_TAG not in r.data.tags]


def confirmation_run(parent_run_id: str) -> Run | None:
    """The sweep's confirmation stage run (`search.confirm`), if it has started."""
    return next(
        (r for r in _children(parent_run_id) if r.data.tags.get(STAGE_TAG) == CONFIRMATION),
        None,
    )


def objective_curves(
    parent_run_id: str, metric: str, known: set[str] | frozenset[str] = frozenset()
) -> dict[str, dict[int, float]]:
    """Run id -> epoch (step) -> `metric`, for each FINISHED trial of this sweep (completed or
    pruned) not in `known`; several executions' values at one epoch are averaged."""
    client = MlflowClient()
    curves: dict[str, dict[int, float]] = {}
    for run in trial_runs(parent_run_id):
        if run.info.status != "FINISHED" or run.info.run_id in known or _is_repeat(run):
            continue
        by_step: dict[int, list[float]] = {}
        for point in client.get_metric_history(run.info.run_id, metric):
            by_step.setdefault(point.step, []).append(point.value)
        curves[run.info.run_id] = {s: float(np.mean(v)) for s, v in sorted(by_step.items())}
    return curves


def sweep_parent(name: str, parent_run_id: str | None = None) -> Run | None:
    """The sweep's parent run: the one asked for, else the newest sweep of experiment `name`."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return None
    if parent_run_id:
        return (
            client.get_run(parent_run_id)
            if existing_run(parent_run_id, experiment.experiment_id)
            else None
        )
    return first_run(
        [experiment.experiment_id],
        f"tags.{SWEEP_TAG} = '{name}'",
        ["attributes.start_time DESC"],
        _is_parent,
    )


def find_sweep_parent(experiment: str, name: str, oracle_port: int) -> str | None:
    """The RUNNING parent run of the distributed sweep `name` whose chief serves `oracle_port`
    (the newest, should an older chief have died without closing its own)."""
    parent = first_run(
        [experiment],
        f"attributes.status = 'RUNNING' and tags.{SWEEP_TAG} = '{name}' "
        f"and tags.{ORACLE_PORT_TAG} = '{oracle_port}'",
        ["attributes.start_time DESC"],
        _is_parent,
    )
    return None if parent is None else parent.info.run_id


def _is_parent(run: Run) -> bool:
    """A sweep's parent run, not one of its trials (they carry the sweep's tag too)."""
    return PARENT_TAG not in run.data.tags


def execution_scores(run_id: str, objective: str) -> list[float]:
    """Each execution's best objective value of one trial (several when seeds were repeated)."""
    history = MlflowClient().get_metric_history(run_id, f"execution_best_{objective}")
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def run_config(run_id: str) -> dict[str, Any]:
    """The resolved config a run logged."""
    text = mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml")
    return yaml.safe_load(text)


def best_epochs(run_id: str, objective: str, direction: str) -> int:
    """How many epochs it took the run to reach its best objective value."""
    history = sorted(MlflowClient().get_metric_history(run_id, objective), key=lambda m: m.step)
    best = Objective(objective, direction).best_of(history, key=lambda m: m.value)
    return 0 if best is None else best.step + 1


def best_finished(parent_run_id: str, objective: str, direction: str) -> float | None:
    """The best objective any worker has logged FINISHED under this parent so far."""
    key = f"best_{objective}"
    values = [
        r.data.metrics[key]
        for r in trial_runs(parent_run_id)
        if r.info.status == "FINISHED"
        and np.isfinite(r.data.metrics.get(key, np.nan))
        and not _is_repeat(r)
    ]
    return Objective(objective, direction).best(values)


def trials_done(parent_run_id: str) -> int:
    """Distinct trials logged FINISHED or FAILED under this parent (by any worker)."""
    return len(
        {
            r.data.tags.get(TRIAL_ID_TAG)
            for r in trial_runs(parent_run_id)
            if r.info.status in ("FINISHED", "FAILED") and not _is_repeat(r)
        }
    )


def run_metric(run_id: str, key: str) -> float | None:
    """One metric of a run, None when it was never logged."""
    return MlflowClient().get_run(run_id).data.metrics.get(key)
