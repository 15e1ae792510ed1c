"""The soak's ledger checker on small MLflow records built here (no processes): every kind of
trouble it must catch is planted once, next to a clean record it must pass."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchmarks.soak.faults import (
    CHIEF_KILL,
    KINDS,
    MLFLOW_RESTART,
    WORKER_KILL,
    WORKER_STOP,
    Fault,
    Plan,
)
from benchmarks.soak.ledger import check, percentile, render
from benchmarks.soak.record import (
    Delay,
    OracleTrial,
    SweepRecord,
    delays,
    mlflow_runs,
    oracle_trials,
)
from tests.conftest import PARENT_TAG, chief_oracle, copy_store

T0 = 1_800_000_000.0  # wall-clock seconds the records start at
SILENT = (
    "worker {} was silent for more than 4 s (distributed.heartbeat_timeout_s): "
    "trial {} queued again"
)


class Store:
    """A sweep's MLflow record, logged run by run as a chief and its workers would, in an
    experiment of its own."""

    def __init__(self, uri: str, name: str) -> None:
        self.uri, self.name = uri, name
        self.client = MlflowClient(uri)
        self.experiment = self.client.create_experiment(name)
        parent = self.client.create_run(self.experiment, start_time=_ms(0), tags={"sweep": name})
        self.parent = parent.info.run_id
        self.client.set_terminated(self.parent, "FINISHED", end_time=_ms(1000))

    def run(
        self,
        trial: str,
        status: str,
        start: float,
        end: float | None,
        worker: str = "w1",
        score: float | None = None,
        **tags: str,
    ) -> str:
        """A trial run from `start` to `end` (seconds after T0; None: still RUNNING)."""
        tags |= {PARENT_TAG: self.parent, "trial_id": trial, "worker_id": worker}
        run_id = self.client.create_run(
            self.experiment, start_time=_ms(start), tags=tags
        ).info.run_id
        if score is not None:
            self.client.log_metric(run_id, "best_val_accuracy", score)
        if end is not None:
            self.client.set_terminated(run_id, status, end_time=_ms(end))
        return run_id

    def record(self, oracle: dict[str, OracleTrial]) -> SweepRecord:
        read = mlflow_runs(self.client, self.name, "val_accuracy")
        return SweepRecord(read.parents, read.runs, oracle)


def _ms(seconds: float) -> int:
    return int((T0 + seconds) * 1000)


def _done(*scores: tuple[str, float]) -> dict[str, OracleTrial]:
    return {t: OracleTrial(t, "COMPLETED", s) for t, s in scores}


@pytest.fixture(scope="module")
def soak_store(tmp_path_factory: pytest.TempPathFactory, migrated_store: Path) -> str:
    """One store for the module (opening a copied store costs seconds): an experiment a test."""
    return copy_store(migrated_store, tmp_path_factory.mktemp("soak-ledger"))


@pytest.fixture
def store(soak_store: str, request: pytest.FixtureRequest) -> Store:
    return Store(soak_store, request.node.name[:60])


def _three_finished(store: Store) -> dict[str, OracleTrial]:
    """Trials 0-2, each FINISHED once by one of two workers; the oracle's record agrees."""
    store.run("0", "FINISHED", 0, 10, "w1", 0.7)
    store.run("1", "FINISHED", 1, 12, "w2", 0.8)
    store.run("2", "FINISHED", 11, 20, "w1", 0.6)
    return _done(("0", 0.7), ("1", 0.8), ("2", 0.6))


def test_a_clean_record_passes(store: Store) -> None:
    ledger = check(store.record(_three_finished(store)), [], planned=3)
    assert ledger.clean and ledger.complete, render(ledger)
    assert (ledger.finished_once, ledger.started, ledger.killed_runs) == (3, 3, 0)
    assert render(ledger)[-1] == "CLEAN"


def test_a_planted_duplicate_is_caught(store: Store) -> None:
    oracle = _three_finished(store)
    store.run("1", "FINISHED", 2, 14, "w3", 0.8)
    ledger = check(store.record(oracle), [], planned=3)
    assert ledger.duplicated == {"1": 2} and not ledger.clean
    assert ledger.finished_once == 2
    assert "duplicated: trial 1 x2" in render(ledger)


def test_a_lost_trial_is_caught(store: Store) -> None:
    oracle = _three_finished(store)
    store.run("3", "KILLED", 21, 25, "w2", kill_reason="trials of worker w2 that died")
    oracle["3"] = OracleTrial("3", "RUNNING")  # never completed, never failed
    ledger = check(store.record(oracle), [], planned=4)
    assert ledger.lost == ["3"] and not ledger.clean
    assert ledger.killed_runs == 1 and ledger.complete


def test_a_run_left_running_is_caught(store: Store) -> None:
    oracle = _three_finished(store)
    stale = store.run("2", "RUNNING", 5, None, "w2")  # an orphan beside trial 2's FINISHED run
    ledger = check(store.record(oracle), [], planned=3)
    assert ledger.left_running == [f"trial 2 run {stale}"] and not ledger.clean
    assert ledger.finished_once == 3, "the orphan does not make trial 2 lost"


def test_a_parent_left_running_is_caught(store: Store) -> None:
    oracle = _three_finished(store)
    store.client.update_run(store.parent, "RUNNING")
    ledger = check(store.record(oracle), [], planned=3)
    assert ledger.left_running == [f"parent {store.parent}"]


def test_trials_not_started_make_the_ledger_incomplete_not_lost(store: Store) -> None:
    ledger = check(store.record(_three_finished(store)), [], planned=5)
    assert ledger.not_started == 2 and not ledger.complete and ledger.clean
    assert "INCOMPLETE" in render(ledger)[-1]


def test_a_chief_that_never_ended_the_sweep_makes_the_ledger_incomplete(store: Store) -> None:
    """Every trial done, but the chief still waiting at the time bound (for a worker killed
    between two trials, once): the soak closed it, which is no clean end."""
    ledger = check(store.record(_three_finished(store)), [], planned=3, ended=False)
    assert ledger.clean and not ledger.complete
    assert render(ledger)[-1].endswith("the chief had not ended the sweep at the time bound)")


def test_failures_say_why_and_a_faults_reason_is_told_from_trainings(store: Store) -> None:
    oracle = _three_finished(store)
    store.run("3", "FAILED", 21, 22, "w1", error="Traceback ...\nValueError: loss is NaN")
    store.run("4", "KILLED", 21, 30, "w2", kill_reason=SILENT.format("w2", "4"))
    oracle |= {
        "3": OracleTrial("3", "FAILED", message="ValueError: loss is NaN"),
        "4": OracleTrial("4", "FAILED", message=SILENT.format("w2", "4")),
    }
    ledger = check(store.record(oracle), [Fault(WORKER_STOP, T0 + 25, "w2")], planned=5)
    assert ledger.failed == {"3": "ValueError: loss is NaN", "4": SILENT.format("w2", "4")}
    assert list(ledger.failed_by_fault) == ["4"] and not ledger.clean
    # a FAILED run without its error (the chief's record of it holds none): not training's
    store.run("5", "FAILED", 31, 32, "w1")
    oracle["5"] = OracleTrial("5", "FAILED")
    unexplained = check(store.record(oracle), [], planned=6)
    assert unexplained.failed_by_fault["5"] == "no reason recorded"


def test_mlflow_is_checked_against_the_oracles_record(store: Store) -> None:
    store.run("0", "FINISHED", 0, 10, "w1", 0.7)
    store.run("1", "FINISHED", 1, 12, "w2", 0.8)
    store.run("2", "FINISHED", 11, 20, "w1", 0.6)
    store.run("9", "KILLED", 11, 20, "w2")
    oracle = _done(("0", 0.7), ("1", 0.75), ("3", 0.5))  # 1: another score; 3: no run
    oracle["2"] = OracleTrial("2", "RUNNING")
    ledger = check(store.record(oracle), [], planned=4)
    assert sorted(m.split(":")[0] for m in ledger.mismatches) == [
        "trial 1",
        "trial 2",
        "trial 3",
        "trial 9",
    ], ledger.mismatches
    assert ledger.lost == ["3", "9"], "a COMPLETED trial without a FINISHED run is lost too"


def test_recovery_runs_to_the_interrupted_trial_not_the_next_to_finish(store: Store) -> None:
    store.run("0", "FINISHED", 0, 12, "w1", 0.7)  # finishes first after the kill: not it
    # w2's run: killed at 10, closed at 24 (after the chief's death at 20): the kill's trial
    store.run("1", "KILLED", 1, 24, "w2", kill_reason=SILENT.format("w2", "1"))
    store.run("1", "FINISHED", 21, 40, "w1", 0.8)  # w2's trial, redone by w1
    store.run("2", "FINISHED", 13, 25, "w3", 0.6)
    oracle = _done(("0", 0.7), ("1", 0.8), ("2", 0.6))
    faults = [Fault(WORKER_KILL, T0 + 10, "w2"), Fault(CHIEF_KILL, T0 + 20)]
    ledger = check(store.record(oracle), faults, planned=3)
    assert ledger.clean, render(ledger)
    kill, chief = ledger.recoveries
    assert kill.trials == ("1",) and kill.seconds == pytest.approx(30.0, abs=0.01)
    assert chief.trials == ("2",) and chief.seconds == pytest.approx(5.0, abs=0.01)
    summary = ledger.recovery_summary()
    assert summary["all"]["p50_s"] == 17.5 and summary[WORKER_KILL]["measured"] == 1
    assert ledger.faults == {WORKER_KILL: 1, CHIEF_KILL: 1}
    # a chief's death with two trials held: recovered when the last of them ended
    (both,) = check(store.record(oracle), [Fault(CHIEF_KILL, T0 + 22)], planned=3).recoveries
    assert both.trials == ("1", "2") and both.seconds == pytest.approx(18.0, abs=0.01)


def test_a_fault_that_hit_no_trial_or_one_never_done_is_counted_apart(store: Store) -> None:
    oracle = _three_finished(store)
    store.run("3", "KILLED", 21, 30, "w1")
    oracle["3"] = OracleTrial("3", "RUNNING")
    faults = [Fault(WORKER_KILL, T0 + 10.5, "w9"), Fault(MLFLOW_RESTART, T0 + 25)]
    ledger = check(store.record(oracle), faults, planned=4)
    idle, restart = ledger.recoveries
    assert idle.trials == () and idle.seconds is None
    assert restart.unrecovered == ("3",) and restart.seconds is None
    assert ledger.recovery_summary()["all"] == {
        "faults": 2,
        "measured": 0,
        "no_trial": 1,
        "unrecovered": 1,
    }


def test_a_trial_taken_from_a_worker_no_fault_hit_is_named(store: Store, tmp_path: Path) -> None:
    oracle = _three_finished(store)
    taken = store.run("3", "KILLED", 21, 30, "w2", kill_reason=SILENT.format("w2", "3"))
    store.run("3", "FINISHED", 31, 40, "w1", 0.5)
    oracle["3"] = OracleTrial("3", "COMPLETED", 0.5)
    stopped = check(store.record(oracle), [Fault(WORKER_STOP, T0 + 22, "w2")], planned=4)
    assert stopped.taken_from_live == stopped.taken_while_starved == [] and stopped.clean
    unexplained = check(store.record(oracle), [Fault(WORKER_STOP, T0 + 22, "w1")], planned=4)
    named = f"trial 3 run {taken} of w2"
    assert [line.split(":")[0] for line in unexplained.taken_from_live] == [named]
    # its heartbeat logged waking 9 s late at T0+33, so it was held up from T0+24 on: starved
    logs = tmp_path / "logs"
    logs.mkdir()
    woke = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(T0 + 33))
    (logs / "004-w2.log").write_text(
        f"[{woke},250][sweep.tuner.liveness][WARNING] - sweep-heartbeat woke 9.0 s late (it "
        "runs every 0.8 s): this process was held up (short of CPU, or stopped)\n"
        f"[{woke},300][sweep.tuner.trials][INFO] - trial 4/4 ...\n"
    )
    held_up = delays(logs)
    assert held_up == [Delay("w2", T0 + 33.25, 9.0)]
    starved = check(store.record(oracle), [], planned=4, held_up=held_up)
    assert starved.taken_from_live == [] and [
        line.split(":")[0] for line in starved.taken_while_starved
    ] == [named]
    late = [Delay("w2", T0 + 50, 5.0)]  # held up only after the run had ended: no excuse
    assert check(store.record(oracle), [], planned=4, held_up=late).taken_from_live


def test_the_oracle_record_is_read_from_a_chiefs_project(tmp_path: Path) -> None:
    import keras_tuner

    oracle = chief_oracle(tmp_path)
    done, failed = oracle.create_trial("a"), oracle.create_trial("b")
    oracle.update_trial(done.trial_id, {"val_accuracy": 0.75})
    done.status = keras_tuner.engine.trial.TrialStatus.COMPLETED
    oracle.end_trial(done)
    failed.status, failed.message = "FAILED", "ValueError: broken"
    oracle.end_trial(failed)
    running = oracle.create_trial("a")
    read = oracle_trials(tmp_path / "chief")
    assert read[done.trial_id] == OracleTrial(done.trial_id, "COMPLETED", 0.75)
    assert read[failed.trial_id].status == "FAILED" and "broken" in read[failed.trial_id].message
    assert read[running.trial_id].status == "RUNNING"


def test_percentiles_interpolate() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([10.0], 95) == 10.0
    assert percentile(list(map(float, range(1, 101))), 95) == pytest.approx(95.05)


def test_the_plan_is_seeded_and_every_block_covers_every_kind() -> None:
    plan = Plan(count=12, seed=7, min_gap_s=1.0, max_gap_s=3.0)
    steps = list(plan.steps())
    assert [k for _, k, _ in steps] == [k for _, k, _ in plan.steps()], "the same seed, same plan"
    assert all(1.0 <= gap <= 3.0 for gap, _, _ in steps)
    assert Counter(k for _, k, _ in steps[:5]) == Counter(KINDS)
    assert Counter(k for _, k, _ in steps[5:10]) == Counter(KINDS)
    fixed = Plan(
        count=3, seed=7, min_gap_s=0, max_gap_s=0, kinds=(CHIEF_KILL, WORKER_KILL), fixed=True
    )
    assert [k for _, k, _ in fixed.steps()] == [CHIEF_KILL, WORKER_KILL, CHIEF_KILL]
    with pytest.raises(ValueError, match="fault kinds"):
        Plan(count=1, seed=0, min_gap_s=0, max_gap_s=1, kinds=("meteor",))
