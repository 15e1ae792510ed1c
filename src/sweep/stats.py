"""Is a gap bigger than seed noise, and bigger than what anyone would care about? One rule for
every verdict the harness gives: export's effects, the sweep's description, the adaptive seed
repeats' stop (`tuner.replicates`) and the answer page (`report`).

A gap is an estimated difference (best minus other, or a knob's value minus another's), signed
so that a positive gap favours the first by the objective's direction, with its standard error
and degrees of freedom. `margin` is the practical floor: the smallest gap that matters (e.g.
0.01 accuracy). At level `a` (a family of m comparisons at `alpha` uses a = alpha / m,
Bonferroni), with I the two-sided 1 - a interval and J the 1 - 2a interval (the TOST's):

- **matters**: I lies beyond the margin (all of it above +margin, or all below -margin);
- **real but negligible**: I excludes 0 and lies inside (-margin, margin): different, but by
  less than anyone would care about;
- **no difference**: I holds 0 and J lies inside (-margin, margin): equivalence by two
  one-sided tests (TOST), each at a;
- **undecided**: none of these (I straddles the margin, or is too wide); more seeds would tell;
- **noise unknown**: no degrees of freedom for the noise.

The four outcomes exclude one another, and each claim rests on one interval, which the words
quote: J for "no difference", I for the others. The tests are
the libraries' own: t quantiles from scipy, Welch's t-test (`scipy.stats.ttest_ind`), linear
models' contrasts from statsmodels. Two published formulas are written out: Hsu's critical value
for multiple comparisons with the best (MCB), and omega squared.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from scipy import integrate, optimize
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from sweep.objective import Objective

MATTERS, NEGLIGIBLE = "matters", "real but negligible"
SAME, UNDECIDED, UNKNOWN = "no difference", "undecided", "noise unknown"
#: Verdicts that settle a question: the seed repeats stop on them.
DECIDED = (MATTERS, NEGLIGIBLE, SAME)
#: What each verdict says about the margin, after the interval it rests on.
_RELATION = {
    MATTERS: "beyond ±{margin:g}",
    NEGLIGIBLE: "not zero, but inside ±{margin:g}",
    SAME: "inside ±{margin:g}",
    UNDECIDED: "neither beyond nor inside ±{margin:g}",
}


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


def verdict(gap: Gap, alpha: float, margin: float) -> str:
    """The one rule (see the module's docstring) for one gap at level `alpha`, already adjusted
    for its family."""
    if not gap.known:
        return UNKNOWN
    low, high = gap.interval(1 - alpha)
    if low > margin or high < -margin:
        return MATTERS
    if low > 0 or high < 0:  # different: by how much?
        return NEGLIGIBLE if -margin < low and high < margin else UNDECIDED
    return SAME if gap.within(margin, alpha) else UNDECIDED


def family(gaps: Sequence[Gap], alpha: float, margin: float) -> list[str]:
    """One verdict per gap of a family of m comparisons, each at alpha / m (Bonferroni over the
    gaps whose noise is known), so the chance of any false claim stays below alpha."""
    level = alpha / max(sum(g.known for g in gaps), 1)
    return [verdict(g, level, margin) for g in gaps]


def quoted(gap: Gap, said: str, alpha: float) -> tuple[float, tuple[float, float]]:
    """The interval a verdict rests on, and its level: the TOST's 1 - 2 alpha for "no
    difference", the two-sided 1 - alpha otherwise."""
    level = 1 - 2 * alpha if said == SAME else 1 - alpha
    return level, gap.interval(level)


def phrase(gap: Gap, said: str, alpha: float, margin: float, unit: str = "") -> str:
    """The one wording of a verdict's evidence: the gap, the interval it rests on and where that
    interval lies against the margin."""
    head = f"{gap.best} vs {gap.other}: {gap.gap:+.4f}{' ' + unit if unit else ''}"
    if said == UNKNOWN:
        return f"{head}; no configuration has two seeds, so the noise is unknown"
    level, (low, high) = quoted(gap, said, alpha)
    relation = _RELATION[said].format(margin=margin)
    return f"{head} ({level:.2%} CI {low:+.4f} .. {high:+.4f}), {relation}"


def words(gap: Gap, said: str, alpha: float, margin: float) -> str:
    """A verdict in markdown, as export, the sweep's description and the page all write it;
    only a gap shown inside the margin lets cost decide (never an undecided one)."""
    advice = "; either will do: pick the cheaper one" if said in (SAME, NEGLIGIBLE) else ""
    return f"**{said}**: {phrase(gap, said, alpha, margin)}{advice}"


def combine(judged: Sequence[tuple[Gap, str]]) -> tuple[Gap, str]:
    """A knob's verdict from its pairs of values: it matters when one pair does; no difference
    when every pair is shown within the margin; real but negligible when some pair differs and
    all are within it; else undecided. Returns the deciding pair (the largest gap of its kind)."""
    order = sorted(judged, key=lambda pair: -abs(pair[0].gap))
    said = {v for _, v in judged}
    for wanted, when in (
        (MATTERS, MATTERS in said),
        (UNKNOWN, UNKNOWN in said),
        (SAME, said == {SAME}),
        (NEGLIGIBLE, said <= {SAME, NEGLIGIBLE}),
    ):
        if when:
            return next(pair for pair in order if pair[1] == wanted)
    return next(pair for pair in order if pair[1] == UNDECIDED)


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


@dataclass(frozen=True)
class Decision:
    """Where the leading configurations stand: the verdict on best vs runner-up at the level
    `alpha` each comparison was judged at."""

    verdict: str
    best: str
    runner_up: str | None
    gap: Gap | None
    alpha: float
    margin: float

    def words(self, objective: str) -> str:
        if self.gap is None or self.runner_up is None:
            return f"{self.best} is the only configuration: nothing to compare"
        return phrase(self.gap, self.verdict, self.alpha, self.margin, objective)


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
    """Does the best of the `top` leading configurations (by mean) beat the others by more than
    the margin? Welch's test of best vs each other leader, judged by `verdict` with alpha split
    over those `top - 1` comparisons and over the `looks` a sequential procedure may take
    (Bonferroni), so peeking after every round keeps the overall error rate at alpha. It matters
    when best beats every other leader beyond the margin; else the runner-up's verdict, unless
    that says "matters" while another leader's does not (undecided)."""
    order = ranked(scores, objective)
    leaders = order[:top]
    if len(leaders) < 2:
        return Decision(UNDECIDED, order[0], None, None, alpha, margin)
    best = leaders[0]
    gaps = [
        welch(best, scores[best], other, scores[other], objective.sign) for other in leaders[1:]
    ]
    level = alpha / max(looks, 1) / max(sum(g.known for g in gaps), 1)
    said = [verdict(g, level, margin) for g in gaps]
    if all(v == MATTERS for v in said):
        chosen = MATTERS
    else:
        chosen = UNDECIDED if said[0] == MATTERS else said[0]
    return Decision(chosen, best, leaders[1], gaps[0], level, margin)


_NODES, _WEIGHTS = hermegauss(96)  # Gauss-Hermite nodes for E[f(Z)], Z standard normal
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def _dunnett_cdf(d: float, comparisons: int, df: float) -> float:
    """P(max_i T_i <= d) for `comparisons` t statistics with correlation 1/2 and `df` degrees
    of freedom (one best compared with each other mean): with X_0..X_p iid normal and S the
    noise's scale, E_S[ integral phi(x) Phi(x + sqrt(2) d S)^p dx ] (Dunnett 1955)."""

    def given(s: float) -> float:
        return float(_WEIGHTS @ scipy_stats.norm.cdf(_NODES + math.sqrt(2) * d * s) ** comparisons)

    if not math.isfinite(df) or df > 1e5:
        return given(1.0)
    scale = scipy_stats.chi(df, scale=1 / math.sqrt(df))  # S = sqrt(chi2_df / df)
    low, high = scale.ppf(1e-12), scale.ppf(1 - 1e-12)
    value, _ = integrate.quad(lambda s: given(s) * scale.pdf(s), low, high, epsabs=1e-11)
    return float(value)


@functools.lru_cache(maxsize=256)
def dunnett_one_sided(comparisons: int, df: float, alpha: float) -> float:
    """The one-sided Dunnett critical value d: P(max of `comparisons` equicorrelated (1/2)
    t statistics <= d) = 1 - alpha. Hsu's MCB uses it with the number of values less one."""
    if comparisons < 1:
        return math.nan
    if comparisons == 1:  # one comparison: Student's t
        return float(scipy_stats.t.ppf(1 - alpha, df))
    return float(
        optimize.brentq(
            lambda d: _dunnett_cdf(d, comparisons, df) - (1 - alpha), 0.0, 50.0, xtol=1e-9
        )
    )


def mcb(
    means: Sequence[float], se: Sequence[Sequence[float]], df: float, alpha: float
) -> list[tuple[float, float]]:
    """Hsu's constrained multiple comparisons with the best (Hsu 1996, section 4.1): for each
    value i, a simultaneous 1 - alpha interval for mean_i - max_{j != i} mean_j (more is better),
    valid although the best was picked from the same data. `se[i][j]` is the standard error of
    mean_i - mean_j (sigma * sqrt(2 / n) on a balanced design, where it is exact). A value whose
    upper bound is above 0 may be the best: together they are the best set."""
    k = len(means)
    d = dunnett_one_sided(k - 1, df, alpha)
    bounds = []
    for i in range(k):
        j = max((j for j in range(k) if j != i), key=lambda j: means[j])
        centre, half = means[i] - means[j], d * se[i][j]
        bounds.append((min(0.0, centre - half), max(0.0, centre + half)))
    return bounds


def omega_squared(ss: float, df: float, mse: float, ss_total: float) -> float:
    """A term's share of the variance, omega squared (Hays 1963; for several factors Olejnik and
    Algina 2003): (SS - df * MSE) / (SS_total + MSE). Eta squared (SS / SS_total) gives a term
    with no effect at all about df * sigma^2 / SS_total; omega squared gives it about 0
    (negative by chance)."""
    return (ss - df * mse) / (ss_total + mse)


def omega_interval(
    f: float, df: float, df_resid: float, mse: float, ss: float, ss_total: float, confidence: float
) -> tuple[float, float]:
    """An approximate interval for omega squared: the noncentrality lambda of the term's F
    statistic bounded by inverting the noncentral F (Steiger 2004), each bound mapped as the
    point estimate is, lambda * MSE / (lambda * MSE + rest), where rest = SS_total + MSE - (SS -
    df * MSE) is the variance of everything else, taken as estimated."""
    tail = (1 - confidence) / 2

    def bound(p: float) -> float:
        def at(nc: float) -> float:
            return float(scipy_stats.ncf.cdf(f, df, df_resid, nc)) - p

        if not math.isfinite(f) or at(0.0) < 0:
            return 0.0 if math.isfinite(f) else math.inf
        estimate = max(f * df - df, 0.0)
        if estimate > 1e6:  # beyond what scipy's noncentral F resolves: the bound is the estimate
            return estimate
        high = max(10.0, 4 * f * df)
        while at(high) > 0:
            high *= 4
        if math.isnan(at(high)):
            return estimate
        return float(optimize.brentq(at, 0.0, high, xtol=1e-8))

    rest = ss_total + mse - (ss - df * mse)
    low, high = bound(1 - tail) * mse, bound(tail) * mse
    return (low / (low + rest), high / (high + rest))
