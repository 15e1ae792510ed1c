"""The answer's statistics, from statsmodels: an additive linear model of a metric over every
pooled knob (ordinary least squares, each knob a categorical factor coded against its base
value), fitted to one observation per configuration and seed.

- A value's *estimate* is the model's mean at that value with every other knob at its base:
  with one-knob-at-a-time sweeps (dim_search, scale_search, ...) it is the mean of that
  configuration's seeds.
- The *noise* is the model's residual standard deviation: with one knob varied at a time it is
  exactly the seed-to-seed spread of configurations run with several seeds; it is unknown when
  no configuration was (no residual degrees of freedom).
- A knob's *importance* is the share of the metric's variance it explains (the drop in the
  residual sum of squares when it is removed, over the total: ANOVA's eta squared), with the
  F-test of "no value differs" (`compare_f_test`).
- Two knobs *interact* when adding their interaction term explains variance beyond noise; it is
  measured only where the trials cross them (two values of one each tried with two of the other).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import patsy
import statsmodels.formula.api as smf
from scipy import stats as scipy_stats
from statsmodels.tools.sm_exceptions import SingularMatrixWarning

from sweep.objective import Objective
from sweep.stats import Gap


@dataclass(frozen=True)
class Level:
    """One value of a knob: the model's estimate, and the raw mean, spread and seeds behind it
    (units with every other knob at its base; all units at the value where there are none)."""

    value: str
    estimate: float
    mean: float
    std: float
    n: int
    obs: tuple[int, ...]
    seeds: tuple[float, ...]  # the units' values behind `mean`


@dataclass(frozen=True)
class Effect:
    knob: str
    base: str
    levels: tuple[Level, ...]  # best first by estimate
    gap: Gap | None  # best vs runner-up
    importance: float  # share of the metric's variance the knob explains
    p: float  # F-test of "no value differs" (NaN: noise unknown)


@dataclass(frozen=True)
class Interaction:
    a: str
    b: str
    measured: bool
    importance: float
    p: float


def units(obs: pd.DataFrame, knobs: Sequence[str], metric: str) -> pd.DataFrame:
    """One row per configuration and seed (a configuration run twice with one seed, e.g. the
    base in several sweeps, is one measurement): the metric's mean and the observations."""
    rows = obs.dropna(subset=[metric]).groupby([*knobs, "seed"], sort=False, dropna=False)
    table = rows.agg(y=(metric, "mean"), obs=("obs", tuple)).reset_index()
    return table


class Model:
    """The additive model of one metric over the knobs varied in `data` (from `units`)."""

    def __init__(self, data: pd.DataFrame, knobs: Sequence[str], base: Mapping[str, str]) -> None:
        self.data, self.base = data, dict(base)
        self.varied = [k for k in knobs if data[k].nunique() > 1]
        self.codes = {k: self._coding(k) for k in self.varied}
        self.frame = pd.DataFrame(
            {f"k{i}": data[k].map(self.codes[k]) for i, k in enumerate(self.varied)}
        ).assign(y=data["y"].to_numpy())
        self.result = self._fit(self.varied)

    def _coding(self, knob: str) -> dict[str, str]:
        """Each value a code, the base value first (the reference level)."""
        values = list(dict.fromkeys(self.data[knob]))
        base = self.base.get(knob)
        if base not in values:  # the base was not tried: the most measured value instead
            base = self.data[knob].value_counts().index[0]
            self.base[knob] = base
        ordered = [base, *(v for v in values if v != base)]
        return {v: f"v{i:02d}" for i, v in enumerate(ordered)}

    def _term(self, knob: str) -> str:
        return f"C(k{self.varied.index(knob)})"

    def _fit(self, knobs: Sequence[str], extra: str = ""):  # statsmodels results
        terms = [self._term(k) for k in knobs] + ([extra] if extra else [])
        with warnings.catch_warnings():  # an interaction of partly crossed knobs has empty
            # cells: its design is rank-deficient on purpose, and the degrees of freedom
            # statsmodels uses come from the rank
            warnings.simplefilter("ignore", SingularMatrixWarning)
            return smf.ols("y ~ " + (" + ".join(terms) or "1"), self.frame).fit()

    @property
    def noise(self) -> tuple[float, int]:
        """Residual standard deviation and its degrees of freedom (NaN, 0: unknown)."""
        df = round(self.result.df_resid)
        return (math.sqrt(self.result.scale) if df > 0 else math.nan, df)

    def _row(self, knob: str, value: str) -> np.ndarray:
        point = {f"k{i}": self.codes[k][self.base[k]] for i, k in enumerate(self.varied)}
        point[f"k{self.varied.index(knob)}"] = self.codes[knob][value]
        design = self.result.model.data.model_spec
        return np.asarray(patsy.build_design_matrices([design], pd.DataFrame([point]))[0])[0]

    def estimate(self, knob: str, value: str) -> float:
        return float(self._row(knob, value) @ self.result.params.to_numpy())

    def gap(self, knob: str, best: str, other: str, sign: float) -> Gap:
        """best minus other at the others' base values, its standard error from the model."""
        contrast = self._row(knob, best) - self._row(knob, other)
        gap = sign * float(contrast @ self.result.params.to_numpy())
        if self.noise[1] == 0:
            return Gap(best, other, gap, math.nan, math.nan)
        test = self.result.t_test(contrast)
        return Gap(best, other, gap, float(np.ravel(test.sd)[0]), float(test.df_denom))

    def importance(self, knob: str) -> tuple[float, float]:
        """Share of variance `knob` explains, and the F-test p-value of its term."""
        restricted = self._fit([k for k in self.varied if k != knob])
        return self._compare(self.result, restricted)

    def _compare(self, full, restricted) -> tuple[float, float]:  # statsmodels results
        total = float(self.result.centered_tss)
        share = (restricted.ssr - full.ssr) / total if total > 0 else 0.0
        if full.df_resid < 1 or restricted.df_resid <= full.df_resid:
            return (max(share, 0.0), math.nan)
        _, p, _ = full.compare_f_test(restricted)
        return (max(share, 0.0), float(p))

    def interaction(self, a: str, b: str) -> Interaction:
        """Whether knobs a and b interact: measured only where the trials cross them."""
        if not _crossed(self.data, a, b):
            return Interaction(a, b, False, math.nan, math.nan)
        full = self._fit(self.varied, f"{self._term(a)}:{self._term(b)}")
        share, p = self._compare(full, self.result)
        return Interaction(a, b, True, share, p)


def _crossed(data: pd.DataFrame, a: str, b: str) -> bool:
    """Two values of `a` each tried with the same two values of `b`."""
    with_b = data.groupby(a)[b].agg(set)
    return any(len(x & y) >= 2 for x, y in itertools.combinations(with_b, 2))


def effects(model: Model, objective: Objective) -> list[Effect]:
    """Each varied knob's values, best first by the model's estimate, the best-vs-runner-up gap
    and the knob's importance."""
    found = []
    for knob in model.varied:
        levels = sorted(
            (level(model, knob, value) for value in model.codes[knob]),
            key=lambda lv: -objective.sign * lv.estimate,
        )
        gap = model.gap(knob, levels[0].value, levels[1].value, objective.sign)
        share, p = model.importance(knob)
        found.append(Effect(knob, model.base[knob], tuple(levels), gap, share, p))
    return found


def level(model: Model, knob: str, value: str) -> Level:
    data = model.data[model.data[knob] == value]
    at_base = data
    for other in model.varied:
        if other != knob:
            at_base = at_base[at_base[other] == model.base[other]]
    picked = at_base if len(at_base) else data
    ys = picked["y"].to_numpy(float)
    return Level(
        value,
        model.estimate(knob, value),
        float(ys.mean()),
        float(ys.std(ddof=1)) if len(ys) > 1 else math.nan,
        len(ys),
        tuple(sorted(i for ids in picked["obs"] for i in ids)),
        tuple(float(y) for y in ys),
    )


def interactions(model: Model) -> list[Interaction]:
    return [model.interaction(a, b) for a, b in itertools.combinations(model.varied, 2)]


def correlation(x: pd.Series, y: pd.Series) -> tuple[float, float, int]:
    """Spearman's rank correlation (scipy) of two columns, its p-value and how many pairs."""
    both = pd.concat([x, y], axis=1).dropna()
    if len(both) < 3 or both.iloc[:, 0].nunique() < 2 or both.iloc[:, 1].nunique() < 2:
        return (math.nan, math.nan, len(both))
    rho, p = scipy_stats.spearmanr(both.iloc[:, 0], both.iloc[:, 1])
    return (float(rho), float(p), len(both))
