"""What a finished soak left behind, read into plain values for the ledger: the sweep's MLflow
runs (the parent and every trial run) and the chief's own record of its trials (Keras Tuner's
`trial_*/trial.json` files in the chief's project directory)."""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from sweep.vocabulary import (
    ERROR_TAG,
    KILL_REASON_TAG,
    PARENT_TAG,
    WORKER_TAG,
)
from sweep.vocabulary import REPLICATE_OF_TAG as REPLICATE_TAG
from sweep.vocabulary import TRIAL_ID_TAG as TRIAL_TAG

#: A process's own line (Hydra's log format) saying its heartbeat (a worker) or its monitor (the
#: chief) woke late: the process was held up (`sweep.tuner.liveness.Ticker`).
LATE_LINE = re.compile(
    r"^\[(?P<when>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(?P<ms>\d{3})\]\[sweep\.tuner\.liveness\]"
    r"\[WARNING\] - sweep-(?:heartbeat|monitor) woke (?P<late>[\d.]+) s late"
)


@dataclass(frozen=True)
class TrialRun:
    """One MLflow run of a trial: who ran it, when (wall-clock seconds), how it ended."""

    run_id: str
    trial_id: str
    status: str
    start: float
    end: float | None
    worker: str = ""
    error: str = ""
    kill_reason: str = ""
    score: float | None = None  # its best_<objective> metric, logged as it finished


@dataclass(frozen=True)
class OracleTrial:
    """One trial as the chief's oracle recorded it (Keras Tuner's statuses and score)."""

    trial_id: str
    status: str
    score: float | None = None
    message: str = ""


@dataclass(frozen=True)
class Delay:
    """A process held up: its heartbeat (or the chief's monitor) woke `late_s` late at `woke`
    (wall-clock seconds)."""

    process: str
    woke: float
    late_s: float


@dataclass(frozen=True)
class SweepRecord:
    """A sweep's parents (run id -> status) and trial runs in MLflow, and its oracle's trials."""

    parents: dict[str, str]
    runs: list[TrialRun]
    oracle: dict[str, OracleTrial]


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def trial_run(run: Run, objective: str) -> TrialRun:
    """The ledger's view of one MLflow trial run."""
    tags, info = run.data.tags, run.info
    return TrialRun(
        run_id=info.run_id,
        trial_id=tags.get(TRIAL_TAG, ""),
        status=info.status,
        start=float(_seconds(info.start_time) or 0.0),
        end=_seconds(info.end_time) if info.status != "RUNNING" else None,
        worker=tags.get(WORKER_TAG, ""),
        error=tags.get(ERROR_TAG, ""),
        kill_reason=tags.get(KILL_REASON_TAG, ""),
        score=run.data.metrics.get(f"best_{objective}"),
    )


def mlflow_runs(client: MlflowClient, experiment: str, objective: str) -> SweepRecord:
    """Every run of `experiment` (paged: a soak has hundreds): parents and trial runs; seed
    repeats left out. The oracle's record is empty here (`with_oracle` adds it)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return SweepRecord({}, [], {})
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([found.experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    parents = {r.info.run_id: r.info.status for r in runs if PARENT_TAG not in r.data.tags}
    trials = [
        trial_run(r, objective)
        for r in runs
        if PARENT_TAG in r.data.tags and REPLICATE_TAG not in r.data.tags
    ]
    return SweepRecord(parents, sorted(trials, key=lambda t: (t.start, t.run_id)), {})


def oracle_trials(project: Path) -> dict[str, OracleTrial]:
    """The chief's trials from its Keras Tuner project directory (`trial_*/trial.json`)."""
    trials = {}
    for path in sorted(project.glob("trial_*/trial.json")):
        state = json.loads(path.read_text())
        score = state.get("score")
        trials[str(state["trial_id"])] = OracleTrial(
            trial_id=str(state["trial_id"]),
            status=str(state["status"]),
            score=float(score) if score is not None and math.isfinite(score) else None,
            message=str(state.get("message") or ""),
        )
    return trials


def with_oracle(record: SweepRecord, project: Path) -> SweepRecord:
    """`record` with the chief's own record of its trials read from `project`."""
    return SweepRecord(record.parents, record.runs, oracle_trials(project))


def delays(logs: Path) -> list[Delay]:
    """Every late wake-up the sweep's processes logged, from the soak's log files (one per
    process start, named NNN-PROCESS.log)."""
    found = []
    for path in sorted(logs.glob("*.log")):
        process = path.stem.partition("-")[2]
        for line in path.read_text(errors="replace").splitlines():
            match = LATE_LINE.match(line)
            if match:
                woke = time.mktime(time.strptime(match["when"], "%Y-%m-%d %H:%M:%S"))
                woke += int(match["ms"]) / 1000
                found.append(Delay(process, woke, float(match["late"])))
    return found
