"""Is a gap bigger than seed noise? One rule for every verdict the harness gives: the adaptive
replication's stop (`tuner.replicates`) and the answer page (`report`).

A gap is the best configuration's (or value's) mean minus another's, signed so that a positive
gap favours the best by the objective's direction, with its standard error and degrees of
freedom. Within a family of m comparisons at level `alpha`:

- **different** when the Holm-adjusted two-sided p-value of "no gap" is below `alpha`;
- **no difference** when the gap is shown smaller than `margin` (two one-sided tests, TOST,
  each at `alpha / m`, Bonferroni): the `1 - 2*alpha/m` confidence interval lies inside
  `[-margin, margin]`;
- **undecided** otherwise: the noise is too large for either claim; more seeds would tell.

The tests are the libraries' own: Welch's t-test (`scipy.stats.ttest_ind(equal_var=False)`) for
two sets of seeds, a linear model's contrast (statsmodels) on the report's pooled data, Holm's
step-down adjustment from `statsmodels.stats.multitest`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from sweep.objective import Objective

DIFFERENT, SAME, UNDECIDED, UNKNOWN = "different", "no difference", "undecided", "noise unknown"


@dataclass(frozen=True)
class Gap:
    """`best` minus `other` (positive: `best` is better by direction), its standard error and
    degrees of freedom; `se` is NaN when the noise cannot be estimated."""

    best: str
    other: str
    gap: float
    se: float
    df: float

    @property
    def known(self) -> bool:
        return math.isfinite(self.se) and math.isfinite(self.df) and self.df > 0

    @property
    def p(self) -> float:
        """Two-sided p-value of "no gap" (NaN when the noise is unknown)."""
        if not self.known:
            return math.nan
        if self.se == 0:
            return 0.0 if self.gap else 1.0
        return float(2 * scipy_stats.t.sf(abs(self.gap / self.se), self.df))

    def interval(self, confidence: float) -> tuple[float, float]:
        """The two-sided confidence interval of the gap."""
        if not self.known:
            return (-math.inf, math.inf)
        half = float(scipy_stats.t.ppf(0.5 + confidence / 2, self.df)) * self.se
        return (self.gap - half, self.gap + half)

    def within(self, margin: float, alpha: float) -> bool:
        """TOST at `alpha`: both one-sided tests reject |gap| >= margin."""
        low, high = self.interval(1 - 2 * alpha)
        return -margin < low and high < margin


def welch(best: str, a: Sequence[float], other: str, b: Sequence[float], sign: float) -> Gap:
    """Welch's t-test of two sets of seeds (each at least 2): the gap, its standard error and
    Welch-Satterthwaite degrees of freedom, from scipy."""
    gap = sign * (float(np.mean(a)) - float(np.mean(b)))
    if len(a) < 2 or len(b) < 2:
        return Gap(best, other, gap, math.nan, math.nan)
    if np.var(a) == 0 and np.var(b) == 0:  # identical seeds: no noise at all
        return Gap(best, other, gap, 0.0, float(len(a) + len(b) - 2))
    result = scipy_stats.ttest_ind(a, b, equal_var=False)
    se = abs(gap / result.statistic) if result.statistic else _welch_se(a, b)
    return Gap(best, other, gap, float(se), float(result.df))


def _welch_se(a: Sequence[float], b: Sequence[float]) -> float:
    return float(math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels); NaN stays NaN and is left out of the family."""
    known = [i for i, p in enumerate(pvalues) if math.isfinite(p)]
    adjusted = [math.nan] * len(pvalues)
    if known:
        _, values, *_ = multipletests([pvalues[i] for i in known], method="holm")
        for i, value in zip(known, values, strict=True):
            adjusted[i] = float(value)
    return adjusted


def verdicts(gaps: Sequence[Gap], alpha: float, margin: float) -> list[str]:
    """One verdict per gap of a family: Holm for "different", Bonferroni TOST for "no
    difference" (see the module's docstring); "noise unknown" where a gap's noise is."""
    known = [i for i, g in enumerate(gaps) if g.known]
    said = [UNKNOWN] * len(gaps)
    if not known:
        return said
    rejected, *_ = multipletests([gaps[i].p for i in known], alpha=alpha, method="holm")
    for i, different in zip(known, rejected, strict=True):
        if different:
            said[i] = DIFFERENT
        elif gaps[i].within(margin, alpha / len(known)):
            said[i] = SAME
        else:
            said[i] = UNDECIDED
    return said


@dataclass(frozen=True)
class Decision:
    """Where the leading configurations stand: the verdict on best vs runner-up, and each
    configuration's seeds (scores) that it rests on."""

    verdict: str
    best: str
    runner_up: str | None
    gap: Gap | None
    alpha: float

    def words(self, objective: str) -> str:
        if self.gap is None or self.runner_up is None:
            return f"{self.best} is the only configuration: nothing to compare"
        # the interval each claim rests on: two-sided at alpha for "different", the TOST's
        # 1 - 2 alpha for "no difference"
        level = 1 - 2 * self.alpha if self.verdict == SAME else 1 - self.alpha
        low, high = self.gap.interval(level)
        span = f"gap {self.gap.gap:+.4f} {objective} ({level:.1%} CI {low:+.4f} .. {high:+.4f})"
        return {
            DIFFERENT: f"{self.best} beats {self.runner_up}: {span}",
            SAME: f"no difference between {self.best} and {self.runner_up}: {span}",
            UNDECIDED: f"undecided between {self.best} and {self.runner_up}: {span}",
        }.get(self.verdict, f"{self.verdict}: {span}")


def ranked(scores: Mapping[str, Sequence[float]], objective: Objective) -> list[str]:
    """Configurations best first by their mean over seeds (ties: fewer seeds first, then key)."""
    return sorted(scores, key=lambda k: (-objective.sign * float(np.mean(scores[k])), k))


def decide(
    scores: Mapping[str, Sequence[float]],
    objective: Objective,
    *,
    alpha: float,
    margin: float,
    top: int,
    looks: int = 1,
) -> Decision:
    """Does the best of the `top` leading configurations (by mean) beat each of the others by
    more than seed noise? Welch's test of best vs each other leader, Holm across those
    `top - 1` comparisons; `alpha` is split evenly over the `looks` a sequential procedure may
    take (Bonferroni), so peeking after every round keeps the overall error rate at `alpha`.
    The verdict: "different" when best beats every other leader, "no difference" when it is
    shown within `margin` of the runner-up, else "undecided"."""
    order = ranked(scores, objective)
    leaders, level = order[:top], alpha / max(looks, 1)
    if len(leaders) < 2:
        return Decision(UNDECIDED, order[0], None, None, level)
    best = leaders[0]
    gaps = [
        welch(best, scores[best], other, scores[other], objective.sign) for other in leaders[1:]
    ]
    said = verdicts(gaps, level, margin)
    if all(v == DIFFERENT for v in said):
        verdict = DIFFERENT
    elif said[0] == SAME:
        verdict = SAME
    else:
        verdict = UNDECIDED if said[0] != UNKNOWN else UNKNOWN
    return Decision(verdict, best, leaders[1], gaps[0], level)
