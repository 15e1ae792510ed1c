"""A sweep's trials as one pandas table: what the parent run logs and export writes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
from mlflow.entities import Run

from sweep import effects as shared
from sweep.effects import shown
from sweep.errors import ReportError
from sweep.objective import Objective
from sweep.vocabulary import (
    ERROR_TAG,
    PRUNED_AT_TAG,
    PRUNED_TAG,
    REPLICATE_OF_TAG,
    SEED_TAG,
    TRIAL_ID_TAG,
)

__all__ = ["shown"]  # where the package's callers have long found it

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
    """One row per trial run: status (and `PRUNED at epoch N` for a trial pruning stopped),
    every hyperparameter, final and best metrics, cost, run id, and its configuration's seeds
    (the trial and its seed repeats: `seeds`, their mean and std, `seed_scores` and the seeds
    they ran with, `seed_ids`); sorted best first by that mean (failed and killed trials last)."""
    runs = list(runs)
    best = Objective(f"best_{objective}", direction)
    repeats = repeat_scores(runs, best.name)
    rows = []
    for run in runs:
        if REPLICATE_OF_TAG in run.data.tags:
            continue
        metrics, params = run.data.metrics, run.data.params
        row: dict[str, object] = {
            "trial_id": run.data.tags.get(TRIAL_ID_TAG),
            "status": run.info.status,
            "pruned": pruned(run.data.tags),
        }
        row.update({hp: param_value(params, hp) for hp in hyperparameters})
        row[best.name] = metrics.get(best.name)
        own = (int(run.data.tags.get(SEED_TAG, 0)), row[best.name])
        row.update(_seed_columns(own, repeats.get(run.info.run_id, []), best.name))
        row.update({f"final_{m}": metrics.get(m) for m in FINAL_METRICS})
        row.update({m: metrics.get(m) for m in OUTCOME_METRICS})
        row["error"] = run.data.tags.get(ERROR_TAG)
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


def repeat_scores(runs: Iterable[Run], metric: str) -> dict[str, list[tuple[int, float]]]:
    """Trial run id -> the (seed, score) of each finished seed repeat (`search.replicates`)."""
    found: dict[str, list[tuple[int, float]]] = {}
    for run in runs:
        owner = run.data.tags.get(REPLICATE_OF_TAG)
        if owner and run.info.status == "FINISHED" and metric in run.data.metrics:
            seed = int(run.data.tags.get(SEED_TAG, 0))
            found.setdefault(owner, []).append((seed, run.data.metrics[metric]))
    return found


def _seed_columns(
    own: tuple[int, object], repeats: Sequence[tuple[int, float]], best: str
) -> dict[str, object]:
    """A configuration's seeds: how many, their mean and spread, the scores and their seeds."""
    pairs = [(own[0], float(own[1])), *repeats] if isinstance(own[1], int | float) else []
    scores = [score for _, score in pairs]
    return {
        "seeds": len(scores) or None,
        f"mean_{best}": float(pd.Series(scores).mean()) if scores else None,
        f"std_{best}": float(pd.Series(scores).std()) if len(scores) > 1 else None,
        # repr: the exact floats, so export and the answer page fit the same numbers
        "seed_scores": ";".join(repr(v) for v in scores) or None,
        "seed_ids": ";".join(str(seed) for seed, _ in pairs) or None,
    }


def pruned(tags: Mapping[str, str]) -> str | None:
    """`PRUNED at epoch N` for a trial run median pruning stopped after N epochs, else None."""
    if tags.get(PRUNED_TAG) != "true":
        return None
    return f"PRUNED at epoch {tags.get(PRUNED_AT_TAG, '?')}"


def effects(
    table: pd.DataFrame, hyperparameters: Sequence[str], objective: str, direction: str = "max"
) -> pd.DataFrame:
    """For each hyperparameter, the objective's mean, std and count per value (or quantile bin,
    as the shared model cuts a continuous one), with the best value marked: at a glance."""
    goal, parts = Objective(objective, direction), []
    for hp in hyperparameters:
        stats = (
            table.groupby(shared.levels_of(table[hp].astype(str)), observed=True)[objective]
            .agg(["mean", "std", "count"])
            .reset_index(names="value")
        )
        stats.insert(0, "hyperparameter", hp)
        stats["best"] = stats.index == (goal.sign * stats["mean"]).idxmax()  # the first of equals
        parts.append(stats.sort_values("mean", ascending=goal.ascending))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def observations(
    finished: pd.DataFrame,
    hyperparameters: Sequence[str],
    objective: str,
    executions: Mapping[str, Sequence[float]] | None = None,
) -> pd.DataFrame:
    """One row per seed of every finished trial, as the answer page reads them from MLflow: the
    trial's executions (seed + k) where it trained several, else its own score, then its seed
    repeats with their seeds."""
    rows = []
    for _, trial in finished.iterrows():
        seeds, scores = _seeds_of(trial, objective)
        ran = list((executions or {}).get(trial["run_id"], []))
        if len(ran) > 1:
            seeds = [seeds[0] + k for k in range(len(ran))] + seeds[1:]
            scores = ran + scores[1:]
        for seed, score in zip(seeds, scores, strict=True):
            rows.append({**{hp: trial[hp] for hp in hyperparameters}, "seed": seed, "y": score})
    table = pd.DataFrame(rows, columns=[*hyperparameters, "seed", "y"])
    return table.assign(obs=range(1, len(table) + 1))


def _seeds_of(trial: pd.Series, objective: str) -> tuple[list[int], list[float]]:
    """A trial's seeds and scores: its own and its repeats' (`seed_ids`, `seed_scores`)."""
    ids, scores = trial.get("seed_ids"), trial.get("seed_scores")
    if isinstance(ids, str) and isinstance(scores, str):
        return [int(s) for s in ids.split(";")], [float(v) for v in scores.split(";")]
    return [int(trial.get("seed", 0) or 0)], [float(trial[objective])]


def judged(
    finished: pd.DataFrame,
    hyperparameters: Sequence[str],
    objective: str,
    direction: str = "max",
    executions: Mapping[str, Sequence[float]] | None = None,
    *,
    alpha: float = 0.05,
    margin: float = 0.01,
) -> tuple[pd.DataFrame, list[str]]:
    """The effect table and the verdicts, one line per knob, from the model and in the words
    the answer page uses for the same runs (`sweep.effects`); a design that cannot separate its
    knobs gets the one line that says so."""
    table = observations(finished, hyperparameters, objective, executions)
    seeds = table.rename(columns={"y": objective})
    effect_table = effects(seeds, hyperparameters, objective, direction)
    sign = Objective(objective, direction).sign
    try:
        model = shared.Model(shared.units(table, hyperparameters, "y"), hyperparameters, {})
    except ReportError as refused:
        return effect_table, [str(refused)]
    found = shared.knob_effects(model, sign, alpha, margin)
    return effect_table, shared.verdict_lines(found)


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
    alpha: float = 0.05,
    margin: float = 0.01,
) -> str:
    """A sweep's standing in markdown, for MLflow's experiment and run descriptions: one line
    with the best trial (what lists of experiments show) and a link to `board`, the page of all
    trials, then the top trials and the verdicts (at `alpha`, against `margin`: the answer
    page's rule and words). `link` turns a run id into a trial's link."""
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
        _top_table(finished.head(top), hyperparameters, objective, link),
    ]
    if len(finished) > 1:
        _, said = judged(
            finished, hyperparameters, best, direction, executions, alpha=alpha, margin=margin
        )
        lines += ["", "**Which hyperparameters matter**", "", *(f"- {line}" for line in said)]
    return "\n".join(lines) + "\n"


def _top_table(
    top: pd.DataFrame,
    hyperparameters: Sequence[str],
    objective: str,
    link: Callable[[str], str] | None,
) -> str:
    """The top trials: rank, link, values, score over their seeds, seconds per epoch."""
    names, best, rows = short_names(hyperparameters), f"best_{objective}", []
    for rank, (_, row) in enumerate(top.iterrows(), 1):
        trial = f"trial-{row['trial_id']}"
        cells = {"rank": str(rank), "trial": f"[{trial}]({link(row['run_id'])})" if link else trial}
        cells.update({names[hp]: shown(row[hp]) for hp in hyperparameters})
        cells[objective] = _seeds(row, best)
        seconds = row.get("seconds_per_epoch")
        cells["s/epoch"] = "" if seconds is None or pd.isna(seconds) else f"{seconds:.1f}"
        rows.append(cells)
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


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
