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


def _grouping(column: pd.Series, max_values: int = 6) -> pd.Series:
    """Values as they are, or quartile bins for a continuous hyperparameter."""
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().all() and numbers.nunique() > max_values:
        return pd.qcut(numbers, 4, duplicates="drop").astype(str)
    return column.astype(str)


def effects(
    table: pd.DataFrame, hyperparameters: Sequence[str], objective: str, direction: str = "max"
) -> pd.DataFrame:
    """For each hyperparameter, the objective's mean, std and count per value (or bin), with
    the best value marked: which settings matter, at a glance."""
    parts = []
    for hp in hyperparameters:
        stats = (
            table.groupby(_grouping(table[hp]), observed=True)[objective]
            .agg(["mean", "std", "count"])
            .reset_index(names="value")
        )
        stats.insert(0, "hyperparameter", hp)
        best = stats["mean"].idxmax() if direction == "max" else stats["mean"].idxmin()
        stats["best"] = stats.index == best
        parts.append(stats.sort_values("mean", ascending=direction == "min"))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def seed_noise(repeats: Iterable[Sequence[float]]) -> float | None:
    """Pooled standard deviation of one configuration's repeated runs (executions or trials
    that share every value): how much the objective moves from seed alone."""
    squares, dof = 0.0, 0
    for values in repeats:
        if len(values) > 1:
            squares += float(pd.Series(values).var(ddof=1)) * (len(values) - 1)
            dof += len(values) - 1
    return (squares / dof) ** 0.5 if dof else None


def verdicts(effect_table: pd.DataFrame, noise: float | None, repeats: int = 1) -> list[str]:
    """In words a user can act on: does the best value beat the runner-up beyond seed noise?"""
    lines = []
    for hp, rows in effect_table.groupby("hyperparameter", sort=False):
        if len(rows) < 2:
            lines.append(f"{hp}: only {rows['value'].iloc[0]} was tried.")
            continue
        best, second = rows.iloc[0], rows.iloc[1]
        gap = abs(best["mean"] - second["mean"])
        head = (
            f"{hp}: {best['value']} ({best['mean']:.4f}) vs {second['value']} "
            f"({second['mean']:.4f})"
        )
        if noise is None:
            lines.append(
                f"{head}: seed-to-seed noise unknown (one run per configuration); set "
                "search.executions_per_trial=2 or more before trusting a gap of "
                f"{gap:.4f}."
            )
            continue
        n_best, n_second = best["count"] * repeats, second["count"] * repeats
        error = noise * (1 / n_best + 1 / n_second) ** 0.5
        if gap > 2 * error:
            lines.append(
                f"{head}: {best['value']} wins by {gap:.4f}, more than twice the seed "
                f"noise (±{error:.4f}) — a real difference; use {best['value']}."
            )
        else:
            lines.append(
                f"{head}: the gap {gap:.4f} is within seed noise (±{error:.4f}) — no "
                "evidence either is better; pick the cheaper one."
            )
    return lines


def pareto_front(cost: pd.Series, score: pd.Series, direction: str = "max") -> pd.Series:
    """Trials no other trial beats on both cost (lower) and score: what each point costs."""
    sign = 1 if direction == "max" else -1
    order = cost.sort_values(kind="stable").index
    front, best = pd.Series(False, index=cost.index), float("-inf")
    for i in order:
        if sign * score[i] > best:
            front[i], best = True, sign * score[i]
    return front
