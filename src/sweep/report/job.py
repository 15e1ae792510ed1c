"""`python -m sweep.report`: one answer to "which attention settings matter?" across sweeps.

Reads the MLflow store only (no Keras): pools the finished trials and seed repeats of sibling
experiments that share their base configuration, answers per knob, and writes
`reports/answers.md` with its figures, also logged to MLflow (experiment `report.experiment`).
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import mlflow
from omegaconf import DictConfig, OmegaConf

from sweep import export, tracking
from sweep.errors import ReportError
from sweep.report import page, pool
from sweep.report.answer import Answer, Best, answer
from sweep.vocabulary import NOTE_TAG

log = logging.getLogger(__name__)

PAGE = "answers.md"
#: What the page says about its statistics, once, above the answers.
METHOD = """\
**How to read it.** Each observation is one finished run (a trial, or a seed repeat of one:
`search.replicates`); runs of one configuration with one seed count once. A linear model
(statsmodels OLS; every knob a factor, a continuous one cut into quantile bins; an interaction
for each pair of knobs the runs cross; the seed a block where every configuration ran with the
same seeds) is fitted to them. A value's *estimate* is its marginal mean: the model's
{objective} averaged over every value of the knobs the runs cross it with, the others at their
base (on a crossed design, the functional-ANOVA estimand); the *noise* is the model's residual.
A knob is judged on every pair of its values, all knobs' pairs one family of m comparisons
(Bonferroni, alpha = {alpha}): it **matters** when a gap's 1 - alpha/m interval lies beyond
±{margin}; it is **real but negligible** when that interval excludes 0 and lies inside
±{margin}; there is **no difference** when it holds 0 and the 1 - 2 alpha/m interval lies
inside ±{margin} (equivalence by two one-sided tests); else it is **undecided**. The verdict
quotes the pair that decides it and the interval its claim rests on. The *best set* holds every
value that may be the best by Hsu's multiple comparisons with the best (simultaneous at 1 -
alpha, valid although the best was picked from these runs). The *share of variance* is omega
squared, with an interval from the noncentral F (0% where the estimate falls below zero).
Export's effects and the sweep's description use the same model and words. Every number cites
observations (#N), listed with their MLflow run ids at the end of each section. Pruned trials
are left out (stopped early, their scores are not comparable)."""


def report(cfg: DictConfig) -> Path:
    """Write the answer page for the sweeps `report.experiments` names (default: every sweep in
    the store) and log it to MLflow; returns the page's path."""
    uri, names = str(cfg.tracking.uri), list(cfg.report.experiments or [])
    if not tracking.store_exists(uri):
        raise ReportError(f"no sweep in the MLflow store at {uri}: there is no store there yet")
    tracking.configure(cfg.tracking)
    grouped = pool.groups(pool.sweeps(names, uri))
    if names:
        pool.refuse_mixed(grouped)
    answers = [answer(group, cfg.report) for group in grouped]
    directory = Path(cfg.report.dir)
    directory.mkdir(parents=True, exist_ok=True)
    best = max(answers, key=lambda a: a.objective.sign * a.best.mean)
    rank_file, command = _rank_file(cfg, best.best, directory)
    test = pool.final_test_accuracy(best.best.experiment, list(best.obs["run_id"]))
    experiment = tracking.use_experiment(str(cfg.report.experiment), cfg.tracking)
    with tracking.tracked_run(experiment_id=experiment, run_name="answers") as run:
        text = _page(cfg, answers, best, (rank_file, command, test), run.info.run_id)
        for index, found in enumerate(answers, 1):
            for name, figure in page.figures(found, index).items():
                figure.savefig(directory / name)
        (directory / PAGE).write_text(text)
        mlflow.log_params(
            {f"pool.{s.name}": s.parent.info.run_id for a in answers for s in a.sweeps}
        )
        mlflow.set_tag(NOTE_TAG, text[: tracking.MAX_NOTE])
        mlflow.log_artifacts(str(directory))
    if cfg.report.readme:
        summarise_into(Path(cfg.report.readme), answers, directory / PAGE, text)
    for found in answers:
        for effect in found.effects:
            log.info("%s: %s (%s)", effect.knob, effect.verdict, found.names)
    log.info("answer page: %s (MLflow run %s)", directory / PAGE, run.info.run_id)
    shown = OmegaConf.merge(cfg, {"name": str(cfg.report.experiment)})
    tracking.show_runs_page(shown)  # the last line: where to see it
    return directory / PAGE


#: The lines around the block of a markdown file `report.readme` rewrites.
START, END = "<!-- answer:start -->", "<!-- answer:end -->"


def summarise_into(path: Path, answers: Sequence[Answer], page_path: Path, text: str) -> None:
    """Replace `path`'s answer block with each group's headline, the page's own first lines
    (date, command, commit) and a link to the page: the file says what the page says."""
    found = path.read_text() if path.exists() else ""
    if START not in found or END not in found:
        raise ReportError(
            f"report.readme={path}: no '{START}' ... '{END}' block in it to write the answer into"
        )
    link = os.path.relpath(page_path, path.parent)
    written = text.split("\n\n", 2)[1]  # "Written <date> by <command> at commit ..."
    block = [START, "", f"{written} The whole page: [{link}]({link}).", ""]
    for each in answers:
        block += [f"**{each.names}**", "", page.headline(each), ""]
        if each.control is not None:
            block += ["Attention against plain averaging (`scale=uniform`):", ""]
            block += [page.control_table(each), ""]
    before, rest = found.split(START, 1)
    path.write_text(before + "\n".join(block) + rest[rest.index(END) :])


def _rank_file(cfg: DictConfig, best: Best, directory: Path) -> tuple[str, str]:
    """The exported rank file of the best configuration's trial, if export wrote one; else
    `best.yaml` beside the page, written the way export writes its rank files."""
    exported = Path(cfg.sweep.dir) / best.experiment / export.EXPORT_DIR
    for path in sorted(exported.glob("rank*.yaml")):
        if f"(MLflow run {best.trial_run})" in path.read_text():
            return str(path), export.rerun_command(path.parent, path.stem)
    path = directory / "best.yaml"
    command = export.rerun_command(directory, path.stem)
    export.write_config(
        best.trial_run, "The best configuration", "from the answer page", command, path
    )
    return str(path), command


def _page(
    cfg: DictConfig,
    answers: Sequence[Answer],
    best: Answer,
    found: tuple[str, str, tuple[float, str] | None],
    run_id: str,
) -> str:
    first = answers[0]
    today = datetime.date.today().isoformat()
    args = " ".join(sys.argv[1:])
    lines = [
        "# Which attention settings matter?",
        "",
        f"Written {today} by `python -m sweep.report{' ' + args if args else ''}` at commit "
        f"`{tracking.git_commit() or 'unknown'}` from the MLflow store `{cfg.tracking.uri}`; "
        f"logged as run `{run_id}` of experiment `{cfg.report.experiment}`.",
        "",
        METHOD.format(objective=first.objective.name, alpha=first.alpha, margin=first.margin),
        "",
    ]
    for index, each in enumerate(answers, 1):
        lines += _section(each, index, heading=len(answers) > 1)
    lines += [
        "## The best configuration found",
        "",
        page.best_section(best.best, best.objective.name, *found),
        "",
    ]
    return "\n".join(lines)


def _section(found: Answer, index: int, heading: bool) -> list[str]:
    sweeps = ", ".join(
        f"{s.name} (sweep run `{s.parent.info.run_id}`: "
        f"{int((found.obs['experiment'] == s.name).sum())} runs)"
        for s in found.sweeps
    )
    lines = [f"## {found.names}", ""] if heading else []
    lines += [
        f"Pooled: {sweeps}; {len(found.obs)} finished runs. They share every other setting "
        "(and the data's fingerprint).",
        "",
        page.noise_line(found),
        "",
        page.headline(found),
        "",
        f"![effects](effects_{index}.png)" if found.effects else "",
        "",
        "### Each knob",
        "",
        *page.knob_tables(found),
        "### Which knobs interact",
        "",
        page.interaction_table(found),
        "",
        "### Does attention beat plain averaging? (the `scale=uniform` control)",
        "",
        page.control_table(found),
        "",
        "### Screened vs confirmed: the best on runs that did not select it",
        "",
        *page.confirmation_tables(found),
        "### How many trials does this space need?",
        "",
        page.curve_table(found),
        "",
        f"![tuning curve](tuning_{index}.png)" if found.curve else "",
        "",
        "### Attention diagnostics: does the scale change them, does saturation predict "
        f"{found.objective.name}?",
        "",
        page.diagnostics_table(found),
        "",
        f"![diagnostics](diagnostics_{index}.png)" if found.diagnostics else "",
        "",
        "### The runs this rests on",
        "",
        page.runs_table(found),
        "",
    ]
    return lines
