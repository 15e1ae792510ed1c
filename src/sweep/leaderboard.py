"""A sweep's trials as one pandas table: what the parent run logs and export writes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd
from mlflow.entities import Run

#: Metrics a trial logs once, at its end, that a reader compares trials by.
OUTCOME_METRICS = (
    "duration_s",
    "seconds_per_epoch",
    "epochs_run",
    "param_count",
    "attention_entropy",
    "attention_saturation",
)
#: Per-epoch metrics whose last value is shown.
FINAL_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def frame(
    runs: Iterable[Run], hyperparameters: Sequence[str], objective: str, direction: str = "max"
) -> pd.DataFrame:
    """One row per trial run: status, every hyperparameter, final and best metrics, cost, run id;
    sorted best first (failed and killed trials last)."""
    rows = []
    for run in runs:
        metrics, params = run.data.metrics, run.data.params
        row: dict[str, object] = {
            "trial_id": run.data.tags.get("trial_id"),
            "status": run.info.status,
        }
        row.update({hp: params.get(hp) for hp in hyperparameters})
        row[f"best_{objective}"] = metrics.get(f"best_{objective}")
        row.update({f"final_{m}": metrics.get(m) for m in FINAL_METRICS})
        row.update({m: metrics.get(m) for m in OUTCOME_METRICS})
        row["error"] = run.data.tags.get("error")
        row["run_id"] = run.info.run_id
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    best = f"best_{objective}"
    return table.sort_values(
        [best, "trial_id"], ascending=[direction == "min", True], na_position="last"
    ).reset_index(drop=True)
