"""One group of sibling sweeps answered: each knob's effect with its noise, verdict and best set,
which knobs interact, the attention diagnostics, and the best configuration, every figure tied
to the observations (MLflow runs) it rests on."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from omegaconf import DictConfig

from sweep.effects import KnobEffect, PairEffect, knob_effects, pair_effects
from sweep.errors import ReportError
from sweep.objective import Objective
from sweep.report import analysis, pool, study
from sweep.report.analysis import Level

#: The knob whose effect on the attention diagnostics the page shows.
SCALE = "model.attention.scale"
DIAGNOSTICS = ("attention_entropy", "attention_saturation")


@dataclass(frozen=True)
class Diagnostics:
    """Per scale value, the model's estimate of each diagnostic and of the objective, and the
    seeds behind it; the scale's effect on each, judged with that metric's margin (a practical
    floor: no p-value alone says "changes it"); Spearman's correlation of saturation with the
    objective over all units."""

    values: tuple[str, ...]
    estimates: dict[str, tuple[float, ...]]
    seeds: dict[str, tuple[tuple[float, ...], ...]]
    n: tuple[int, ...]
    effect: dict[str, KnobEffect]
    rho: tuple[float, float, int]


@dataclass(frozen=True)
class Best:
    """The configuration with the best mean over its seeds."""

    values: dict[str, str]
    mean: float
    std: float
    n: int
    obs: tuple[int, ...]
    trial_run: str
    experiment: str


@dataclass(frozen=True)
class Answer:
    sweeps: tuple[pool.Sweep, ...]
    objective: Objective
    obs: pd.DataFrame
    knobs: tuple[str, ...]
    fixed: dict[str, str]  # knobs the group tried one value of
    noise: tuple[float, int]
    block: bool  # the seed a block of the model (a balanced design)
    effects: tuple[KnobEffect, ...]
    levels: dict[str, dict[str, Level]]  # the runs behind each knob's values
    pairs: tuple[PairEffect, ...]
    diagnostics: Diagnostics | None
    best: Best
    alpha: float
    margin: float
    control: study.Control | None  # attention vs plain averaging (scale=uniform)
    confirmations: tuple[study.Confirmation, ...]  # screened vs confirmed, per sweep
    curve: study.Curve | None  # the expected best of n trials

    @property
    def names(self) -> str:
        return ", ".join(s.name for s in self.sweeps)


def answer(group: Sequence[pool.Sweep], settings: DictConfig) -> Answer:
    """The statistics of one group of sweeps sharing a base configuration."""
    knobs = pool.knobs_of(group)
    objective = group[0].objective
    obs = pool.observations(group, knobs)
    base = {k: _base_value(group, k) for k in knobs}
    model = analysis.fitted(obs, knobs, base, "score")
    alpha, margin = float(settings.alpha), float(settings.margin)
    margins = {m: float(settings.diagnostic_margin) for m in DIAGNOSTICS} | {"score": margin}
    return Answer(
        sweeps=tuple(group),
        objective=objective,
        obs=obs,
        knobs=tuple(model.varied),
        fixed={k: str(obs[k].iloc[0]) for k in knobs if k not in model.varied},
        noise=model.noise,
        block=model.block,
        effects=tuple(knob_effects(model, objective.sign, alpha, margin)),
        levels=analysis.levels(model),
        pairs=tuple(pair_effects(model, objective.sign, alpha, margin)),
        diagnostics=_diagnostics(obs, knobs, base, objective, alpha, margins),
        best=_best(obs, knobs, objective),
        alpha=alpha,
        margin=margin,
        control=study.control(model, SCALE, objective.sign, alpha, margin),
        confirmations=tuple(
            c for s in group if (c := study.confirmation(s, alpha, margin)) is not None
        ),
        curve=study.tuning_curve(list(obs["score"]), objective.name, objective.sign, 1 - alpha),
    )


def _base_value(group: Sequence[pool.Sweep], knob: str) -> str | None:
    """The knob's value in most of the group's base configurations."""
    values = pd.Series([pool.knob_value(s.config, knob) for s in group]).dropna()
    return values.value_counts().index[0] if len(values) else None


def _diagnostics(
    obs: pd.DataFrame,
    knobs: Sequence[str],
    base: dict[str, str | None],
    objective: Objective,
    alpha: float,
    margins: dict[str, float],
) -> Diagnostics | None:
    """The scale's effect on entropy and saturation (and the objective), each judged against
    its own margin, and whether saturation predicts the objective."""
    if obs[list(DIAGNOSTICS)].isna().all().all():
        return None
    estimates, seeds, effect, counts = {}, {}, {}, ()
    values: tuple[str, ...] = ()
    for metric in (*DIAGNOSTICS, "score"):
        try:
            model = analysis.fitted(obs, knobs, base, metric)
        except ReportError:  # runs without this metric may leave knobs inseparable
            continue
        if SCALE not in model.varied:
            continue
        sign = objective.sign if metric == "score" else 1.0
        found = knob_effects(model, sign, alpha, margins[metric])
        levels = [analysis.level(model, SCALE, v) for v in model.levels[SCALE]]
        values = tuple(lv.value for lv in levels)
        counts = tuple(lv.n for lv in levels)
        estimates[metric] = tuple(model.marginal(SCALE, v).gap for v in values)
        seeds[metric] = tuple(lv.seeds for lv in levels)
        effect[metric] = next(e for e in found if e.knob == SCALE)
    whole = analysis.units(obs, knobs, "attention_saturation").merge(
        analysis.units(obs, knobs, "score"), on=[*knobs, "seed"], suffixes=("_sat", "_score")
    )
    rho = analysis.correlation(whole["y_sat"], whole["y_score"])
    return Diagnostics(values, estimates, seeds, counts, effect, rho)


def _best(obs: pd.DataFrame, knobs: Sequence[str], objective: Objective) -> Best:
    """The configuration with the best mean over its distinct seeds (more seeds break ties)."""
    units = analysis.units(obs, knobs, "score")
    configs = units.groupby(list(knobs), sort=False, dropna=False).agg(
        mean=("y", "mean"), std=("y", "std"), n=("y", "size"), obs=("obs", _joined)
    )
    order = configs.assign(key=-objective.sign * configs["mean"], fewer=-configs["n"])
    row = order.sort_values(["key", "fewer"], kind="stable").iloc[0]
    values = dict(zip(knobs, row.name if len(knobs) > 1 else (row.name,), strict=True))
    runs = obs[obs["obs"].isin(row["obs"])]
    trial = (
        runs[runs["kind"] == "trial"].iloc[0] if (runs["kind"] == "trial").any() else runs.iloc[0]
    )
    std = float(row["std"]) if row["n"] > 1 else math.nan
    return Best(
        values,
        float(row["mean"]),
        std,
        int(row["n"]),
        row["obs"],
        trial["run_id"],
        trial["experiment"],
    )


def _joined(groups: pd.Series) -> tuple[int, ...]:
    return tuple(sorted(i for ids in groups for i in ids))
