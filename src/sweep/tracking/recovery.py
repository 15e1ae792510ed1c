"""Closing runs a crash left RUNNING, so a restart never shows a dead run as live.

A run is closed only when its writer is known gone: another sweep writing to the same
experiment, or a live distributed worker, is left alone. Without a chief to hear heartbeats,
"gone" is the run's host and pid, not a last heartbeat in the store: measured, that costs a write
per run every few seconds and a whole timeout's wait before a restart may close a run
(docs/distributed.md, "Runs a crash left RUNNING, without a chief").
"""

from __future__ import annotations

import logging
import os
import socket

from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient

from sweep.tracking.paging import all_runs
from sweep.vocabulary import (
    HOST_TAG,
    KILL_REASON_TAG,
    PARENT_TAG,
    PID_TAG,
    TRIAL_ID_TAG,
    WORKER_TAG,
)

log = logging.getLogger(__name__)


def close_stale_runs(experiment: str) -> list[str]:
    """Mark runs a crash left RUNNING as KILLED, so no run stays RUNNING after a restart.

    Only runs whose process is known dead are closed (same host, pid gone, or no pid recorded):
    another sweep or run writing to the same experiment at this moment is left alone.
    """
    host = socket.gethostname()

    def dead(run: Run) -> bool:
        tags = run.data.tags
        if PID_TAG not in tags:
            return True
        return tags.get(HOST_TAG) == host and not _alive(int(tags[PID_TAG]))

    stale = [r for r in _running(experiment) if dead(r)]
    return _kill(stale, "left RUNNING by a process that is gone")


def close_stale_runs_outside(experiment: str, parent_run_id: str | None) -> list[str]:
    """`close_stale_runs` for a distributed chief: the sweep's own parent and trials are left
    alone, since live workers may still be running them while a restarted chief resumes."""
    stale = [
        r
        for r in _running(experiment)
        if parent_run_id is None
        or (r.info.run_id != parent_run_id and r.data.tags.get(PARENT_TAG) != parent_run_id)
    ]
    return _kill(stale, "left RUNNING by an earlier crash, outside this sweep")


def close_open_trials(parent_run_id: str, worker_id: str | None = None) -> list[str]:
    """Mark the sweep's RUNNING trial runs KILLED: those of `worker_id` (a restarted worker
    closing what its dead predecessor left), or all of them (the chief, once no trial is on)."""
    experiment = MlflowClient().get_run(parent_run_id).info.experiment_id
    where = f"tags.{PARENT_TAG} = '{parent_run_id}'"
    if worker_id is not None:
        where += f" and tags.{WORKER_TAG} = '{worker_id}'"
    why = f"trials of worker {worker_id} that died" if worker_id else "trials no worker finished"
    return _kill(_running(experiment, where), why)


def kill_trial_runs(
    parent_run_id: str, trial_id: str, worker_id: str, reason: str, before: float | None = None
) -> list[str]:
    """Mark KILLED, with `reason`, the RUNNING runs of one trial by one worker: the chief's
    verdict on a worker that fell silent (a run already FINISHED is left alone). With `before`
    (wall-clock seconds), only runs started before then: the trial, queued again meanwhile, may
    have come back to the same worker, whose new run is alive."""
    experiment = MlflowClient().get_run(parent_run_id).info.experiment_id
    where = (
        f"tags.{PARENT_TAG} = '{parent_run_id}' and tags.{TRIAL_ID_TAG} = '{trial_id}' "
        f"and tags.{WORKER_TAG} = '{worker_id}'"
    )
    if before is not None:
        where += f" and attributes.start_time < {int(before * 1000)}"
    return _kill(_running(experiment, where), reason)


def _alive(pid: int) -> bool:
    """Whether a process of this host still runs (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running(experiment: str, extra: str = "") -> list[Run]:
    """The experiment's RUNNING runs, narrowed by an `extra` search filter."""
    where = "attributes.status = 'RUNNING'" + (f" and {extra}" if extra else "")
    return all_runs([experiment], where)


def _kill(runs: list[Run], why: str) -> list[str]:
    """Mark `runs` KILLED, each with `why` as its kill reason, said once in the log; their ids."""
    client = MlflowClient()
    for run in runs:
        client.set_tag(run.info.run_id, KILL_REASON_TAG, why)
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
    if runs:
        log.warning("marked %d run(s) KILLED: %s", len(runs), why)
    return [r.info.run_id for r in runs]
