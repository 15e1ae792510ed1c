"""Which knobs matter, from a table of runs: one linear model (statsmodels OLS) of a metric over
the knobs, shared by export's effects, the sweep's description and the answer page, so the same
runs get the same numbers and the same words everywhere.

- Every knob is a categorical factor; a numeric knob with more than `MAX_LEVELS` distinct
  values (a random or Bayesian search's floats) is cut into `BINS` quantile bins, not given
  one level per float.
- Two knobs get an interaction term where the runs cross them (every value of one with every
  value of the other), unless the term is aliased with the rest of the model.
- The seed is a block (a fixed effect) on a balanced design: every configuration run with the
  same seeds, as a crossed study does; a seed that redraws the validation split then shifts all
  its cells alike, and the block takes that out of every comparison.
- A knob's value gets its *marginal mean*: the model's prediction averaged uniformly over every
  value of the knobs the runs cross it with (and the seeds), the others held at their base
  value. On a crossed design that is the estimand of functional ANOVA (Hutter et al. 2014), the
  raw mean at that value where the design is balanced; one knob at a time, it is the prediction
  at the base point. Differences between a knob's values do not depend on where the others are
  held, unless they interact, and then the runs cross them. Differences between values,
  and interactions (differences of differences), come with the model's standard errors.
- A design whose runs cannot separate its knobs (a rank-deficient design matrix) is refused in
  one line naming them (`ReportError`), never fitted with a pseudo-inverse.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from statsmodels.regression.linear_model import OLS

from sweep.errors import ReportError
from sweep.stats import Gap

#: A numeric knob with more distinct values than this is binned (a continuous search).
MAX_LEVELS, BINS = 6, 4
#: The term of the seed block.
BLOCK = "block"


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


def levels_of(column: pd.Series) -> pd.Series:
    """Each run's level of a knob: its value as people read it, or, for a numeric knob with
    more than `MAX_LEVELS` values, its quantile bin (`low..high`, the values it holds)."""
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().all() and numbers.nunique() > MAX_LEVELS:
        codes = pd.qcut(numbers, BINS, labels=False, duplicates="drop")
        spans = numbers.groupby(codes).agg(["min", "max"])
        names = {
            c: f"{shown(float(r['min']))}..{shown(float(r['max']))}" for c, r in spans.iterrows()
        }
        return codes.map(names)
    if numbers.notna().all() and column.dtype.kind != "b":
        return numbers.map(shown)  # a float step's 0.30000000000000004 is 0.3 to people
    return column.map(shown)


def _ordered(values: Sequence[str]) -> list[str]:
    """Levels in one order whoever fits the model: by number (a bin by its low end), else by
    name; the reference level is the first."""

    def number(value: str) -> float:
        try:
            return float(value.split("..")[0])
        except ValueError:
            return math.nan

    if all(math.isfinite(number(v)) for v in values):
        return sorted(values, key=lambda v: (number(v), v))
    return sorted(values)


def units(obs: pd.DataFrame, knobs: Sequence[str], metric: str) -> pd.DataFrame:
    """One row per configuration and seed (a configuration run twice with one seed, e.g. the
    base in several sweeps, is one measurement): the metric's mean `y` and the observations."""
    table = obs.dropna(subset=[metric]).copy()
    for knob in knobs:
        table[knob] = table[knob].map(lambda v: v if v is None or v != v else shown(v))
    rows = table.groupby([*knobs, "seed"], sort=False, dropna=False)
    return rows.agg(y=(metric, "mean"), obs=("obs", tuple)).reset_index()


def balanced(data: pd.DataFrame, knobs: Sequence[str]) -> bool:
    """Every configuration was run with the same two or more seeds: the design a seed block
    fits (a one-knob-at-a-time sweep, whose repeats reuse seeds unevenly, is not)."""
    seeds = data.groupby(list(knobs), dropna=False)["seed"].agg(frozenset)
    return len(seeds) > 1 and len(set(seeds)) == 1 and len(seeds.iloc[0]) > 1


class Model:
    """The linear model of one metric's units (`units`) over the knobs varied in them."""

    def __init__(self, data: pd.DataFrame, knobs: Sequence[str], base: Mapping[str, str | None]):
        cells = {k: levels_of(data[k].astype(str)) for k in knobs}
        self.data = data.assign(**{f"level:{k}": v for k, v in cells.items()})
        self.varied = [k for k in knobs if cells[k].nunique() > 1]
        self.levels = {k: _ordered(list(cells[k].unique())) for k in self.varied}
        self.base = {k: self._base_level(k, base.get(k)) for k in self.varied}
        self.block = bool(self.varied) and balanced(data, self.varied)
        self.seeds = sorted(data["seed"].unique()) if self.block else []
        self.spec: list[tuple[tuple[str, str], ...]] = [()]  # each column's (factor, level)s
        self._indicators: dict[tuple[str, str], np.ndarray] = {}
        self.crossed: set[tuple[str, str]] = set()  # pairs of knobs run in every combination
        self.terms: dict[tuple[str, ...], list[int]] = {}
        for knob in self.varied:
            self._add((knob,), [((knob, v),) for v in self.levels[knob][1:]])
        if self.block:
            self._add((BLOCK,), [((BLOCK, str(s)),) for s in self.seeds[1:]])
        self._refuse_confounded()
        self.unmeasured = self._add_interactions()
        self.result = OLS(self.data["y"].to_numpy(float), self._matrix(self.spec)).fit()

    def _base_level(self, knob: str, value: str | None) -> str:
        """The level holding the base value; the most measured one where it was not tried."""
        column = self.data[f"level:{knob}"]
        matches = column[self.data[knob].astype(str).map(shown) == shown(value)]
        return str(matches.iloc[0] if len(matches) else column.value_counts().index[0])

    def _add(self, term: tuple[str, ...], columns: list[tuple[tuple[str, str], ...]]) -> None:
        self.terms[term] = list(range(len(self.spec), len(self.spec) + len(columns)))
        self.spec += columns

    def _indicator(self, factor: str, level: str) -> np.ndarray:
        if (factor, level) not in self._indicators:
            column = (
                self.data["seed"].astype(str) if factor == BLOCK else self.data[f"level:{factor}"]
            )
            self._indicators[(factor, level)] = (column == level).to_numpy(float)
        return self._indicators[(factor, level)]

    def _matrix(self, spec: Sequence[tuple[tuple[str, str], ...]]) -> np.ndarray:
        ones = np.ones(len(self.data))
        return np.column_stack(
            [np.prod([self._indicator(*f) for f in col], axis=0) if col else ones for col in spec]
        )

    def _refuse_confounded(self) -> None:
        """One line naming the knobs the runs cannot separate, before anything is fitted."""
        matrix = self._matrix(self.spec)
        rank = np.linalg.matrix_rank(matrix)
        if rank == matrix.shape[1]:
            return
        tangled = [
            knob
            for knob in self.varied
            if rank - np.linalg.matrix_rank(np.delete(matrix, self.terms[(knob,)], axis=1))
            < len(self.terms[(knob,)])
        ]
        raise ReportError(
            f"cannot separate {', '.join(tangled or self.varied)}: the runs never vary them "
            f"independently (design matrix of rank {rank} for {matrix.shape[1]} columns, "
            f"{len(self.data)} runs); cross them in a grid, or search one at a time"
        )

    def _add_interactions(self) -> dict[tuple[str, str], str]:
        """An interaction term for each pair the runs cross, unless aliased with the model so
        far; why each other pair is not measured."""
        unmeasured: dict[tuple[str, str], str] = {}
        rank = len(self.spec)
        for a, b in itertools.combinations(self.varied, 2):
            combos = self.data[[f"level:{a}", f"level:{b}"]].drop_duplicates()
            if len(combos) < len(self.levels[a]) * len(self.levels[b]):
                unmeasured[(a, b)] = "some pairs of their values never ran together"
                continue
            self.crossed |= {(a, b), (b, a)}
            columns = [((a, x), (b, y)) for x in self.levels[a][1:] for y in self.levels[b][1:]]
            if np.linalg.matrix_rank(self._matrix(self.spec + columns)) < rank + len(columns):
                unmeasured[(a, b)] = "aliased with the other terms of this design"
                continue
            self._add((a, b), columns)
            rank += len(columns)
        pairs = [t for t in self.terms if len(t) == 2]
        if pairs and rank >= len(self.data):  # no residual left for the noise: measure none
            self.spec = self.spec[: min(self.terms[pairs[0]])]
            for pair in pairs:
                del self.terms[pair]
                unmeasured[pair] = "no runs left over to measure the noise beside them"
        return unmeasured

    @property
    def df(self) -> int:
        return round(self.result.df_resid)

    @property
    def mse(self) -> float:
        return float(self.result.ssr) / self.df if self.df > 0 else math.nan

    @property
    def noise(self) -> tuple[float, int]:
        """Residual standard deviation and its degrees of freedom (NaN, 0: unknown)."""
        return (math.sqrt(self.mse) if self.df > 0 else math.nan, self.df)

    def _row(self, fixed: Mapping[str, str]) -> np.ndarray:
        """The design row with the `fixed` knobs at their values, averaged uniformly over every
        level of the knobs the runs cross them with (and the seeds), the others at their base:
        what a marginal mean is a linear combination of."""

        def weight(factor: str, level: str) -> float:
            if factor in fixed:
                return float(fixed[factor] == level)
            if factor == BLOCK:
                return 1.0 / len(self.seeds)
            if all((factor, knob) in self.crossed for knob in fixed):
                return 1.0 / len(self.levels[factor])
            return float(level == self.base[factor])

        return np.array([math.prod(weight(*f) for f in col) for col in self.spec])

    def contrast(self, row: np.ndarray, sign: float, best: str, other: str) -> Gap:
        """sign * row . params, with its standard error from the model."""
        estimate = sign * float(row @ self.result.params)
        variance = float(row @ self.result.normalized_cov_params @ row) * self.mse
        se = math.sqrt(max(variance, 0.0)) if self.df > 0 else math.nan
        return Gap(best, other, estimate, se, float(self.df) if self.df > 0 else math.nan)

    def marginal(self, knob: str, value: str) -> Gap:
        """The marginal mean at `value` (as a Gap against 0, for its interval)."""
        return self.contrast(self._row({knob: value}), 1.0, value, "0")

    def difference(self, knob: str, a: str, b: str, sign: float) -> Gap:
        """Marginal mean at `a` minus at `b`, signed by the objective's direction."""
        return self.contrast(self._row({knob: a}) - self._row({knob: b}), sign, a, b)

    def interaction(self, a: str, b: str, sign: float) -> list[Gap]:
        """Per pair of non-reference values, the difference of differences: how much moving
        both from their reference values beats the sum of moving each."""
        (a0, *others_a), (b0, *others_b) = self.levels[a], self.levels[b]
        gaps = []
        for x, y in itertools.product(others_a, others_b):
            row = self._row({a: x, b: y}) - self._row({a: x, b: b0})
            row += self._row({a: a0, b: b0}) - self._row({a: a0, b: y})
            gaps.append(self.contrast(row, sign, f"{x} x {y}", f"{a0} x {b0}"))
        return gaps

    def term_test(self, term: tuple[str, ...]) -> tuple[float, int, float, float]:
        """A term's sum of squares (hierarchical: a knob's with its interactions set aside),
        degrees of freedom, F statistic and p-value."""
        inner = [t for t in self.terms if len(t) > len(term) and set(term) <= set(t)]
        keep = [i for t in self.terms if t not in inner for i in self.terms[t]]
        without = [i for i in keep if i not in self.terms[term]]
        ss = self._ssr([0, *without]) - self._ssr([0, *keep])
        df = len(self.terms[term])
        if self.df < 1:
            return (ss, df, math.nan, math.nan)
        f = (ss / df) / self.mse if self.mse > 0 else math.inf
        return (ss, df, f, float(scipy_stats.f.sf(f, df, self.df)))

    def _ssr(self, columns: Sequence[int]) -> float:
        """The residual sum of squares of the model restricted to these columns (numpy's least
        squares: the restricted designs are full rank, as subsets of a full-rank one)."""
        matrix = self._matrix([self.spec[i] for i in columns])
        y = self.data["y"].to_numpy(float)
        fitted = matrix @ np.linalg.lstsq(matrix, y, rcond=None)[0]
        return float(((y - fitted) ** 2).sum())

    @property
    def ss_total(self) -> float:
        return float(self.result.centered_tss)
