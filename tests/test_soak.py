"""A short chaos soak (issue 26): a chief and two workers on tiny data, logged to the MLflow
server with its login on PostgreSQL (SQLite where PostgreSQL is not installed), while five faults
of four kinds land in a fixed order. The ledger must be clean, and each fault must have done
what docs/distributed.md says (the three process tests test_cluster_faults.py had, one sweep
each, are its cases now):

- a worker SIGSTOPped past the heartbeat timeout loses its trial: its run ends KILLED with the
  chief's reason and no result, it says so when woken, and another run finishes the trial;
- the chief SIGKILLed and started again gives each running trial back to its worker: every run
  going on at the kill ends FINISHED;
- a worker SIGKILLed and replaced by a new one: its trial goes to a live worker after the
  heartbeat timeout; SIGKILLed and started again under its id: it closes its predecessor's run;
- PostgreSQL restarted: no trial fails or is lost for it.

The fifth kind, the MLflow server restarted, is the full soak's (`python -m benchmarks.soak`)
and, for one process, test_reliability's server going away mid-sweep: a server's start is
~20 s of CPU, the most of any fault here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.soak.faults import (
    CHIEF_KILL,
    POSTGRES_RESTART,
    WORKER_KILL,
    WORKER_STOP,
    Fault,
)
from benchmarks.soak.ledger import held_at, render
from benchmarks.soak.record import TrialRun
from benchmarks.soak.runner import Result, Settings, soak
from benchmarks.soak.services import Unavailable, postgres_tools

#: The faults, in this order: each kind but the MLflow server's once, a worker killed twice (a
#: new one started, then the same one again), the stop first.
FAULTS = (WORKER_STOP, CHIEF_KILL, WORKER_KILL, POSTGRES_RESTART, WORKER_KILL)
#: Heartbeat timeout: seconds, and long enough that a loaded 2-core machine does not starve a
#: live worker past it (the soak's ledger names any trial taken from a live worker).
HEARTBEAT_S = 10.0
#: Trials: with two workers, enough that the sweep outlasts the five faults' ~55 s (a stop
#: alone holds its worker for 15-25 s), on a quiet machine too.
TRIALS = 26
#: tiny_imdb's sizes (tests/conftest.py) and trials long enough to be seen mid-way.
TINY = ("data.num_words=64", "data.seq_len=16", "model.embedding_dim=8", "train.epochs=2")
#: MLflow's client retries a server that is away about as long as by default (~4 min), from a
#: shorter first wait (its back-off doubles from 1 s, not 2 s): a restarted server otherwise
#: waits a minute for clients asleep in their back-off, which is the test's time, not its point.
CLIENT_RETRIES = (
    ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
    ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "8"),
)


def _postgres() -> bool:
    try:
        postgres_tools()
        import psycopg  # noqa: F401 - the driver MLflow's server needs
    except (Unavailable, ImportError):
        return False
    return True


def _short_soak(work: Path, data: Path) -> Result:
    postgres = _postgres()
    kinds = FAULTS if postgres else tuple(k for k in FAULTS if k != POSTGRES_RESTART)
    settings = Settings(
        trials=TRIALS,
        workers=2,
        faults=len(kinds),
        seed=26,
        heartbeat_s=HEARTBEAT_S,
        min_gap_s=2.0,
        max_gap_s=4.0,
        max_minutes=15.0,
        data=data,
        limit=None,
        kinds=kinds,
        fixed_order=True,
        postgres=postgres,
        server_workers=1,
        work=work,
        overrides=TINY,
        env=CLIENT_RETRIES,
    )
    return soak(settings)


def _faults(result: Result, kind: str) -> list[Fault]:
    return [r.fault for r in result.ledger.recoveries if r.fault.kind == kind]


def _hit(result: Result, fault: Fault) -> list[TrialRun]:
    """The runs `fault` interrupted (the ledger's `held_at`)."""
    faults = [r.fault for r in result.ledger.recoveries]
    return held_at(fault, result.record.runs, faults)


def _finished_by(result: Result, trial_id: str) -> TrialRun:
    (finished,) = [
        r for r in result.record.runs if r.trial_id == trial_id and r.status == "FINISHED"
    ]
    return finished


@pytest.mark.slow
def test_a_short_soak_loses_nothing_and_each_fault_does_what_it_should(
    tmp_path: Path, tiny_imdb: Path
) -> None:
    result = _short_soak(tmp_path, tiny_imdb)
    ledger = result.ledger
    shown = "\n".join(render(ledger))
    assert ledger.clean and ledger.complete, shown
    assert ledger.finished_once == TRIALS and not ledger.failed, shown
    assert sum(ledger.faults.values()) == result.settings.faults, shown
    assert ledger.exits == [], "a chief or worker died of a fault it should survive"
    # a trial may be taken from a live worker only while it (or the chief) was held up: a
    # loaded machine's starvation, which the process logged (the ledger's taken_while_starved)
    assert ledger.taken_from_live == [], shown
    assert all(r.seconds is not None for r in ledger.recoveries if r.trials), shown
    _a_stopped_worker_loses_its_trial_and_logs_nothing_of_it(result)
    _a_restarted_chief_gives_each_running_trial_back(result)
    _a_killed_workers_trial_is_finished_by_a_live_worker_or_its_restart(result)


def _a_stopped_worker_loses_its_trial_and_logs_nothing_of_it(result: Result) -> None:
    (stop,) = _faults(result, WORKER_STOP)
    (old,) = _hit(result, stop)
    # KILLED, never FINISHED; stopped while it logged, what it had logged stays in that run
    assert old.status == "KILLED", old
    assert f"worker {stop.target} was silent" in old.kill_reason, old
    assert _finished_by(result, old.trial_id).run_id != old.run_id
    logs = "".join(p.read_text(errors="replace") for p in (result.work / "logs").glob("*"))
    # woken, it says it lost the trial; or, when a heartbeat answered before the stop still
    # said "held", the trial's FINISHED run by another worker stops it (the chief ignores the
    # result it then reports)
    said = (
        f"trial {old.trial_id} was taken back by the chief",
        f"trial {old.trial_id} was logged FINISHED by another run meanwhile",
    )
    assert any(line in logs for line in said), said


def _a_restarted_chief_gives_each_running_trial_back(result: Result) -> None:
    """Each run held at the chief's death is its worker's again: it finishes, or, its worker
    not heard of within the timeout of the restart (docs/distributed.md), the chief takes it
    back (its reason); never "not yours" at once, which a trial the chief dropped would get."""
    (kill,) = _faults(result, CHIEF_KILL)
    held = _hit(result, kill)
    assert any(r.status == "FINISHED" for r in held), held
    for run in held:
        assert run.status == "FINISHED" or f"worker {run.worker} was silent" in run.kill_reason, run


def _a_killed_workers_trial_is_finished_by_a_live_worker_or_its_restart(result: Result) -> None:
    replaced, restarted = _faults(result, WORKER_KILL)
    assert replaced.detail.endswith("started worker-n1"), replaced
    assert restarted.detail.endswith(f"started {restarted.target}"), restarted
    for lost in _hit(result, replaced):  # none when it was killed between two trials
        assert lost.status == "KILLED", lost
        assert f"worker {replaced.target} was silent" in lost.kill_reason, lost
        assert _finished_by(result, lost.trial_id).worker != replaced.target
    for old in _hit(result, restarted):  # closed by its restart, or by the chief
        assert old.status == "KILLED" and old.kill_reason, old
        assert _finished_by(result, old.trial_id).start > restarted.at
