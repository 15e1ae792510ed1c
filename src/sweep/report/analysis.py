"""The answer's statistics: the shared linear model (`sweep.effects`, statsmodels OLS) fitted to
one observation per configuration and seed, and the raw data behind each value for the page's
citations.

- A value's *estimate* is its marginal mean: the model's prediction averaged over every value
  of the other knobs (and the seeds), the functional-ANOVA estimand; on a balanced design, the
  mean of the runs at that value.
- The *noise* is the model's residual standard deviation (the seed block, on a balanced design,
  and the crossed knobs' interactions taken out).
- Each knob's verdict, best set and omega squared, and each crossed pair's interaction, come
  from `sweep.effects.knob_effects` / `pair_effects`: the words export and the sweep's
  description write for the same runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
from scipy import stats as scipy_stats

from sweep.effects import Model, units


@dataclass(frozen=True)
class Level:
    """The runs behind one value of a knob, as its marginal mean weighs them: the units at the
    value with every knob not crossed with it at its base (all units at the value where there
    are none); their raw mean, spread and seeds."""

    value: str
    mean: float
    std: float
    n: int
    obs: tuple[int, ...]
    seeds: tuple[float, ...]  # the units' values behind `mean`


def fitted(
    obs: pd.DataFrame, knobs: Sequence[str], base: Mapping[str, str | None], metric: str
) -> Model:
    """The model of `metric` over the knobs, fitted to one unit per configuration and seed
    (ReportError, one line, when the runs cannot separate the knobs)."""
    return Model(units(obs, knobs, metric), knobs, base)


def level(model: Model, knob: str, value: str) -> Level:
    data = model.data[model.data[f"level:{knob}"] == value]
    at_base = data
    for other in model.varied:
        if other != knob and (knob, other) not in model.crossed:
            at_base = at_base[at_base[f"level:{other}"] == model.base[other]]
    picked = at_base if len(at_base) else data
    ys = picked["y"].to_numpy(float)
    return Level(
        value,
        float(ys.mean()),
        float(ys.std(ddof=1)) if len(ys) > 1 else math.nan,
        len(ys),
        tuple(sorted(i for ids in picked["obs"] for i in ids)),
        tuple(float(y) for y in ys),
    )


def levels(model: Model) -> dict[str, dict[str, Level]]:
    """Every varied knob's values, each with the runs behind it."""
    return {k: {v: level(model, k, v) for v in model.levels[k]} for k in model.varied}


def correlation(x: pd.Series, y: pd.Series) -> tuple[float, float, int]:
    """Spearman's rank correlation (scipy) of two columns, its p-value and how many pairs."""
    both = pd.concat([x, y], axis=1).dropna()
    if len(both) < 3 or both.iloc[:, 0].nunique() < 2 or both.iloc[:, 1].nunique() < 2:
        return (math.nan, math.nan, len(both))
    rho, p = scipy_stats.spearmanr(both.iloc[:, 0], both.iloc[:, 1])
    return (float(rho), float(p), len(both))
