"""The soak's ledger: what became of every planned trial, checked against the faults injected.

From the sweep's MLflow record and the chief's own (`record`), and the faults (`faults.Fault`):

- trials planned, FINISHED exactly once, lost (started, never FINISHED nor FAILED), duplicated
  (FINISHED more than once), runs left RUNNING, FAILED with each reason, and among those the
  ones whose reason is a fault's, or that have none: not shown to be training's;
- faults injected by kind, and each fault's recovery time: from the fault to the completion of
  the trial(s) it interrupted (the run of that trial that ends FINISHED or FAILED after it),
  p50 and p95, not to whichever trial happens to finish next;
- the MLflow store against the oracle's record: a COMPLETED trial has one FINISHED run with
  the oracle's score, a FINISHED run's trial is COMPLETED, no run of a trial the oracle never
  made;
- trials taken from a worker no fault hit: starved (the worker or the chief logged being held
  up meanwhile), or not (a bug, until shown otherwise).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.soak.faults import KINDS, WORKER_FAULTS, Fault
from benchmarks.soak.record import Delay, SweepRecord, TrialRun

#: What a FAILED trial's reason says when a fault, not its training, failed it: it lost its
#: worker too often, or the tracking server, its database or the chief went away under it.
FAULT_SIGNS = re.compile(
    r"heartbeat_timeout_s|queued again|tracking server|Max retries exceeded|Connection refused|"
    r"connection (?:refused|reset|closed)|server closed the connection|psycopg|OperationalError|"
    r"StatusCode\.UNAVAILABLE|Socket closed|API request to endpoint",
    re.IGNORECASE,
)
#: A FAILED trial's reason when neither its runs nor the oracle recorded one: not shown to be a
#: training failure, so counted with the faults' (the chief's record of a worker's trial holds
#: no message: Keras Tuner's gRPC report carries none).
NO_REASON = "no reason recorded"
#: A run the chief marked KILLED because its worker fell silent (`serving.Monitor`).
SILENT = "was silent"
#: How far two scores of the same trial (the oracle's, MLflow's) may differ.
SCORE_TOLERANCE = 1e-6
ENDED = ("FINISHED", "FAILED")


@dataclass(frozen=True)
class Recovery:
    """One fault and what it cost: the trials it interrupted, and the seconds until the last of
    them completed (None: it interrupted none, or one never completed: `unrecovered`)."""

    fault: Fault
    trials: tuple[str, ...]
    seconds: float | None
    unrecovered: tuple[str, ...] = ()


@dataclass
class Ledger:
    """What became of the trials of one soak, and what its faults cost."""

    planned: int
    started: int
    finished_once: int = 0
    not_started: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: dict[str, int] = field(default_factory=dict)
    left_running: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    failed_by_fault: dict[str, str] = field(default_factory=dict)
    killed_runs: int = 0
    mismatches: list[str] = field(default_factory=list)
    taken_from_live: list[str] = field(default_factory=list)
    taken_while_starved: list[str] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)
    recoveries: list[Recovery] = field(default_factory=list)
    #: whether the chief ended the sweep itself (exit 0) before the soak's time bound
    ended: bool = True

    @property
    def faults(self) -> dict[str, int]:
        counts = Counter(r.fault.kind for r in self.recoveries)
        return {kind: counts[kind] for kind in KINDS if counts[kind]}

    @property
    def clean(self) -> bool:
        """Nothing lost, duplicated, left RUNNING, failed by a fault, or recorded differently by
        MLflow and the oracle."""
        return not (
            self.lost
            or self.duplicated
            or self.left_running
            or self.failed_by_fault
            or self.mismatches
        )

    @property
    def complete(self) -> bool:
        """Every planned trial started and the chief ended the sweep itself (a soak stopped
        at its time bound may leave trials unstarted, or a chief waiting for something)."""
        return self.not_started == 0 and self.ended

    def recovery_summary(self) -> dict[str, dict[str, Any]]:
        """p50/p95 of the recovery seconds, for all faults and per kind, with how many faults
        interrupted no trial and how many never recovered."""
        groups: dict[str, list[Recovery]] = defaultdict(list)
        for recovery in self.recoveries:
            groups["all"].append(recovery)
            groups[recovery.fault.kind].append(recovery)
        return {name: _summary(group) for name, group in groups.items()}

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "recoveries"}
        data |= {"clean": self.clean, "complete": self.complete, "faults": self.faults}
        data["recovery"] = self.recovery_summary()
        data["fault_log"] = [
            {**r.fault.to_json(), "trials": list(r.trials), "recovery_s": _round(r.seconds)}
            | ({"unrecovered": list(r.unrecovered)} if r.unrecovered else {})
            for r in self.recoveries
        ]
        return data


def check(
    record: SweepRecord,
    faults: Sequence[Fault],
    planned: int,
    exits: Sequence[str] = (),
    held_up: Sequence[Delay] = (),
    ended: bool = True,
) -> Ledger:
    """The ledger of a soak whose sweep planned `planned` trials; `exits` are processes that
    ended unplanned (a line each, from the runner), `held_up` the late wake-ups they logged,
    `ended` whether the chief ended the sweep itself."""
    runs = record.runs
    by_trial: dict[str, list[TrialRun]] = defaultdict(list)
    for run in runs:
        by_trial[run.trial_id].append(run)
    ledger = Ledger(planned, len(record.oracle), exits=list(exits), ended=ended)
    ledger.not_started = max(0, planned - len(set(record.oracle) | set(by_trial)))
    for trial_id in sorted(set(record.oracle) | set(by_trial)):
        _account(ledger, trial_id, by_trial.get(trial_id, []), record)
    ledger.left_running = [
        f"parent {run_id}" for run_id, status in record.parents.items() if status == "RUNNING"
    ] + [f"trial {r.trial_id} run {r.run_id}" for r in runs if r.status == "RUNNING"]
    ledger.killed_runs = sum(r.status == "KILLED" for r in runs)
    if len(record.parents) != 1:
        ledger.mismatches.append(f"{len(record.parents)} parent runs, not 1")
    taken = _taken_from_live(runs, faults)
    starved = [r for r in taken if _starved(r, held_up)]
    ledger.taken_while_starved = [_named(r) for r in starved]
    ledger.taken_from_live = [_named(r) for r in taken if r not in starved]
    ledger.recoveries = [
        _recovery(f, runs, by_trial, faults) for f in sorted(faults, key=lambda f: f.at)
    ]
    return ledger


def _account(ledger: Ledger, trial_id: str, runs: list[TrialRun], record: SweepRecord) -> None:
    """File one trial under finished once / duplicated / failed / lost, and compare its MLflow
    runs with the oracle's record of it."""
    finished = [r for r in runs if r.status == "FINISHED"]
    oracle = record.oracle.get(trial_id)
    if len(finished) > 1:
        ledger.duplicated[trial_id] = len(finished)
    elif finished:
        ledger.finished_once += 1
    elif (oracle is not None and oracle.status == "FAILED") or any(
        r.status == "FAILED" for r in runs
    ):
        reason = _failure(runs, oracle.message if oracle else "")
        ledger.failed[trial_id] = reason
        if reason == NO_REASON or FAULT_SIGNS.search(reason):  # not shown to be training's
            ledger.failed_by_fault[trial_id] = reason
    else:
        ledger.lost.append(trial_id)
    ledger.mismatches += _mismatches(trial_id, finished, oracle)


def _failure(runs: list[TrialRun], oracle_message: str) -> str:
    """Why a trial failed: its FAILED run's error, else the last line of the oracle's message
    (a trial that lost its worker too often has no FAILED run)."""
    errors = [r.error for r in runs if r.status == "FAILED" and r.error]
    if errors:
        return errors[-1].strip().splitlines()[-1][:300]
    lines = oracle_message.strip().splitlines()
    return lines[-1][:300] if lines else NO_REASON


def _mismatches(trial_id: str, finished: list[TrialRun], oracle: Any) -> list[str]:
    """Where MLflow and the oracle disagree about one trial."""
    if oracle is None:
        return [f"trial {trial_id}: MLflow has runs of it, the oracle never made it"]
    if oracle.status == "COMPLETED" and not finished:
        return [f"trial {trial_id}: COMPLETED in the oracle, no FINISHED run in MLflow"]
    if finished and oracle.status != "COMPLETED":
        return [f"trial {trial_id}: FINISHED in MLflow, {oracle.status} in the oracle"]
    scores = [r.score for r in finished]
    if finished and (
        oracle.score is None
        or any(s is None or abs(s - oracle.score) > SCORE_TOLERANCE for s in scores)
    ):
        return [f"trial {trial_id}: score {scores} in MLflow, {oracle.score} in the oracle"]
    return []


def _taken_from_live(runs: list[TrialRun], faults: Sequence[Fault]) -> list[TrialRun]:
    """Runs the chief took back for silence from a worker no fault hit while it ran them."""
    return [
        run
        for run in runs
        if run.status == "KILLED"
        and SILENT in run.kill_reason
        and not any(
            f.kind in WORKER_FAULTS and f.target == run.worker and run.start <= f.at <= _end(run)
            for f in faults
        )
    ]


def _starved(run: TrialRun, held_up: Sequence[Delay]) -> bool:
    """Whether the run's worker, or the chief, logged being held up while the run went on: its
    heartbeats (or the chief's answers to them) came late, so the take is starvation's."""
    return any(
        d.process in (run.worker, "chief")
        and d.woke - d.late_s <= _end(run)
        and d.woke >= run.start
        for d in held_up
    )


def _end(run: TrialRun) -> float:
    return run.end if run.end is not None else math.inf


def _named(run: TrialRun) -> str:
    return f"trial {run.trial_id} run {run.run_id} of {run.worker}: {run.kill_reason}"


def held_at(fault: Fault, runs: Sequence[TrialRun], faults: Sequence[Fault]) -> list[TrialRun]:
    """The runs a fault interrupted: those going on as it landed (the worker's, for a worker
    fault), less those an earlier worker fault had hit already (a stopped worker's run ends
    when the woken worker closes it, after the chief took its trial back: not this fault's)."""
    hit = [r for r in runs if r.start <= fault.at <= _end(r)]
    if fault.kind in WORKER_FAULTS:
        return [r for r in hit if r.worker == fault.target]
    return [
        r
        for r in hit
        if not any(
            f.kind in WORKER_FAULTS and f.target == r.worker and r.start <= f.at < fault.at
            for f in faults
        )
    ]


def interrupted(fault: Fault, runs: Sequence[TrialRun], faults: Sequence[Fault] = ()) -> list[str]:
    """The trials a fault interrupted (`held_at`)."""
    return sorted({r.trial_id for r in held_at(fault, runs, faults)})


def _recovery(
    fault: Fault,
    runs: Sequence[TrialRun],
    by_trial: dict[str, list[TrialRun]],
    faults: Sequence[Fault],
) -> Recovery:
    trials = interrupted(fault, runs, faults)
    done: dict[str, float] = {}
    for trial_id in trials:
        ends = [
            r.end
            for r in by_trial[trial_id]
            if r.status in ENDED and r.end is not None and r.end >= fault.at
        ]
        if ends:
            done[trial_id] = min(ends)
    unrecovered = tuple(t for t in trials if t not in done)
    seconds = max(done.values()) - fault.at if done and not unrecovered else None
    return Recovery(fault, tuple(trials), seconds, unrecovered)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, linearly interpolated (NumPy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _summary(group: list[Recovery]) -> dict[str, Any]:
    seconds = [r.seconds for r in group if r.seconds is not None]
    summary: dict[str, Any] = {
        "faults": len(group),
        "measured": len(seconds),
        "no_trial": sum(not r.trials for r in group),
        "unrecovered": sum(bool(r.unrecovered) for r in group),
    }
    if seconds:
        summary |= {
            "p50_s": _round(percentile(seconds, 50)),
            "p95_s": _round(percentile(seconds, 95)),
        }
    return summary


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def render(ledger: Ledger) -> list[str]:
    """The ledger for people: one line per count, then each finding named."""
    summary = ledger.recovery_summary()
    lines = [
        f"trials planned {ledger.planned}, started {ledger.started}, "
        f"FINISHED exactly once {ledger.finished_once}, not started {ledger.not_started}",
        f"lost {len(ledger.lost)}, duplicated {len(ledger.duplicated)}, "
        f"left RUNNING {len(ledger.left_running)}, FAILED {len(ledger.failed)} "
        f"(by a fault: {len(ledger.failed_by_fault)}), KILLED runs {ledger.killed_runs}",
        "faults: "
        + (", ".join(f"{kind} {n}" for kind, n in ledger.faults.items()) or "none")
        + f" ({sum(ledger.faults.values())} in all)",
        f"trials taken from a worker no fault hit: {len(ledger.taken_from_live)} unexplained, "
        f"{len(ledger.taken_while_starved)} while it or the chief was held up (starved)",
    ]
    for name, row in summary.items():
        shown = (
            f"p50 {row['p50_s']} s, p95 {row['p95_s']} s over {row['measured']}"
            if "p50_s" in row
            else "no measure"
        )
        lines.append(
            f"recovery {name}: {shown}; {row['no_trial']} hit no trial, "
            f"{row['unrecovered']} never recovered"
        )
    findings = {
        "lost": ledger.lost,
        "duplicated": [f"trial {t} x{n}" for t, n in ledger.duplicated.items()],
        "left RUNNING": ledger.left_running,
        "FAILED": [f"trial {t}: {why}" for t, why in ledger.failed.items()],
        "MLflow vs oracle": ledger.mismatches,
        "taken from a live worker": ledger.taken_from_live,
        "taken from a worker held up (starved)": ledger.taken_while_starved,
        "unplanned exits": ledger.exits,
    }
    for title, items in findings.items():
        lines += [f"{title}: {item}" for item in items]
    verdict = "CLEAN" if ledger.clean else "NOT CLEAN"
    if ledger.not_started:
        verdict += " (INCOMPLETE: the soak stopped early)"
    elif not ledger.ended:
        verdict += " (INCOMPLETE: the chief had not ended the sweep at the time bound)"
    lines.append(verdict)
    return lines
