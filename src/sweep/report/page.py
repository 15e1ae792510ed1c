"""The answer page in markdown, and its figures: per group of sibling sweeps a headline table
(each knob's effect, noise and verdict), each knob's values, interactions, the attention
diagnostics, and the observations (MLflow runs) every number rests on."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from sweep import leaderboard, plots, stats
from sweep.report.analysis import Effect
from sweep.report.answer import DIAGNOSTICS, Answer, Best

VERDICT_WORDS = {
    stats.DIFFERENT: "**matters**: {best} beats {other} by more than seed noise",
    stats.SAME: "**no difference**: {best} and {other} are within ±{margin} of each other",
    stats.UNDECIDED: "**undecided**: the gap is within seed noise, but not shown below ±{margin}",
    stats.UNKNOWN: "**noise unknown**: no configuration has several seeds (turn on "
    "search.replicates)",
}


def _num(value: float, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.3g}"


def _ids(obs: Sequence[int]) -> str:
    return ", ".join(f"#{i}" for i in obs)


def headline(answer: Answer) -> str:
    """Each knob: values tried, best and runner-up, the gap with its noise, importance, verdict."""
    name = answer.objective.name
    rows = []
    for effect, verdict, p in zip(answer.effects, answer.verdicts, answer.holm, strict=True):
        best, other = effect.levels[0], effect.levels[1]
        gap = effect.gap
        rows.append(
            {
                "knob": effect.knob,
                "values": str(len(effect.levels)),
                f"best ({name})": f"{best.value} ({_num(best.estimate)}, n={best.n})",
                "runner-up": f"{other.value} ({_num(other.estimate)}, n={other.n})",
                "gap ± SE": f"{_num(gap.gap)} ± {_num(gap.se)}" if gap else "-",
                "p (Holm)": _p(p),
                "share of variance": f"{effect.importance:.0%}",
                "verdict": VERDICT_WORDS[verdict].format(
                    best=best.value, other=other.value, margin=answer.margin
                )
                + _overall(effect, answer.alpha),
            }
        )
    rows += [
        {"knob": knob, "values": "1", f"best ({name})": value, "verdict": "only this value tried"}
        for knob, value in answer.fixed.items()
    ]
    return pd.DataFrame(rows).fillna("").to_markdown(index=False, disable_numparse=True)


def _overall(effect: Effect, alpha: float) -> str:
    """Where the F-test finds the values differ beyond the best two: the worst, by how much."""
    if not (math.isfinite(effect.p) and effect.p < alpha) or len(effect.levels) < 3:
        return ""
    worst = effect.levels[-1]
    return (
        f"; yet the values differ overall (F-test p {_p(effect.p)}): {worst.value} is worst "
        f"({_num(worst.estimate)}, {_num(worst.estimate - effect.levels[0].estimate)})"
    )


def knob_tables(answer: Answer) -> list[str]:
    """Per knob: each value's estimate, raw mean ± spread over its seeds, and which runs."""
    lines = []
    for effect in answer.effects:
        rows = [
            {
                "value": lv.value + (" (base)" if lv.value == effect.base else ""),
                "estimate": _num(lv.estimate),
                "mean ± std": f"{_num(lv.mean)} ± {_num(lv.std)}",
                "seeds": str(lv.n),
                "observations": _ids(lv.obs),
            }
            for lv in effect.levels
        ]
        p = "-" if not math.isfinite(effect.p) else f"{effect.p:.3g}"
        lines += [
            f"### {effect.knob}",
            "",
            pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True),
            "",
            f"Share of the variance of {answer.objective.name}: {effect.importance:.1%} "
            f"(F-test that no value differs: p = {p}).",
            "",
        ]
    return lines


def interaction_table(answer: Answer) -> str:
    if not answer.interactions:
        return "Only one knob varied: no interaction to measure."
    rows = []
    for pair, p in zip(answer.interactions, answer.interaction_holm, strict=True):
        if not pair.measured:
            said = "not measured: no trials cross them (two values of each, tried together)"
        elif not math.isfinite(p):
            said = "crossed, but the noise is unknown"
        else:
            said = "**interact**" if p < answer.alpha else "no evidence they interact"
        rows.append(
            {
                "knobs": f"{pair.a} x {pair.b}",
                "share of variance": _num(pair.importance, 3) if pair.measured else "-",
                "p (Holm)": _p(p),
                "verdict": said,
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
            {"scale": "scale's share of variance (p, Holm)"}
            | {_col(m, name): _share(*found.effect[m], answer.alpha) for m in columns}
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


def _share(share: float, p: float, alpha: float) -> str:
    said = "noise unknown" if not math.isfinite(p) else "changes it" if p < alpha else "no evidence"
    return f"{share:.0%} (p {_p(p)}: {said})"


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
    return (
        f"Seed-to-seed noise (the model's residual): sigma = {sigma:.4f} {answer.objective.name} "
        f"with {df} degrees of freedom, from {int((repeated > 1).sum())} configurations run "
        "with several seeds."
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
            [lv.value for lv in e.levels],
            [lv.seeds for lv in e.levels],
            [lv.estimate for lv in e.levels],
        )
        for e in answer.effects
    ]
    found: dict[str, Figure] = {}
    if panels:
        found[f"effects_{index}.png"] = plots.knob_panels(panels, answer.objective.name)
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
