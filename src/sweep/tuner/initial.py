"""`search.initial`: the points a sweep tries before its tuner's own picks — the config's own
values (`base`), another sweep's best trial (`best_of: NAME`), or values given whole."""

from __future__ import annotations

import logging
import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweep import space, tracking
from sweep.errors import ConfigError
from sweep.objective import Objective
from sweep.tuner.state import plain
from sweep.vocabulary import HYPERPARAMETERS_TAG

log = logging.getLogger(__name__)


def initial_points(
    cfg: DictConfig, searched: space.SearchSpace
) -> list[tuple[str, dict[str, Any]]]:
    """`search.initial` resolved: (label, Keras Tuner values) per point, in order, each once;
    `base` is left out (and a line says why) when the config's values are no point of the space."""
    points: list[tuple[str, dict[str, Any]]] = []
    for i, entry in enumerate(cfg.search.get("initial") or []):
        if entry == space.BASE:
            point, why = searched.base_point()
            if point is None:
                log.info("search.initial: base left out: %s", why)
                continue
            label = space.BASE
        elif "best_of" in entry:
            key, label = f"search.initial[{i}].best_of", f"best_of={entry.best_of}"
            given = _best_of(cfg, key, str(entry.best_of))
            try:
                point = searched.initial_point(given)
            except ValueError as err:
                raise ConfigError(key, entry.best_of, f"its best trial's {err}") from None
        else:
            label = "given"
            point = searched.initial_point(plain(entry))
        if all(point != other for _, other in points):
            points.append((label, point))
    return points


def _best_of(cfg: DictConfig, key: str, name: str) -> dict[str, Any]:
    """The values the best finished trial of sweep `name` (its newest, in this MLflow store)
    searched, for the keys this sweep searches too."""
    parent = tracking.sweep_parent(name)
    if parent is None:
        raise ConfigError(key, name, f"no sweep of that name in {cfg.tracking.uri}")
    params = parent.data.params  # that sweep's own objective; this one's when not logged
    objective = Objective(
        params.get("search.objective", cfg.search.objective),
        params.get("search.direction", cfg.search.direction),
    )
    metric = f"best_{objective.name}"
    finished = [
        r
        for r in tracking.trial_runs(parent.info.run_id)
        if r.info.status == "FINISHED" and math.isfinite(r.data.metrics.get(metric, math.nan))
    ]
    best = objective.best_of(finished, key=lambda r: r.data.metrics[metric])
    if best is None:
        raise ConfigError(key, name, "that sweep has no finished trial yet")
    searched = [k.strip() for k in best.data.tags.get(HYPERPARAMETERS_TAG, "").split(",")]
    config = OmegaConf.create(tracking.run_config(best.info.run_id))
    return {k: OmegaConf.select(config, k) for k in searched if k in cfg.search.space}
