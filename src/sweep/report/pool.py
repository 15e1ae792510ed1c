"""Which sweeps answer one question together, and what they measured: the newest sweep of each
experiment, grouped by the configuration they share apart from what any of them searches, and
their finished runs (trials and seed repeats) as one table of observations."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from sweep import leaderboard, tracking
from sweep.errors import ReportError
from sweep.objective import Objective
from sweep.vocabulary import (
    FINAL_TAG,
    FINGERPRINT_TAG,
    REPLICATE_OF_TAG,
    REPLICATE_TRIAL_TAG,
    SEED_TAG,
    SOURCE_RUN_TAG,
    TRIAL_ID_TAG,
    part_of_trial,
    within,
)

log = logging.getLogger(__name__)

#: The search settings that must match for sweeps to be pooled (the rest of `search` is each
#: sweep's own question: its space, tuner and budgets).
SETTINGS = ("search.objective", "search.direction")


@dataclass(frozen=True)
class Sweep:
    """One experiment's newest sweep: its parent run, searched keys and flattened config."""

    name: str
    parent: Run
    knobs: tuple[str, ...]
    config: Mapping[str, Any]

    @property
    def objective(self) -> Objective:
        return Objective.of(self.parent.data.params)

    def base(self, knobs: Sequence[str]) -> dict[str, str]:
        """What must match a sibling's: the config's keys that are part of a trial (outside
        the search settings), without the pooled knobs; the objective; the data's fingerprint."""
        shared = {
            key: str(value)
            for key, value in self.config.items()
            if part_of_trial(key) and not within(key, ["search", *knobs])
        }
        shared.update({key: self.parent.data.params.get(key, "") for key in SETTINGS})
        shared["data fingerprint"] = self.parent.data.tags.get(FINGERPRINT_TAG, "")
        return shared


def sweeps(names: Sequence[str], uri: str) -> list[Sweep]:
    """The newest sweep of each named experiment, or of every experiment in the store; a
    ReportError (one line) for an empty store or an experiment without a sweep."""
    wanted = list(names) or sorted(e.name for e in tracking.all_experiments())
    found = []
    for name in wanted:
        parent = tracking.sweep_parent(name)
        if parent is None and names:
            raise ReportError(
                f"no sweep named {name} in {uri}: run `python -m sweep +experiment={name}` "
                "first (or check tracking.uri / report.experiments)"
            )
        if parent is not None:
            config = tracking.flatten(tracking.run_config(parent.info.run_id))
            knobs = tuple(k for k in parent.data.params.get("search.space", "").split(", ") if k)
            found.append(Sweep(name, parent, knobs, config))
    if not found:
        raise ReportError(
            f"no sweep in the MLflow store at {uri}: run `python -m sweep +experiment=NAME` first "
            "(or check tracking.uri)"
        )
    return found


def knobs_of(group: Sequence[Sweep]) -> list[str]:
    """Every key any sweep of the group searched, in first-seen order."""
    return list(dict.fromkeys(k for s in group for k in s.knobs))


def differing(a: Mapping[str, str], b: Mapping[str, str]) -> list[str]:
    """Keys whose values differ between two base configurations (missing counts as differing)."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def groups(found: Sequence[Sweep]) -> list[list[Sweep]]:
    """Sweeps that share their base configuration (all knobs any of them searched set aside),
    largest group first; each split is logged with the keys that differ."""
    knobs = knobs_of(found)
    grouped: list[list[Sweep]] = []
    for sweep in found:
        home = next(
            (g for g in grouped if not differing(g[0].base(knobs), sweep.base(knobs))), None
        )
        if home is None:
            grouped.append([sweep])
        else:
            home.append(sweep)
    grouped.sort(key=len, reverse=True)
    for other in grouped[1:]:
        keys = differing(grouped[0][0].base(knobs), other[0].base(knobs))
        log.info(
            "%s reported apart from %s: base configurations differ in %s",
            ", ".join(s.name for s in other),
            ", ".join(s.name for s in grouped[0]),
            ", ".join(keys),
        )
    return grouped


def refuse_mixed(grouped: Sequence[Sequence[Sweep]]) -> None:
    """Named experiments are one question: refuse, in one line, when their bases differ."""
    if len(grouped) < 2:
        return
    knobs = knobs_of([s for g in grouped for s in g])
    first, second = grouped[0][0], grouped[1][0]
    keys = differing(first.base(knobs), second.base(knobs))
    shown = ", ".join(
        f"{k} ({first.base(knobs).get(k)} vs {second.base(knobs).get(k)})" for k in keys
    )
    raise ReportError(
        f"cannot pool {first.name} and {second.name}: their base configurations differ in "
        f"{shown}; run them with the same overrides, or report them one at a time"
    )


def knob_value(flat: Mapping[str, Any], knob: str) -> str | None:
    """A knob's value for people, from a run's params or a flattened config: a plain value as
    `leaderboard.shown` writes it; a Keras initializer config as `Name(key=value,...)`."""
    value = leaderboard.param_value(flat, knob)
    return None if value is None else leaderboard.shown(value)


def observations(group: Sequence[Sweep], knobs: Sequence[str]) -> pd.DataFrame:
    """One row per finished, unpruned run of the group's sweeps (trials and seed repeats), one
    per execution of a trial run with several (`search.executions_per_trial`: seed + k, as
    export counts them): experiment, run ids, seed, each knob's value, the objective and
    attention diagnostics."""
    rows = []
    for sweep in group:
        best = f"best_{sweep.objective.name}"
        for run in tracking.trial_runs(sweep.parent.info.run_id):
            row = _observation(sweep, run, knobs, best)
            if row is not None:
                rows += _executions(row, run, sweep.objective.name)
    table = pd.DataFrame(rows)
    if table.empty:
        raise ReportError(
            f"no finished trial in {', '.join(s.name for s in group)}: nothing to report yet"
        )
    table = table.sort_values(["experiment", "trial_id", "seed"], kind="stable")
    table.insert(0, "obs", range(1, len(table) + 1))
    return table.reset_index(drop=True)


def _executions(row: dict[str, Any], run: Run, objective: str) -> list[dict[str, Any]]:
    """A run's row, or one per execution (seed + k) when it trained several."""
    if f"execution_best_{objective}" not in run.data.metrics:
        return [row]
    scores = tracking.execution_scores(run.info.run_id, objective)
    if len(scores) < 2:
        return [row]
    return [row | {"seed": row["seed"] + k, "score": v} for k, v in enumerate(scores)]


def _observation(sweep: Sweep, run: Run, knobs: Sequence[str], best: str) -> dict[str, Any] | None:
    tags, metrics = run.data.tags, run.data.metrics
    if run.info.status != "FINISHED" or best not in metrics or leaderboard.pruned(tags):
        return None
    replicate = tags.get(REPLICATE_OF_TAG)
    row: dict[str, Any] = {
        "experiment": sweep.name,
        "parent_run_id": sweep.parent.info.run_id,
        "run_id": run.info.run_id,
        "trial_id": tags.get(REPLICATE_TRIAL_TAG if replicate else TRIAL_ID_TAG),
        "kind": "repeat" if replicate else "trial",
        "seed": int(tags.get(SEED_TAG, 0)),
    }
    for knob in knobs:
        value = knob_value(run.data.params, knob)
        row[knob] = value if value is not None else knob_value(sweep.config, knob)
    row["score"] = metrics[best]
    for metric in ("attention_entropy", "attention_saturation"):
        row[metric] = metrics.get(metric)
    return row


def final_test_accuracy(experiment: str, run_ids: Sequence[str]) -> tuple[float, str] | None:
    """The single test accuracy measured for one of these runs (`export.evaluate=true` logs a
    run tagged `final` with `source_run_id`), and that run's id; None when never measured."""
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    for run in tracking.each_run(
        [found.experiment_id], f"tags.{FINAL_TAG} = 'true'", ["attributes.start_time DESC"]
    ):
        if run.data.tags.get(SOURCE_RUN_TAG) in run_ids and "test_accuracy" in run.data.metrics:
            return (run.data.metrics["test_accuracy"], run.info.run_id)
    return None
