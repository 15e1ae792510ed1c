"""Each knob's effect and each crossed pair's interaction, judged by the one rule
(`sweep.stats.verdict`): what export, the sweep's description and the answer page all say.

A knob's verdict weighs every pair of its values (their marginal means' difference), the pairs
of all knobs one family (Bonferroni): it **matters** when some pair is shown apart by more than
the margin. Its values get Hsu's multiple comparisons with the best: the *best set* holds every
value that may be the best, valid although the best was picked from the same runs. Its effect
size is omega squared with an interval. A pair of crossed knobs is judged the same way on its
differences of differences (a family of its own).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from sweep import stats
from sweep.effects.model import Model
from sweep.stats import Gap


@dataclass(frozen=True)
class Term:
    """A term's test in the model: sum of squares, degrees of freedom, F, p; its omega squared
    and what its interval needs."""

    ss: float
    df: int
    f: float
    p: float
    df_resid: int
    mse: float
    ss_total: float
    floor: float  # a total sum of squares this small is float rounding of a constant

    @property
    def omega(self) -> float:
        """Omega squared, the term's share of the variance (NaN: the noise is unknown, or the
        metric is constant but for float rounding)."""
        if self.df_resid < 1 or not self.mse > 0 or self.ss_total <= self.floor:
            return math.nan
        return stats.omega_squared(self.ss, self.df, self.mse, self.ss_total)

    def omega_interval(self, confidence: float) -> tuple[float, float]:
        if not math.isfinite(self.omega):
            return (math.nan, math.nan)
        return stats.omega_interval(
            self.f, self.df, self.df_resid, self.mse, self.ss, self.ss_total, confidence
        )


@dataclass(frozen=True)
class Value:
    """One value of a knob: its marginal mean with its standard error, and Hsu's MCB interval
    for its mean minus the best of the others' (more is better)."""

    value: str
    mean: Gap
    mcb: tuple[float, float]

    @property
    def may_be_best(self) -> bool:
        return self.mcb[1] > 0


@dataclass(frozen=True)
class KnobEffect:
    knob: str
    base: str
    values: tuple[Value, ...]  # best first by marginal mean
    gap: Gap  # the pair of values that decides the verdict, the better one first
    verdict: str
    alpha: float  # the level each pair was judged at (alpha over the family)
    margin: float
    term: Term

    @property
    def best_set(self) -> tuple[str, ...]:
        return tuple(v.value for v in self.values if v.may_be_best)

    @property
    def words(self) -> str:
        return stats.words(self.gap, self.verdict, self.alpha, self.margin)


@dataclass(frozen=True)
class PairEffect:
    a: str
    b: str
    unmeasured: str | None  # why not measured; None when it was
    gaps: tuple[Gap, ...]  # each difference of differences
    gap: Gap | None  # the one that decides the verdict
    verdict: str
    alpha: float
    margin: float
    term: Term | None

    @property
    def words(self) -> str:
        if self.gap is None:
            return f"not measured: {self.unmeasured}"
        return stats.words(self.gap, self.verdict, self.alpha, self.margin)


def _term(model: Model, term: tuple[str, ...]) -> Term:
    ss, df, f, p = model.term_test(term)
    y = model.data["y"].to_numpy(float)
    floor = len(y) * (1e-12 * float(abs(y).max(initial=0.0))) ** 2
    return Term(ss, df, f, p, model.df, model.mse, model.ss_total, floor)


def _oriented(gap: Gap) -> Gap:
    """The better value first."""
    return gap if gap.gap >= 0 else Gap(gap.other, gap.best, -gap.gap, gap.se, gap.df)


def knob_effects(model: Model, sign: float, alpha: float, margin: float) -> list[KnobEffect]:
    """Every varied knob: its values best first with the best set, the verdict with the pair
    that decides it, and its share of the variance."""
    pairs = {
        knob: [
            _oriented(model.difference(knob, a, b, sign))
            for a, b in itertools.combinations(model.levels[knob], 2)
        ]
        for knob in model.varied
    }
    every = [g for gaps in pairs.values() for g in gaps]
    level = alpha / max(sum(g.known for g in every), 1)
    found = []
    for knob, gaps in pairs.items():
        gap, said = stats.combine([(g, stats.verdict(g, level, margin)) for g in gaps])
        values = _values(model, knob, sign, alpha)
        term = _term(model, (knob,))
        found.append(KnobEffect(knob, model.base[knob], values, gap, said, level, margin, term))
    return found


def _values(model: Model, knob: str, sign: float, alpha: float) -> tuple[Value, ...]:
    """A knob's values best first, each with its marginal mean and MCB interval."""
    levels = model.levels[knob]
    means = {v: model.marginal(knob, v) for v in levels}
    better = [sign * means[v].gap for v in levels]
    se = [[model.difference(knob, a, b, 1.0).se for b in levels] for a in levels]
    if model.df > 0:
        bounds = stats.mcb(better, se, model.df, alpha)
    else:
        bounds = [(-math.inf, math.inf)] * len(levels)
    values = [Value(v, means[v], bound) for v, bound in zip(levels, bounds, strict=True)]
    return tuple(sorted(values, key=lambda v: -sign * v.mean.gap))


def pair_effects(model: Model, sign: float, alpha: float, margin: float) -> list[PairEffect]:
    """Every pair of varied knobs: measured where the runs cross them, judged on each
    difference of differences (all pairs' contrasts one family)."""
    measured = {
        (a, b): model.interaction(a, b, sign)
        for a, b in itertools.combinations(model.varied, 2)
        if (a, b) in model.terms
    }
    every = [g for gaps in measured.values() for g in gaps]
    level = alpha / max(sum(g.known for g in every), 1)
    found = []
    for a, b in itertools.combinations(model.varied, 2):
        if (a, b) not in measured:
            why = model.unmeasured.get((a, b), "not crossed")
            found.append(PairEffect(a, b, why, (), None, "", level, margin, None))
            continue
        gaps = measured[(a, b)]
        gap, said = stats.combine([(g, stats.verdict(g, level, margin)) for g in gaps])
        found.append(
            PairEffect(a, b, None, tuple(gaps), gap, said, level, margin, _term(model, (a, b)))
        )
    return found


def verdict_lines(effects: Sequence[KnobEffect]) -> list[str]:
    """`knob: verdict` lines, as export and the sweep's description list them."""
    return [f"{e.knob}: {e.words}" for e in effects]
