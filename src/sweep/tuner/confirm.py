"""The confirmation stage (`search.confirm`): the screened best, the runner-up and the base
configuration re-run with fresh seeds and scored on the confirmation slice
(`data.confirm_fraction`), which no trial trained, validated or was selected on.

Picking the best of many configurations on the same runs that score it biases its estimate up
(the winner's curse); these scores do not carry it, and the answer page shows both side by side.
The selection is written to MLflow (the confirmation run's tag `confirm_selection`) before any
confirmation run trains, so a restart reads it back and cannot reselect. Every configuration gets
the same fresh seeds (`seed + FRESH + k`; with `data.split_per_seed` each redraws the validation
split, shared by all three), so their comparisons are paired. A confirmation run that finished
is never run twice; one that failed counts as tried (the next seed is used); one interrupted is
run again. Each run's score is its slice accuracy at the epoch its validation picked: the
endpoint the trials were selected on, measured where nothing was selected.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import keras
import mlflow
import numpy as np
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from sweep import leaderboard, tracking, train
from sweep.errors import SweepError, first_line
from sweep.objective import Objective
from sweep.tuner import replicates
from sweep.tuner.hypermodel import AttentionHyperModel
from sweep.tuner.trials import SweepRun
from sweep.vocabulary import (
    CONFIRM_OF_TAG,
    CONFIRM_ROLE_TAG,
    INITIAL_TAG,
    REPLICATE_OF_TAG,
    SEED_TAG,
    SELECTION_TAG,
    STAGE_TAG,
    TRIAL_ID_TAG,
)

log = logging.getLogger(__name__)

#: Fresh seeds start here above the sweep's seed: no execution or seed repeat reaches them.
FRESH = 1000


@dataclass(frozen=True)
class Pick:
    """One configuration chosen for confirmation, as the screen scored it."""

    roles: str  # "best", "runner-up", "base", or several joined by ", "
    run_id: str  # the trial run
    trial_id: str
    screened: float  # mean over its screening seeds
    sd: float
    n: int


def screened(parent_run_id: str, objective: Objective) -> dict[str, list[float]]:
    """Trial run id -> its screening scores: each execution's best, and its seed repeats'."""
    metric, runs = f"best_{objective.name}", tracking.trial_runs(parent_run_id)
    repeats = leaderboard.repeat_scores(runs, metric)
    found: dict[str, list[float]] = {}
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        if REPLICATE_OF_TAG in tags or run.info.status != "FINISHED":
            continue
        if metric not in metrics or leaderboard.pruned(tags):
            continue
        own = tracking.execution_scores(run.info.run_id, objective.name) or [metrics[metric]]
        found[run.info.run_id] = own + [s for _, s in repeats.get(run.info.run_id, [])]
    return found


def select(runs: Sequence[Run], scores: Mapping[str, list[float]], sign: float) -> list[Pick]:
    """The best and the runner-up by their mean over seeds, and the base configuration's trial
    (tagged `initial=base`), each once (one configuration may hold several roles)."""
    ranked = sorted(scores, key=lambda r: -sign * float(np.mean(scores[r])))
    roles: dict[str, list[str]] = {}
    for role, run_id in zip(("best", "runner-up"), ranked, strict=False):
        roles.setdefault(run_id, []).append(role)
    base = next((r.info.run_id for r in runs if r.data.tags.get(INITIAL_TAG) == "base"), None)
    if base is not None and base in scores:
        roles.setdefault(base, []).append("base")
    trial_ids = {r.info.run_id: str(r.data.tags.get(TRIAL_ID_TAG)) for r in runs}
    return [
        Pick(
            ", ".join(names),
            run_id,
            trial_ids.get(run_id, ""),
            float(np.mean(scores[run_id])),
            float(np.std(scores[run_id], ddof=1)) if len(scores[run_id]) > 1 else math.nan,
            len(scores[run_id]),
        )
        for run_id, names in roles.items()
    ]


def run(
    sweep: SweepRun, hypermodel: AttentionHyperModel, callbacks: list[keras.callbacks.Callback]
) -> None:
    """Confirm the selection with fresh seeds on the confirmation slice, as nested runs of one
    confirmation run under the sweep's parent run."""
    settings = sweep.cfg.search.confirm
    if not settings.enabled:
        return
    holder = tracking.confirmation_run(sweep.parent_run_id)
    with tracking.tracked_run(
        run_id=holder.info.run_id if holder else None,
        nested=True,
        parent_run_id=sweep.parent_run_id,
        run_name=None if holder else f"{sweep.cfg.name}-confirmation",
        tags={**sweep.tags, STAGE_TAG: tracking.CONFIRMATION},
    ) as active:
        picks = _selection(active.info.run_id, sweep)
        if len(picks) < 2:
            log.info("confirmation: fewer than 2 finished configurations, nothing to confirm")
            return
        done = _tried(active.info.run_id)
        for pick in picks:
            _confirm(sweep, hypermodel, callbacks, pick, done, int(settings.seeds))


def _selection(holder_id: str, sweep: SweepRun) -> list[Pick]:
    """The recorded selection, or a new one recorded before anything trains."""
    recorded = MlflowClient().get_run(holder_id).data.tags.get(SELECTION_TAG)
    if recorded:
        return [Pick(**p) for p in json.loads(recorded)]
    runs = tracking.trial_runs(sweep.parent_run_id)
    objective = sweep.objective
    picks = select(runs, screened(sweep.parent_run_id, objective), objective.sign)
    MlflowClient().set_tag(holder_id, SELECTION_TAG, json.dumps([asdict(p) for p in picks]))
    for pick in picks:
        log.info(
            "confirmation: %s = trial %s (screened %s %.4f over %d seeds)",
            pick.roles,
            pick.trial_id,
            objective.name,
            pick.screened,
            pick.n,
        )
    return picks


def _tried(holder_id: str) -> dict[tuple[str, int], str]:
    """(trial run id, seed) -> status, for the confirmation runs that finished or failed."""
    return {
        (r.data.tags[CONFIRM_OF_TAG], int(r.data.tags[SEED_TAG])): r.info.status
        for r in tracking.trial_runs(holder_id)
        if r.info.status in ("FINISHED", "FAILED") and CONFIRM_OF_TAG in r.data.tags
    }


def _confirm(
    sweep: SweepRun,
    hypermodel: AttentionHyperModel,
    callbacks: list[keras.callbacks.Callback],
    pick: Pick,
    done: dict[tuple[str, int], str],
    wanted: int,
) -> None:
    """Bring one configuration up to `wanted` finished confirmation runs (2x as many tries)."""
    first = int(sweep.cfg.seed) + FRESH
    for seed in range(first, first + 2 * wanted):
        finished = sum(1 for (r, _), s in done.items() if r == pick.run_id and s == "FINISHED")
        if finished >= wanted:
            return
        if (pick.run_id, seed) in done:
            continue
        done[(pick.run_id, seed)] = _fit_one(sweep, hypermodel, callbacks, pick, seed)


def _fit_one(
    sweep: SweepRun,
    hypermodel: AttentionHyperModel,
    callbacks: list[keras.callbacks.Callback],
    pick: Pick,
    seed: int,
) -> str:
    """One fresh seed of a configuration, scored on the slice; its run's status."""
    logged = tracking.run_config(pick.run_id)
    xy = hypermodel.arrays(OmegaConf.create(logged), seed)  # this seed's with split_per_seed
    cfg = OmegaConf.create({**logged, "seed": seed})
    scorer = SliceScore(*train.confirmation(hypermodel.encoded_for(cfg), cfg))
    tags = {
        **sweep.tags,
        SEED_TAG: str(seed),
        TRIAL_ID_TAG: pick.trial_id,
        CONFIRM_OF_TAG: pick.run_id,
        CONFIRM_ROLE_TAG: pick.roles,
    }
    try:
        with tracking.tracked_run(
            nested=True, run_name=f"trial-{pick.trial_id}-seed-{seed}", tags=tags
        ):
            score = _fit(cfg, xy, hypermodel, [*callbacks, scorer], sweep.objective, scorer)
    except Exception as err:  # logged FAILED: the next seed is tried
        if tracking.unreachable(err):
            raise SweepError(f"confirmation stopped: {tracking.gone_message(err)}") from None
        log.warning(
            "confirmation of trial %s, seed %d, failed: %s", pick.trial_id, seed, first_line(err)
        )
        return "FAILED"
    log.info(
        "confirmation  trial %s (%s) seed %d  ->  slice %s %.4f",
        pick.trial_id,
        pick.roles,
        seed,
        scorer.metric,
        score,
    )
    return "FINISHED"


class SliceScore(keras.callbacks.Callback):
    """The model's accuracy on the confirmation slice after every epoch (logged per epoch as
    `confirm_accuracy`); never seen by training, early stopping or selection."""

    metric = "accuracy"

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        super().__init__()
        self.x, self.y = x, y
        self.values: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        probs = self.model.predict(self.x, batch_size=256, verbose=0)
        value = float(np.mean(np.argmax(probs, axis=-1) == self.y))
        self.values.append(value)
        mlflow.log_metric(f"confirm_{self.metric}", value, step=epoch)


def _fit(
    cfg: DictConfig,
    xy: train.Arrays,
    hypermodel: AttentionHyperModel,
    callbacks: list[keras.callbacks.Callback],
    objective: Objective,
    scorer: SliceScore,
) -> float:
    """Train and log as a seed repeat does; the slice's score at the epoch validation picks
    (the trials' endpoint)."""
    history, _ = replicates.fit_logged(cfg, xy, hypermodel, callbacks, objective)
    curve = history.history[objective.name]
    epoch = objective.best_of(list(range(len(curve))), key=lambda e: curve[e])
    if epoch is None:
        raise ValueError(f"no epoch logged {objective.name}")
    score = scorer.values[epoch]
    mlflow.log_metrics({f"confirmed_{scorer.metric}": score, "confirmed_epoch": epoch + 1})
    return score
