"""Adaptive seed repeats (`search.replicates`): after the search, the leading configurations are
re-run with fresh seeds until "does the best beat the runner-up by more than seed noise?" is
decided (`sweep.stats.decide`), or the budget of repeats, time or seeds is spent.

Round by round: the `top` configurations by their mean over seeds (a trial's own run is its
first seed) are each brought up to `n` seeds, n starting at `min_seeds`; then the decision is
taken; undecided, n grows by one, up to `max_seeds`. A repeat re-seeds the weights and the batch
order (seed = the config's seed + k); the data and its validation split stay the sweep's (with
`data.split_per_seed`, each seed validates on its own split, as the trials' executions do). Each
repeat is a nested run of the sweep tagged `replicate_of` (the trial's run), found again in
MLflow on a re-run: a repeat that exists is never run twice, one that failed is not retried (the
next seed is used), one interrupted is.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import keras
import numpy as np
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from sweep import leaderboard, stats, tracking, train
from sweep.durations import parse_duration
from sweep.errors import SweepError, first_line
from sweep.model import build_model
from sweep.objective import Objective
from sweep.tracking.callbacks import log_outcome
from sweep.tuner.hypermodel import AttentionHyperModel
from sweep.tuner.trials import SweepRun
from sweep.vocabulary import (
    REPLICATE_OF_TAG,
    REPLICATE_TRIAL_TAG,
    REPLICATES_STOP_TAG,
    SEED_TAG,
    TRIAL_ID_TAG,
    VERDICT_TAG,
)

log = logging.getLogger(__name__)


@dataclass
class Seeds:
    """One configuration (a finished trial) and its seeds so far: seed -> score."""

    run_id: str
    trial_id: str
    seed: int
    scores: dict[int, float] = field(default_factory=dict)
    tried: set[int] = field(default_factory=set)  # finished or failed

    def next_seed(self) -> int:
        return next(s for s in range(self.seed, self.seed + 10_000) if s not in self.tried)


def seeds_so_far(parent_run_id: str, objective: Objective) -> dict[str, Seeds]:
    """Trial run id -> its seeds, read from MLflow: each finished, unpruned trial, and the
    repeats logged for it (finished ones scored; failed ones tried)."""
    key, runs = f"best_{objective.name}", tracking.trial_runs(parent_run_id)
    found: dict[str, Seeds] = {}
    for run in runs:
        tags = run.data.tags
        if REPLICATE_OF_TAG in tags or run.info.status != "FINISHED":
            continue
        if key in run.data.metrics and not leaderboard.pruned(tags):
            seed = int(tags.get(SEED_TAG, 0))
            found[run.info.run_id] = Seeds(
                run.info.run_id, str(tags.get(TRIAL_ID_TAG)), seed, {seed: run.data.metrics[key]}
            )
            found[run.info.run_id].tried.add(seed)
    for run in runs:
        _count_repeat(run, found, key)
    return found


def _count_repeat(run: Run, found: Mapping[str, Seeds], key: str) -> None:
    owner = found.get(run.data.tags.get(REPLICATE_OF_TAG, ""))
    if owner is None or run.info.status not in ("FINISHED", "FAILED"):
        return  # not a repeat, or interrupted (retried)
    seed = int(run.data.tags.get(SEED_TAG, -1))
    owner.tried.add(seed)
    if run.info.status == "FINISHED" and key in run.data.metrics:
        owner.scores[seed] = run.data.metrics[key]


class Budget:
    """What one command may spend on repeats: runs and wall time."""

    def __init__(self, settings: DictConfig) -> None:
        self.runs, self.max_runs = 0, int(settings.max_runs)
        self.seconds = (
            parse_duration("search.replicates.time_budget", settings.time_budget)
            if settings.time_budget is not None
            else math.inf
        )
        self.started = time.monotonic()

    def spent(self) -> str | None:
        if self.runs >= self.max_runs:
            return f"max_runs {self.max_runs} repeats run"
        if time.monotonic() - self.started >= self.seconds:
            return f"time budget {self.seconds:.0f}s spent after {self.runs} repeats"
        return None


def run(
    sweep: SweepRun, hypermodel: AttentionHyperModel, callbacks: list[keras.callbacks.Callback]
) -> stats.Decision | None:
    """Repeat the leaders with fresh seeds until the verdict is decided or the budget spent;
    the verdict and why it stopped become tags of the parent run."""
    settings = sweep.cfg.search.replicates
    if not settings.enabled:
        return None
    budget, n = Budget(settings), int(settings.min_seeds)
    while True:
        found = {
            f"trial-{s.trial_id}": s
            for s in seeds_so_far(sweep.parent_run_id, sweep.objective).values()
        }
        if len(found) < 2:
            return _stop(sweep, None, "fewer than 2 finished trials: nothing to compare")
        scores = {k: list(s.scores.values()) for k, s in found.items()}
        leaders = stats.ranked(scores, sweep.objective)[: settings.top]
        missing = [found[k] for k in leaders if len(found[k].scores) < n]
        if missing:
            spent = budget.spent()
            if spent is not None:
                return _stop(sweep, _decide(scores, sweep, settings), spent)
            _repeat(sweep, hypermodel, callbacks, missing[0], budget)
            continue
        decision = _decide(scores, sweep, settings)
        log.info("seeds: %d per leader: %s", n, decision.words(sweep.objective.name))
        if decision.verdict in stats.DECIDED:
            return _stop(sweep, decision, f"decided after {n} seeds per leader")
        if n >= settings.max_seeds:
            return _stop(sweep, decision, f"max_seeds {settings.max_seeds} reached")
        n += 1
        tracking.log_leaderboard(sweep.parent_run_id, sweep.standing)


def _decide(
    scores: Mapping[str, list[float]], sweep: SweepRun, settings: DictConfig
) -> stats.Decision:
    return stats.decide(
        scores,
        sweep.objective,
        alpha=float(settings.alpha),
        margin=float(settings.margin),
        top=int(settings.top),
        looks=int(settings.max_seeds) - int(settings.min_seeds) + 1,
    )


def _stop(sweep: SweepRun, decision: stats.Decision | None, why: str) -> stats.Decision | None:
    """Say where the question stands, on the console and on the parent run."""
    words = decision.words(sweep.objective.name) if decision else "no verdict"
    verdict = decision.verdict if decision else stats.UNDECIDED
    log.info("seed repeats stopped (%s): %s — %s", why, verdict, words)
    client = MlflowClient()
    client.set_tag(sweep.parent_run_id, VERDICT_TAG, f"{verdict}: {words}")
    client.set_tag(sweep.parent_run_id, REPLICATES_STOP_TAG, why)
    tracking.log_leaderboard(sweep.parent_run_id, sweep.standing)
    return decision


def _repeat(
    sweep: SweepRun,
    hypermodel: AttentionHyperModel,
    callbacks: list[keras.callbacks.Callback],
    config: Seeds,
    budget: Budget,
) -> None:
    """One more seed of a trial's configuration, as a nested run of the sweep."""
    seed = config.next_seed()
    logged = tracking.run_config(config.run_id)
    xy = hypermodel.arrays(OmegaConf.create(logged), seed)  # the sweep's split, or this seed's
    cfg = OmegaConf.create({**logged, "seed": seed})
    tags = {
        **sweep.tags,
        SEED_TAG: str(seed),
        REPLICATE_OF_TAG: config.run_id,
        REPLICATE_TRIAL_TAG: config.trial_id,
    }
    budget.runs += 1
    objective = sweep.objective
    config.tried.add(seed)
    try:
        with tracking.tracked_run(
            nested=True,
            parent_run_id=sweep.parent_run_id,
            run_name=f"trial-{config.trial_id}-seed-{seed}",
            tags=tags,
        ):
            _, score = fit_logged(cfg, xy, hypermodel, callbacks, objective)
    except Exception as err:  # logged FAILED: the next round tries the next seed
        if tracking.unreachable(err):
            raise SweepError(f"seed repeats stopped: {tracking.gone_message(err)}") from None
        log.warning(
            "repeat of trial %s, seed %d, failed: %s", config.trial_id, seed, first_line(err)
        )
        return
    config.scores[seed] = score
    values = list(config.scores.values())
    log.info(
        "repeat %d/%d  trial %s seed %d  ->  %s=%.4f  (mean %.4f ± %.4f over %d seeds)",
        budget.runs,
        budget.max_runs,
        config.trial_id,
        seed,
        objective.name,
        score,
        float(np.mean(values)),
        float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        len(values),
    )


def fit_logged(
    cfg: DictConfig,
    xy: train.Arrays,
    hypermodel: AttentionHyperModel,
    callbacks: list[keras.callbacks.Callback],
    objective: Objective,
) -> tuple[keras.callbacks.History, float]:
    """Train the configuration with its seed and log it as a trial is logged (a repeat's or a
    confirmation's run): its history and its best objective value."""
    tracking.log_config(cfg)
    keras.utils.set_random_seed(int(cfg.seed))
    model = build_model(cfg)
    started = time.perf_counter()
    try:
        history = train.fit(model, cfg, xy, callbacks=callbacks)
        losses = history.history.get("loss", [])
        if not losses or not all(math.isfinite(v) for v in losses):
            raise FloatingPointError("loss became NaN")
    except Exception as err:
        tracking.log_failure(err)
        raise
    summary = log_outcome(
        model,
        [history.history],
        time.perf_counter() - started,
        xy.x_val,
        train.preprocessing(cfg, hypermodel.encoded_for(cfg)),
        log_model=False,
        log_figures=cfg.tracking.log_figures,
        objective=objective.name,
        direction=objective.direction,
    )
    return history, float(summary[f"best_{objective.name}"])
