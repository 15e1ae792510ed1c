"""`python -m sweep.export +experiment=NAME`: a sweep's answer, read from MLflow, as files.

Everything comes from the MLflow store (so a store on another machine works): the
leaderboard, the top-k configurations as runnable Hydra configs, the effect of each
hyperparameter with a verdict against seed noise, and an accuracy-versus-cost chart. The files
land in `sweeps/NAME/export/` and on the sweep's parent run.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from mlflow.entities import Run
from omegaconf import DictConfig

from sweep import cli, leaderboard, plots, tracking
from sweep.config import compose_config
from sweep.errors import ExportError

log = logging.getLogger(__name__)

#: Sub-directory of `sweeps/NAME/` that export rewrites.
EXPORT_DIR = "export"
#: Hydra settings every exported config carries, as conf/config.yaml does.
HYDRA_SETTINGS = {
    "job": {"chdir": False},
    "run": {"dir": "sweeps/.hydra/${name}/${now:%Y-%m-%d_%H-%M-%S}"},
}


@dataclass(frozen=True)
class Exported:
    directory: Path
    table: pd.DataFrame
    configs: list[Path]
    commands: list[str]
    verdicts: list[str]


def export(cfg: DictConfig) -> Exported:
    """Write the sweep's answer under `sweeps/NAME/export/` and log it to the parent run."""
    parent = _sweep_parent(cfg)
    params = parent.data.params
    hyperparameters = params["search.space"].split(", ")
    objective, direction = params["search.objective"], params["search.direction"]
    best = f"best_{objective}"
    table = leaderboard.frame(
        tracking.trial_runs(parent.info.run_id), hyperparameters, objective, direction
    )
    finished = table[table["status"] == "FINISHED"].dropna(subset=[best]) if len(table) else table
    if finished.empty:
        raise ExportError(
            f"sweep {cfg.name} (run {parent.info.run_id}) has no finished trial "
            "yet: nothing to export"
        )
    directory = Path(cfg.sweep.dir) / cfg.name / EXPORT_DIR
    with _staged(directory) as staging:
        configs, commands = _write_configs(finished.head(cfg.export.top_k), staging, directory)
        verdicts = _write_effects(
            finished, hyperparameters, (best, direction, objective), cfg.report, staging
        )
        table.to_csv(staging / "leaderboard.csv", index=False)
        fronts = {
            cost: leaderboard.pareto_front(finished[cost], finished[best], direction)
            for cost in ("seconds_per_epoch", "param_count")
        }
        plots.cost_pareto(finished, best, fronts).savefig(staging / "accuracy_vs_cost.png")
    tracking.log_export(parent.info.run_id, directory)
    for rank, command in enumerate(commands, 1):
        log.info("#%d  %s = %.4f   re-run: %s", rank, best, finished[best].iloc[rank - 1], command)
    for line in verdicts:
        log.info("%s", line)
    log.info("exported %d trials to %s", len(table), directory)
    written = [directory / p.name for p in configs]
    if cfg.export.evaluate:
        _final(cfg, written, finished, objective, direction)
    # the last line: where to see it (the final run, or the trials, best first)
    tracking.show_runs_page(cfg, view=None if cfg.export.evaluate else tracking.LEADERBOARD_VIEW)
    return Exported(directory, table, written, commands, verdicts)


def _sweep_parent(cfg: DictConfig) -> Run:
    """The sweep's parent run in the configured store; ExportError when there is none."""
    if not tracking.store_exists(str(cfg.tracking.uri)):
        raise ExportError(
            f"no sweep named {cfg.name}: there is no MLflow store at "
            f"{cfg.tracking.uri} (check tracking.uri)"
        )
    tracking.configure(cfg.tracking)
    parent = tracking.sweep_parent(cfg.name, cfg.export.parent_run_id)
    if parent is None:
        raise ExportError(
            f"no sweep named {cfg.name} in {cfg.tracking.uri}: run "
            f"`python -m sweep +experiment={cfg.name}` first (or check tracking.uri)"
        )
    return parent


@contextlib.contextmanager
def _staged(directory: Path) -> Iterator[Path]:
    """A staging directory beside `directory` that replaces it only when complete, so a failed
    export never leaves half a previous one."""
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=_mkdir(directory.parent)))
    try:
        yield staging
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_configs(
    top: pd.DataFrame, staging: Path, final_dir: Path
) -> tuple[list[Path], list[str]]:
    """Each top trial's logged config as a complete Hydra config, and the command re-running it."""
    paths, commands = [], []
    for rank, (_, row) in enumerate(top.iterrows(), 1):
        name = f"rank{rank}"
        command = rerun_command(final_dir, name)
        path = staging / f"{name}.yaml"
        write_config(row["run_id"], f"Trial {row['trial_id']}", f"rank {rank}", command, path)
        paths.append(path)
        commands.append(command)
    return paths, commands


def rerun_command(directory: Path, name: str) -> str:
    """The one command that re-runs the config `directory/name.yaml`."""
    return (
        f"python -m sweep --config-dir {shlex.quote(str(directory.resolve()))} --config-name {name}"
    )


def write_config(run_id: str, what: str, rank: str, command: str, path: Path) -> None:
    """A run's logged config as a complete Hydra config (no search), headed by where it came
    from and the command that re-runs it."""
    config: dict[str, Any] = tracking.run_config(run_id)
    config["search"] = None
    header = f"# {what} (MLflow run {run_id}), {rank}.\n# Re-run it: {command}\n"
    body = {"defaults": ["base_config", "_self_"], **config, "hydra": HYDRA_SETTINGS}
    path.write_text(header + yaml.safe_dump(body, sort_keys=False))


def _write_effects(
    finished: pd.DataFrame,
    hyperparameters: list[str],
    goal: tuple[str, str, str],
    settings: DictConfig,
    staging: Path,
) -> list[str]:
    """effects.csv and effects.md: each value's mean, and each knob's verdict by the answer
    page's rule and words (`report.alpha`, `report.margin`)."""
    best, direction, objective = goal
    per_run = {run: tracking.execution_scores(run, objective) for run in finished["run_id"]}
    effects, verdicts = leaderboard.judged(
        finished,
        hyperparameters,
        best,
        direction,
        per_run,
        alpha=float(settings.alpha),
        margin=float(settings.margin),
    )
    effects.to_csv(staging / "effects.csv", index=False)
    (staging / "effects.md").write_text(
        "# Which hyperparameters matter\n\n"
        + effects.to_markdown(index=False)
        + "\n\n"
        + "\n".join(f"- {line}" for line in verdicts)
        + "\n"
    )
    return verdicts


def _final(
    cfg: DictConfig, paths: list[Path], finished: pd.DataFrame, objective: str, direction: str
) -> None:
    """Retrain the best configuration (or the top `export.ensemble`) on every training review
    and test it once, as many epochs as its trial needed to peak."""
    size = cfg.export.ensemble
    if len(finished) < size:
        raise ExportError(
            f"export.ensemble={size} needs {size} finished trials; sweep {cfg.name} has "
            f"{len(finished)}"
        )
    members = []
    for path, run_id in zip(paths[:size], finished["run_id"][:size], strict=True):
        member = compose_config(config_name=path.stem, config_dir=path.parent)
        epochs = tracking.best_epochs(run_id, objective, direction)
        if epochs:
            member.train.epochs = epochs
        members.append((member, run_id))
    registered = cfg.export.registered_model or f"attention-sweep-{cfg.name}"
    from sweep.ensemble import final_model  # lazy: Keras loads only when a model trains

    final_model(members, registered)


def main() -> None:
    # the models export retrains are composed from the exported configs, Keras judging them
    cli.main(export, trains=False)


if __name__ == "__main__":
    main()
