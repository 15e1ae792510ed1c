"""The sweep, top to bottom: prepare (the store, the experiment, the sweep to resume, the data,
the tuner), search (each trial built, fitted and logged under the parent run), summarise.

Tuner state lives in `sweeps/<name>/`; re-running the same command resumes the sweep. MLflow is
the record: a trial already logged FINISHED is never trained or logged again.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

import keras
from omegaconf import DictConfig

from sweep import tracking, train
from sweep.space import SearchSpace
from sweep.tracking.callbacks import EpochMetrics
from sweep.tuner.hypermodel import AttentionHyperModel
from sweep.tuner.initial import initial_points
from sweep.tuner.roles import role_of
from sweep.tuner.state import sweep_dir
from sweep.tuner.trials import SweepRun
from sweep.tuner.tuners import build_tuner


def run(cfg: DictConfig, searched: SearchSpace | None = None) -> float:
    """Run (or resume) the sweep `cfg` declares (its space `searched`, when checked already);
    returns the best objective value.

    `distributed.role` makes this process Keras Tuner's chief (it serves trials and owns the
    parent run) or a worker (it trains trials the chief hands out); see `roles`.
    """
    searched = searched or SearchSpace.of(cfg)
    role = role_of(cfg)  # decided once, before any tuner is built
    role.connect()
    tracking.configure(cfg.tracking)
    experiment = tracking.use_experiment(cfg.name, cfg.tracking)
    found = role.existing_parent(experiment)
    initial = initial_points(cfg, searched)
    encoded = train.load(cfg)
    role.close_leftovers(experiment, found.parent_run_id)
    hypermodel = AttentionHyperModel(cfg, encoded, searched)
    options = role.tuner_options(found.parent_run_id, initial)
    tuner = build_tuner(cfg, hypermodel, sweep_dir(cfg), options)
    tags = {**tracking.standard_tags(cfg, encoded), **role.trial_tags()}
    with role.parent_run(experiment, found, tags) as parent_run_id:
        standing = tracking.Standing.of(cfg)
        sweep = SweepRun(cfg, parent_run_id, tags, standing, initial)
        chosen = callbacks(cfg)
        with _settled():
            role.search(tuner, sweep, chosen)
            role.replicate(sweep, hypermodel, chosen)
        return role.summarise(tuner.oracle, sweep)


@contextmanager
def _settled() -> Iterator[None]:
    """Everything alive before the trials (the modules, the data, the tuner) left out of the
    garbage collector's passes while they run: Keras Tuner collects garbage twice per trial
    (`clear_session`), and scanning the imported libraries' millions of objects made each
    pass ~0.4 s of CPU, a tiny trial's largest cost. Reference counting frees them as ever."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def callbacks(cfg: DictConfig) -> list[keras.callbacks.Callback]:
    """Every trial's: epoch metrics to MLflow, stop on NaN or Ctrl-C, early stopping."""
    chosen: list[keras.callbacks.Callback] = [
        EpochMetrics(),
        keras.callbacks.TerminateOnNaN(),
        train.StopOnInterrupt(),
    ]
    if cfg.search.patience:
        chosen.append(
            keras.callbacks.EarlyStopping(
                monitor=cfg.search.objective,
                mode=cfg.search.direction,
                patience=cfg.search.patience,
            )
        )
    return chosen
