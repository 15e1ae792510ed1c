"""A sweep's trials as one pandas table: what the parent run logs and export writes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from mlflow.entities import Run

from sweep.objective import Objective

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
#: Tags of a trial run that median pruning stopped early (`search.pruning`).
PRUNED_TAG, PRUNED_AT_TAG = "pruned", "pruned_at_epoch"
#: Tags of a seed repeat (`search.replicates`): the trial run it repeats, and that trial's id.
REPLICATE_OF_TAG, REPLICATE_TRIAL_TAG = "replicate_of", "replicate_trial_id"


def frame(
    runs: Iterable[Run], hyperparameters: Sequence[str], objective: str, direction: str = "max"
) -> pd.DataFrame:
    """One row per trial run: status (and `PRUNED at epoch N` for a trial pruning stopped),
    every hyperparameter, final and best metrics, cost, run id, and its configuration's seeds
    (the trial and its seed repeats: `seeds`, their mean and std, `seed_scores`); sorted best
    first by that mean (failed and killed trials last)."""
    runs = list(runs)
    best = Objective(f"best_{objective}", direction)
    repeats = repeat_scores(runs, best.name)
    rows = []
    for run in runs:
        if REPLICATE_OF_TAG in run.data.tags:
            continue
        metrics, params = run.data.metrics, run.data.params
        row: dict[str, object] = {
            "trial_id": run.data.tags.get("trial_id"),
            "status": run.info.status,
            "pruned": pruned(run.data.tags),
        }
        row.update({hp: param_value(params, hp) for hp in hyperparameters})
        row[best.name] = metrics.get(best.name)
        row.update(_seed_columns(row[best.name], repeats.get(run.info.run_id, []), best.name))
        row.update({f"final_{m}": metrics.get(m) for m in FINAL_METRICS})
        row.update({m: metrics.get(m) for m in OUTCOME_METRICS})
        row["error"] = run.data.tags.get("error")
        row["run_id"] = run.info.run_id
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(
        [f"mean_{best.name}", "trial_id"], ascending=[best.ascending, True], na_position="last"
    ).reset_index(drop=True)


def param_value(params: Mapping[str, Any], key: str) -> str | None:
    """A config value from a run's dotted params: as logged, or, for a mapping logged key by
    key (a Keras initializer's config), as `Name(key=value,...)`; None when never logged."""
    if key in params:
        return str(params[key])
    prefix = key + "."
    nested = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
    if not nested:
        return None
    name = nested.pop("class_name", "")
    args = ",".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(nested.items()))
    return f"{name}({args})"


def repeat_scores(runs: Iterable[Run], metric: str) -> dict[str, list[float]]:
    """Trial run id -> the scores of its finished seed repeats (`search.replicates`)."""
    found: dict[str, list[float]] = {}
    for run in runs:
        owner = run.data.tags.get(REPLICATE_OF_TAG)
        if owner and run.info.status == "FINISHED" and metric in run.data.metrics:
            found.setdefault(owner, []).append(run.data.metrics[metric])
    return found


def _seed_columns(own: object, repeats: Sequence[float], best: str) -> dict[str, object]:
    """A configuration's seeds: how many, their mean and spread, and the scores themselves."""
    scores = [float(own), *repeats] if isinstance(own, int | float) else []
    return {
        "seeds": len(scores) or None,
        f"mean_{best}": float(pd.Series(scores).mean()) if scores else None,
        f"std_{best}": float(pd.Series(scores).std()) if len(scores) > 1 else None,
        "seed_scores": ";".join(f"{v:.6g}" for v in scores) or None,
    }


def pruned(tags: Mapping[str, str]) -> str | None:
    """`PRUNED at epoch N` for a trial run median pruning stopped after N epochs, else None."""
    if tags.get(PRUNED_TAG) != "true":
        return None
    return f"PRUNED at epoch {tags.get(PRUNED_AT_TAG, '?')}"


def _grouping(column: pd.Series, max_values: int = 6) -> pd.Series:
    """Values as they are, or quartile bins for a continuous hyperparameter."""
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().all() and numbers.nunique() > max_values:
        return pd.qcut(numbers, 4, duplicates="drop").astype(str)
    if numbers.notna().all() and column.dtype.kind != "b":
        return numbers.map(shown)  # a float step's 0.30000000000000004 is 0.3 to people
    return column.astype(str)


def effects(
    table: pd.DataFrame, hyperparameters: Sequence[str], objective: str, direction: str = "max"
) -> pd.DataFrame:
    """For each hyperparameter, the objective's mean, std and count per value (or bin), with
    the best value marked: which settings matter, at a glance."""
    goal, parts = Objective(objective, direction), []
    for hp in hyperparameters:
        stats = (
            table.groupby(_grouping(table[hp]), observed=True)[objective]
            .agg(["mean", "std", "count"])
            .reset_index(names="value")
        )
        stats.insert(0, "hyperparameter", hp)
        stats["best"] = stats.index == (goal.sign * stats["mean"]).idxmax()  # the first of equals
        parts.append(stats.sort_values("mean", ascending=goal.ascending))
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


def judged(
    finished: pd.DataFrame,
    hyperparameters: Sequence[str],
    objective: str,
    direction: str = "max",
    executions: Mapping[str, Sequence[float]] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """The effect table and its verdicts: the seed noise comes from each trial's executions
    (`executions`: run id -> each execution's best), else from trials that drew the same values."""
    per_run = dict(executions or {})
    if "seeds" in finished and (finished["seeds"].fillna(1) > 1).any():  # fresh seeds win
        for run_id, scores in zip(finished["run_id"], finished["seed_scores"], strict=True):
            if isinstance(scores, str) and ";" in scores:
                per_run[run_id] = [float(v) for v in scores.split(";")]
    each = finished.assign(
        **{objective: finished["run_id"].map(per_run).where(finished["run_id"].isin(per_run))}
    ).explode(objective)
    each[objective] = each[objective].astype(float).fillna(finished[objective])
    effect_table = effects(each, hyperparameters, objective, direction)
    noise = seed_noise(list(per_run.values()))
    if noise is None:
        same = finished.groupby([finished[h].astype(str) for h in hyperparameters])[objective]
        noise = seed_noise(list(v) for _, v in same)
    return effect_table, verdicts(effect_table, noise)


def shown(value: object) -> str:
    """A hyperparameter value for people: floats to 4 significant digits, the rest as is."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if value.strip().lstrip("+-").isdigit():
            return value.strip()
        value = number
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def short_names(hyperparameters: Sequence[str]) -> dict[str, str]:
    """Each dotted key's last part, or the whole key where two would read the same."""
    last = [hp.rsplit(".", 1)[-1] for hp in hyperparameters]
    return {
        hp: n if last.count(n) == 1 else hp for hp, n in zip(hyperparameters, last, strict=True)
    }


def description(
    table: pd.DataFrame,
    hyperparameters: Sequence[str],
    objective: str,
    direction: str = "max",
    *,
    max_trials: int | None = None,
    link: Callable[[str], str] | None = None,
    board: str | None = None,
    executions: Mapping[str, Sequence[float]] | None = None,
    top: int = 5,
) -> str:
    """A sweep's standing in markdown, for MLflow's experiment and run descriptions: one line
    with the best trial (what lists of experiments show) and a link to `board`, the page of all
    trials, then the top trials and the verdicts. `link` turns a run id into a trial's link."""
    best = f"best_{objective}"
    finished = table[table["status"] == "FINISHED"].dropna(subset=[best])
    failed = int((table["status"] == "FAILED").sum())
    stopped = int(table["pruned"].notna().sum()) if "pruned" in table else 0
    done = f"{len(finished)} finished" + (f" ({stopped} pruned)" if stopped else "")
    done += f", {failed} failed" if failed else ""
    done += f" of {max_trials} trials" if max_trials else " trials"
    if finished.empty:
        return f"No trial finished yet ({done}).\n"
    names = short_names(hyperparameters)
    first = finished.iloc[0]
    values = ", ".join(f"{names[hp]}={shown(first[hp])}" for hp in hyperparameters)
    headline = (
        f"Best {objective} {_seeds(first, best)}: trial-{first['trial_id']} ({values}); {done}."
    )
    lines = [
        f"{headline} [All trials, best first]({board})" if board else headline,
        "",
        f"**Top {min(top, len(finished))} by {objective}**",
        "",
    ]
    rows = []
    for rank, (_, row) in enumerate(finished.head(top).iterrows(), 1):
        trial = f"trial-{row['trial_id']}"
        cells = {"rank": str(rank), "trial": f"[{trial}]({link(row['run_id'])})" if link else trial}
        cells.update({names[hp]: shown(row[hp]) for hp in hyperparameters})
        cells[objective] = _seeds(row, best)
        seconds = row.get("seconds_per_epoch")
        cells["s/epoch"] = "" if seconds is None or pd.isna(seconds) else f"{seconds:.1f}"
        rows.append(cells)
    lines.append(pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True))
    if len(finished) > 1:
        _, said = judged(finished, hyperparameters, best, direction, executions)
        lines += ["", "**Which hyperparameters matter**", "", *(f"- {line}" for line in said)]
    return "\n".join(lines) + "\n"


def _seeds(row: pd.Series, best: str) -> str:
    """A trial's score, or its configuration's mean ± std over its seeds when repeated."""
    n = row.get("seeds")
    if n is None or pd.isna(n) or n < 2:
        return f"{row[best]:.4f}"
    return f"{row[f'mean_{best}']:.4f} ± {row[f'std_{best}']:.4f} ({int(n)} seeds)"


def pareto_front(cost: pd.Series, score: pd.Series, direction: str = "max") -> pd.Series:
    """Trials no other trial beats on both cost (lower) and score: what each point costs."""
    sign = Objective(str(score.name or "score"), direction).sign
    order = cost.sort_values(kind="stable").index
    front, best = pd.Series(False, index=cost.index), float("-inf")
    for i in order:
        if sign * score[i] > best:
            front[i], best = True, sign * score[i]
    return front
