"""What a study adds to the answer: does attention beat plain averaging (the `scale=uniform`
control), what the screened best is worth on runs that did not select it (the confirmation
stage), and how many trials this space needs (the expected best of n trials).

The curve is Dodge et al. (2019)'s expected validation performance, estimated without bias by
Tang et al.'s U-statistic, with simultaneous confidence bands from the empirical CDF's bands
(Lourie et al. 2024): both from `opda`. Each observation is one (configuration, seed) of the
screen, so n trials are n draws of a configuration of the design and a seed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from opda.nonparametric import EmpiricalDistribution

from sweep import stats, tracking
from sweep.effects.model import Model
from sweep.report import pool
from sweep.stats import Gap
from sweep.vocabulary import CONFIRM_OF_TAG, SEED_TAG, SELECTION_TAG

#: The scale value that makes every attention weight 1/n: plain averaging, the control.
UNIFORM = "uniform"
#: Trials the curve is read at (up to the observations there are).
CURVE_AT = (1, 2, 3, 5, 10, 20, 30, 50)
#: Fewest observations worth a curve.
MIN_CURVE = 10


@dataclass(frozen=True)
class Control:
    """Each attention scale against the uniform control: its gap and verdict (one family)."""

    gaps: tuple[Gap, ...]
    verdicts: tuple[str, ...]
    level: float


def control(model: Model, knob: str, sign: float, alpha: float, margin: float) -> Control | None:
    """Every other value of `knob` minus `uniform`, judged by the one rule, Bonferroni over them."""
    if knob not in model.varied or UNIFORM not in model.levels[knob]:
        return None
    gaps = [
        model.difference(knob, value, UNIFORM, sign)
        for value in model.levels[knob]
        if value != UNIFORM
    ]
    level = alpha / max(len(gaps), 1)
    return Control(tuple(gaps), tuple(stats.verdict(g, level, margin) for g in gaps), level)


@dataclass(frozen=True)
class Confirmed:
    """One configuration the confirmation stage re-ran: as screened (its selection record),
    and on fresh seeds: their validation score (same endpoint, not selected on) and their
    confirmation-slice score (data no selection saw), by seed."""

    roles: str
    trial_id: str
    run_id: str
    screened: float
    screened_sd: float
    screened_n: int
    fresh_val: dict[int, float]
    slice: dict[int, float]


@dataclass(frozen=True)
class Confirmation:
    sweep: str
    run_id: str  # the confirmation stage run
    rows: tuple[Confirmed, ...]
    gaps: tuple[tuple[Gap, Gap, str], ...]  # best minus each other: screened, confirmed, verdict
    level: float  # each confirmed gap's, Bonferroni over them


def confirmation(sweep: pool.Sweep, alpha: float, margin: float) -> Confirmation | None:
    """The sweep's confirmation stage, if it ran: each pick's screened and confirmed scores, and
    the best's gap to each other pick, screened (Welch) and confirmed (paired by seed)."""
    holder = tracking.confirmation_run(sweep.parent.info.run_id)
    if holder is None or SELECTION_TAG not in holder.data.tags:
        return None
    metric = f"best_{sweep.objective.name}"
    runs = tracking.trial_runs(holder.info.run_id)
    rows = []
    for pick in json.loads(holder.data.tags[SELECTION_TAG]):
        mine = [
            r
            for r in runs
            if r.data.tags.get(CONFIRM_OF_TAG) == pick["run_id"]
            and r.info.status == "FINISHED"
            and "confirmed_accuracy" in r.data.metrics
        ]
        seeds = {int(r.data.tags[SEED_TAG]): r for r in mine}
        rows.append(
            Confirmed(
                pick["roles"],
                pick["trial_id"],
                pick["run_id"],
                pick["screened"],
                pick["sd"],
                pick["n"],
                {s: r.data.metrics[metric] for s, r in seeds.items()},
                {s: r.data.metrics["confirmed_accuracy"] for s, r in seeds.items()},
            )
        )
    if not rows or not rows[0].slice:
        return None
    sign, level = sweep.objective.sign, alpha / max(len(rows) - 1, 1)
    gaps = []
    for other in rows[1:]:
        confirmed = _paired(rows[0], other)
        gaps.append(
            (_screened_gap(rows[0], other, sign), confirmed, _said(confirmed, level, margin))
        )
    return Confirmation(sweep.name, holder.info.run_id, tuple(rows), tuple(gaps), level)


def _said(gap: Gap, level: float, margin: float) -> str:
    return stats.verdict(gap, level, margin)


def _screened_gap(best: Confirmed, other: Confirmed, sign: float) -> Gap:
    """Best minus other as the screen saw them (Welch from their seeds' mean and spread)."""
    va, vb = best.screened_sd**2 / best.screened_n, other.screened_sd**2 / other.screened_n
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (best.screened_n - 1) + vb**2 / (other.screened_n - 1))
    return Gap(best.roles, other.roles, sign * (best.screened - other.screened), se, df)


def _paired(best: Confirmed, other: Confirmed) -> Gap:
    """Best minus other on the confirmation slice, over the seeds both ran (paired: each seed
    is one split and one batch order for both); slice accuracy is always "more is better"."""
    seeds = sorted(set(best.slice) & set(other.slice))
    d = np.array([best.slice[s] - other.slice[s] for s in seeds])
    if len(d) < 2:
        return Gap(best.roles, other.roles, float(d.mean()) if len(d) else math.nan, math.nan, 0)
    se = float(d.std(ddof=1) / math.sqrt(len(d)))
    return Gap(best.roles, other.roles, float(d.mean()), se, float(len(d) - 1))


@dataclass(frozen=True)
class Curve:
    """Expected best score of n trials (n = 1..N): the unbiased estimate and a simultaneous
    band at `confidence`, from `observations` (configuration, seed) scores."""

    n: tuple[int, ...]
    estimate: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    confidence: float
    observations: int


def tuning_curve(
    scores: Sequence[float], objective: str, sign: float, confidence: float
) -> Curve | None:
    """The expected best of n trials drawn from these scores' distribution; None with too few
    scores, or for a metric with no bounds (the bands need the support: accuracy's is [0, 1])."""
    ys = np.asarray(scores, dtype=float)
    ys = ys[np.isfinite(ys)]
    if len(ys) < MIN_CURVE or "accuracy" not in objective:
        return None
    ns = np.arange(1, len(ys) + 1)
    minimize = sign < 0
    point = EmpiricalDistribution(ys).u_tuning_curve(ns, minimize=minimize)
    bands = EmpiricalDistribution.confidence_bands(
        ys, confidence, a=0.0, b=1.0, method="ld_equal_tailed", generator=np.random.default_rng(0)
    )
    ends = [
        bands[0].average_tuning_curve(ns, minimize),
        bands[2].average_tuning_curve(ns, minimize),
    ]
    low, high = np.minimum(*ends), np.maximum(*ends)
    return Curve(
        tuple(int(n) for n in ns),
        tuple(float(v) for v in point),
        tuple(float(v) for v in low),
        tuple(float(v) for v in high),
        confidence,
        len(ys),
    )
