"""The sweep's identity on disk (`sweeps/<name>/sweep.json`): its parent run and the settings it
was started with, so re-running the same command resumes it and a changed one is refused."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweep import tracking
from sweep.errors import SweepError
from sweep.vocabulary import part_of_trial

log = logging.getLogger(__name__)

#: The sweep's identity on disk: its parent run and the settings it was started with.
STATE_FILE = "sweep.json"


def sweep_dir(cfg: DictConfig) -> Path:
    """Where the sweep keeps its state and Keras Tuner's: `sweep.dir/<name>`."""
    return Path(cfg.sweep.dir) / str(cfg.name)


def plain(node: DictConfig) -> dict[str, Any]:
    """A config (or a mapping in one) as plain data, interpolations resolved: the values, read
    here rather than handed down with the config."""
    values = OmegaConf.to_container(node, resolve=True)
    if not isinstance(values, dict):
        raise TypeError(f"not a mapping: {values!r}")
    return {str(key): value for key, value in values.items()}


def compared(flat: dict[str, Any]) -> dict[str, Any]:
    """The settings of a flattened config a resume must not change: those part of a trial (a
    state file saved before a key became free to change still holds it: left out here too)."""
    if flat.get("search.pruning", "none") == "none":  # as sweeps started before pruning saved
        flat = {k: v for k, v in flat.items() if not k.startswith("search.pruning")}
    return {k: v for k, v in flat.items() if part_of_trial(k)}


@dataclass(frozen=True)
class SweepState:
    """A sweep's identity on disk: its directory, the settings a resume must keep, and the
    parent run to continue (None: a fresh sweep, until `save` records its new one)."""

    directory: Path
    settings: dict[str, Any]
    parent_run_id: str | None = None

    def save(self, parent_run_id: str) -> None:
        """Write the state file whole or not at all (a crash mid-write leaves the old one)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{STATE_FILE}.tmp"
        state = {"parent_run_id": parent_run_id, "config": self.settings}
        tmp.write_text(json.dumps(state, indent=1, default=str))
        os.replace(tmp, self.directory / STATE_FILE)


def resume_or_start(cfg: DictConfig, experiment: str) -> SweepState:
    """The sweep's state: the parent run to continue, or none for a fresh sweep; refuses a
    changed sweep, and with `sweep.overwrite` starts afresh."""
    directory = sweep_dir(cfg)
    now = compared(tracking.flatten(plain(cfg)))
    state_file = directory / STATE_FILE
    if cfg.sweep.overwrite and directory.exists():
        log.warning(
            "sweep.overwrite=true: starting %s afresh (MLflow keeps the old runs)", directory
        )
        shutil.rmtree(directory)
    if not state_file.exists():
        return SweepState(directory, now)
    state = json.loads(state_file.read_text())
    before = compared(state["config"])
    changed = [
        f"{k}: {before.get(k)} -> {now.get(k)}"
        for k in sorted(set(before) | set(now))
        if before.get(k) != now.get(k)
    ]
    if changed:
        raise SweepError(
            f"{directory} was started with other settings ({'; '.join(changed)}); re-run with "
            "the original values to resume it, or add sweep.overwrite=true to start afresh"
        )
    return SweepState(directory, now, tracking.existing_run(state["parent_run_id"], experiment))


def recorded_best(cfg: DictConfig) -> float:
    """The best objective value the sweep's parent run holds (NaN before any finished trial):
    what a sweep other processes ran reports."""
    state = json.loads((sweep_dir(cfg) / STATE_FILE).read_text())
    tracking.configure(cfg.tracking)
    best = tracking.run_metric(state["parent_run_id"], f"best_{cfg.search.objective}")
    return float(best) if best is not None else float("nan")
