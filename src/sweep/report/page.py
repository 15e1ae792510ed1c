"""The answer page in markdown, and its figures: per group of sibling sweeps a headline table
(each knob's effect, noise and verdict), each knob's values, interactions, the attention
diagnostics, the uniform-attention control, screened vs confirmed, the expected best of n
trials, and the observations (MLflow runs) every number rests on."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from sweep import leaderboard, plots, stats
from sweep.effects import KnobEffect, Term
from sweep.report.answer import DIAGNOSTICS, Answer, Best
from sweep.report.study import CURVE_AT


def _num(value: float, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.3g}"


def _ids(obs: Sequence[int]) -> str:
    return ", ".join(f"#{i}" for i in obs)


def _ci(low: float, high: float, sign: str = "+") -> str:
    return f"[{low:{sign}.4f}, {high:{sign}.4f}]" if math.isfinite(low + high) else "-"


def _omega(term: Term | None, confidence: float) -> str:
    """omega squared with its interval, as percentages (an estimate below zero as 0%)."""
    if term is None or not math.isfinite(term.omega):
        return "-"
    low, high = term.omega_interval(confidence)
    return f"{max(term.omega, 0.0):.0%} [{low:.0%}, {high:.0%}]"  # below zero: by chance


def headline(answer: Answer) -> str:
    """Each knob: values tried, the best set, the best value's marginal mean, the pair that
    decides the verdict with its interval, the share of variance, and the verdict."""
    name, level = answer.objective.name, 1 - answer.alpha
    rows = []
    for effect in answer.effects:
        best, gap = effect.values[0], effect.gap
        rows.append(
            {
                "knob": effect.knob,
                "values": str(len(effect.values)),
                "best set (Hsu's MCB)": ", ".join(effect.best_set) or "-",
                f"best ({name}, marginal mean)": f"{best.value} ({_num(best.mean.gap)})",
                f"deciding gap ({level:.0%} CI)": f"{gap.best} - {gap.other}: "
                f"{gap.gap:+.4f} {_ci(*gap.interval(level))}",
                "SE": _num(gap.se),
                f"share of variance (ω², {level:.0%} CI)": _omega(effect.term, level),
                "verdict": effect.words,
            }
        )
    rows += [
        {
            "knob": knob,
            "values": "1",
            "best set (Hsu's MCB)": value,
            "verdict": "only this value tried",
        }
        for knob, value in answer.fixed.items()
    ]
    return pd.DataFrame(rows).fillna("").to_markdown(index=False, disable_numparse=True)


def knob_tables(answer: Answer) -> list[str]:
    """Per knob: each value's marginal mean with its interval, its MCB interval against the best
    of the others, and the runs behind it (raw mean ± spread, seeds, observations)."""
    lines, level = [], 1 - answer.alpha
    for effect in answer.effects:
        rows = []
        for value in effect.values:
            raw = answer.levels[effect.knob][value.value]
            rows.append(
                {
                    "value": value.value + (" (base)" if value.value == effect.base else ""),
                    f"marginal mean ({level:.0%} CI)": f"{_num(value.mean.gap)} "
                    + _ci(*value.mean.interval(level), sign=""),
                    "vs best of the others (MCB)": _ci(*value.mcb),
                    "may be best": "yes" if value.may_be_best else "no",
                    "runs: mean ± std": f"{_num(raw.mean)} ± {_num(raw.std)}",
                    "seeds": str(raw.n),
                    "observations": _ids(raw.obs),
                }
            )
        lines += [
            f"### {effect.knob}",
            "",
            pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True),
            "",
            _term_line(effect, answer.objective.name, level),
            "",
        ]
    return lines


def _term_line(effect: KnobEffect, objective: str, level: float) -> str:
    term = effect.term
    return (
        f"Share of the variance of {objective} (ω²): {_omega(term, level)}; F-test that no "
        f"value differs: p = {_p(term.p)}. Verdict: {effect.words}."
    )


def interaction_table(answer: Answer) -> str:
    """Each pair of knobs: the difference of differences that decides its verdict (how much
    moving both beats the sum of moving each), its interval, share of variance and verdict."""
    if not answer.pairs:
        return "Only one knob varied: no interaction to measure."
    level, rows = 1 - answer.alpha, []
    for pair in answer.pairs:
        gap = pair.gap
        rows.append(
            {
                "knobs": f"{pair.a} x {pair.b}",
                f"difference of differences ({level:.0%} CI)": "-"
                if gap is None
                else f"{gap.best} vs {gap.other}: {gap.gap:+.4f} {_ci(*gap.interval(level))}",
                "SE": "-" if gap is None else _num(gap.se),
                f"share of variance (ω², {level:.0%} CI)": _omega(pair.term, level),
                "verdict": pair.words,
            }
        )
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def diagnostics_table(answer: Answer) -> str:
    """One table: per scale value the diagnostics and the objective; the scale's effect on
    each; whether saturation predicts the objective."""
    found, name = answer.diagnostics, answer.objective.name
    if found is None:
        return "No run logged the attention diagnostics."
    columns = [*DIAGNOSTICS, "score"]
    rows = [
        {"scale": value, **{_col(m, name): _num(found.estimates[m][i]) for m in columns}}
        | {"seeds": str(found.n[i])}
        for i, value in enumerate(found.values)
    ]
    if found.values:
        rows.append(
            {"scale": "the scale's effect (share of variance; verdict)"}
            | {_col(m, name): _share(found.effect.get(m), 1 - answer.alpha) for m in columns}
            | {"seeds": ""}
        )
    rho, p, n = found.rho
    rows.append(
        {"scale": f"saturation predicts {name}? (Spearman, {n} units)"}
        | {_col("attention_saturation", name): f"rho = {_num(rho, 2)} (p {_p(p)})"}
    )
    return pd.DataFrame(rows).fillna("").to_markdown(index=False, disable_numparse=True)


def _col(metric: str, objective: str) -> str:
    return objective if metric == "score" else metric


def _share(effect: KnobEffect | None, confidence: float) -> str:
    """The scale's share of a metric's variance and its verdict against that metric's margin."""
    if effect is None:
        return "-"
    return f"ω² {_omega(effect.term, confidence)}; {effect.words}"


def runs_table(answer: Answer) -> str:
    """The observations every number on the page rests on, with their MLflow run ids."""
    shown = answer.obs.rename(columns={"score": answer.objective.name})
    columns = ["obs", "experiment", "kind", "trial_id", "seed", *answer.knobs]
    columns += [answer.objective.name, *DIAGNOSTICS, "run_id"]
    table = shown[columns].copy()
    for metric in (answer.objective.name, *DIAGNOSTICS):
        table[metric] = table[metric].map(lambda v: _num(v))
    table["obs"] = table["obs"].map(lambda i: f"#{i}")
    table = table.rename(columns=leaderboard.short_names(list(answer.knobs)))
    return table.to_markdown(index=False, disable_numparse=True)


def noise_line(answer: Answer) -> str:
    sigma, df = answer.noise
    if df == 0:
        return (
            "Seed-to-seed noise: **unknown** — no configuration was run with several seeds "
            "(set `search.replicates.enabled=true` and re-run a sweep)."
        )
    repeated = answer.obs.groupby([*answer.knobs])["seed"].nunique()
    block = (
        " The seed is a block of the model (every configuration ran with the same seeds): what "
        "a seed shifts in all its runs alike is taken out of every comparison."
        if answer.block
        else ""
    )
    return (
        f"Seed-to-seed noise (the model's residual): sigma = {sigma:.4f} {answer.objective.name} "
        f"with {df} degrees of freedom, from {int((repeated > 1).sum())} configurations run "
        f"with several seeds.{block}"
    )


def control_table(answer: Answer) -> str:
    """Each attention scale minus the uniform control (every weight 1/n), by the one rule."""
    found, margin = answer.control, answer.margin
    if found is None:
        return (
            "No `scale=uniform` control in these runs: attention was not tested against plain "
            "averaging."
        )
    rows = [
        {"scale": gap.best, "minus uniform: verdict": stats.words(gap, said, found.level, margin)}
        for gap, said in zip(found.gaps, found.verdicts, strict=True)
    ]
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    sd = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.4f}{sd} ({len(values)})"


def confirmation_tables(answer: Answer) -> list[str]:
    """Per confirmation stage: each pick as screened and on fresh seeds, and the best's gaps."""
    if not answer.confirmations:
        return ["No confirmation stage in these sweeps (`search.confirm.enabled=true`)."]
    name, lines = answer.objective.name, []
    for found in answer.confirmations:
        rows = [
            {
                "configuration": f"{row.roles} (trial {row.trial_id})",
                f"screened {name} (seeds)": f"{row.screened:.4f}"
                + (f" ± {row.screened_sd:.4f}" if math.isfinite(row.screened_sd) else "")
                + f" ({row.screened_n})",
                f"fresh seeds, {name}": _spread(list(row.fresh_val.values())),
                "fresh seeds, slice accuracy": _spread(list(row.slice.values())),
            }
            for row in found.rows
        ]
        gaps = [
            {
                "gap": f"{screened.best} - {screened.other}",
                "screened (95% CI)": f"{screened.gap:+.4f} {_ci(*screened.interval(0.95))}",
                "confirmed on the slice (95% CI)": f"{confirmed.gap:+.4f} "
                + _ci(*confirmed.interval(0.95)),
                "verdict (confirmed)": stats.words(confirmed, said, found.level, answer.margin),
            }
            for screened, confirmed, said in found.gaps
        ]
        best = found.rows[0]
        shift = (
            statistics.fmean(best.fresh_val.values()) - best.screened
            if best.fresh_val
            else math.nan
        )
        lines += [
            f"Confirmation stage of {found.sweep} (run `{found.run_id}`): the screened best, "
            "the runner-up and the base re-run with fresh seeds (each also a fresh validation "
            "split), scored on the confirmation slice no trial saw (mean ± std (seeds)).",
            "",
            pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True),
            "",
            pd.DataFrame(gaps).to_markdown(index=False, disable_numparse=True),
            "",
            f"The winner's curse, measured: the best's {name} on fresh seeds minus its screened "
            f"mean: {shift:+.4f}. (Slice and validation accuracy are different reviews: compare "
            "gaps across them, levels within a column.)",
            "",
        ]
    return lines


def curve_table(answer: Answer) -> str:
    """The expected best of n trials at a few n, with its simultaneous band."""
    curve = answer.curve
    if curve is None:
        return "Too few runs (or an unbounded objective) for the expected best of n trials."
    rows = [
        {
            "trials": str(n),
            f"expected best {answer.objective.name}": f"{curve.estimate[n - 1]:.4f}",
            f"{curve.confidence:.0%} band": _ci(curve.low[n - 1], curve.high[n - 1], sign=""),
        }
        for n in CURVE_AT
        if n <= len(curve.n)
    ]
    return (
        f"From {curve.observations} (configuration, seed) runs of the screen: a trial of a "
        "random search over this design is one of them drawn at random. Unbiased estimate "
        "(Tang et al.'s U-statistic of Dodge et al.'s expected maximum), band simultaneous over "
        "n (opda, from the empirical CDF's band on [0, 1]).\n\n"
        + pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)
    )


def best_section(
    best: Best, objective: str, rank_file: str, command: str, test: tuple[float, str] | None
) -> str:
    values = ", ".join(f"{k}={v}" for k, v in best.values.items())
    spread = f" ± {best.std:.4f}" if best.n > 1 else ""
    lines = [
        f"**{values}** (experiment {best.experiment}): {objective} {best.mean:.4f}{spread} over "
        f"{best.n} seed(s) ({_ids(best.obs)}; trial run `{best.trial_run}`).",
        "",
        f"Its config: `{rank_file}`; re-run it with `{command}`.",
        "",
    ]
    if test is None:
        lines.append(
            "Test accuracy: not measured yet (`python -m sweep.export "
            f"+experiment={best.experiment} export.evaluate=true` measures it once, on the test "
            "split)."
        )
    else:
        lines.append(f"Test accuracy, measured once: **{test[0]:.4f}** (run `{test[1]}`).")
    return "\n".join(lines)


def figures(answer: Answer, index: int) -> dict[str, Figure]:
    """The group's effects figure and its diagnostics figure, by file name."""
    panels = [
        (
            e.knob,
            [v.value for v in e.values],
            [answer.levels[e.knob][v.value].seeds for v in e.values],
            [v.mean.gap for v in e.values],
        )
        for e in answer.effects
    ]
    found: dict[str, Figure] = {}
    if panels:
        found[f"effects_{index}.png"] = plots.knob_panels(panels, answer.objective.name)
    if answer.curve is not None:
        found[f"tuning_{index}.png"] = plots.tuning_curve(
            answer.curve.n,
            answer.curve.estimate,
            answer.curve.low,
            answer.curve.high,
            answer.objective.name,
        )
    diag = answer.diagnostics
    if diag is not None:
        units = answer.obs.dropna(subset=["attention_saturation"])
        found[f"diagnostics_{index}.png"] = plots.diagnostics(
            diag.values,
            {m: diag.seeds[m] for m in DIAGNOSTICS if m in diag.seeds},
            units["attention_saturation"].tolist(),
            units["score"].tolist(),
            answer.objective.name,
        )
    return found
