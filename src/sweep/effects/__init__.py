"""Which knobs matter, from a table of runs: the linear model (`model`) and each knob's and
pair's effect judged by the one rule (`summary`). Export's effects, the sweep's description and
the answer page all go through it, so the same runs get the same words everywhere.

model    the design (levels, bins, seed block, crossed pairs), its rank check and OLS fit:
         marginal means, differences, interactions, term tests
summary  knob and pair effects: the verdict with its deciding pair, the best set (Hsu's MCB),
         omega squared
"""

from sweep.effects.model import BINS, MAX_LEVELS, Model, balanced, levels_of, shown, units
from sweep.effects.summary import (
    KnobEffect,
    PairEffect,
    Term,
    Value,
    knob_effects,
    pair_effects,
    verdict_lines,
)

__all__ = [
    "BINS",
    "MAX_LEVELS",
    "KnobEffect",
    "Model",
    "PairEffect",
    "Term",
    "Value",
    "balanced",
    "knob_effects",
    "levels_of",
    "pair_effects",
    "shown",
    "units",
    "verdict_lines",
]
