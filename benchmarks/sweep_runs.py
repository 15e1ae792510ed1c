"""Sweeps as a user runs them: `python -m sweep` in a process of its own (so its peak memory is
its own, not this TensorFlow-sized one's), then read back from the MLflow store it wrote."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.measure import median
from benchmarks.settings import SRC, Bench

if TYPE_CHECKING:
    from mlflow.entities import Run


@dataclass(frozen=True)
class Exited:
    """A finished sweep process: its exit status, wall time, own CPU time and peak RSS."""

    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float | None


def peak_rss_mb(pid: int) -> float | None:
    """The process's own peak RSS (VmHWM; Linux), None once it has gone.

    Not `ru_maxrss`: Linux carries the parent's peak across fork + exec, so every child of this
    (TensorFlow-sized) process would report at least the parent's peak.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def wait(proc: subprocess.Popen, timeout_s: float, started: float) -> Exited:
    """Wait for `proc` (killed on timeout), sampling its peak RSS while it runs."""
    peak: list[float] = []

    def watch() -> None:
        while proc.returncode is None:
            mb = peak_rss_mb(proc.pid)
            if mb is not None:
                peak.append(mb)
            time.sleep(0.25)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    watcher.join()
    return Exited(
        proc.returncode,
        time.perf_counter() - started,
        usage.ru_utime + usage.ru_stime,
        max(peak) if peak else None,
    )


def launch(b: Bench, label: str, args: Sequence[str]) -> Exited:
    """`python -m sweep ARGS` from the sweep's own scratch dir, its output kept in a log file."""
    where = b.work / label
    where.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    output = where / "output.log"
    started = time.perf_counter()
    with output.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sweep", *args], cwd=where, env=env, stdout=out, stderr=out
        )
        exited = wait(proc, b.sweep_timeout, started)
    if exited.returncode != 0:
        tail = output.read_text()[-3000:]
        raise RuntimeError(f"sweep {label} exited {exited.returncode}:\n{tail}")
    return exited


def trial_runs(b: Bench, label: str, finished_only: bool = False) -> list[Run]:
    """Sweep `label`'s trial runs (not its parent run), in start order."""
    from mlflow.tracking import MlflowClient

    from sweep.vocabulary import PARENT_TAG

    client = MlflowClient(tracking_uri=f"sqlite:///{b.work / label / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(label)
    runs = client.search_runs(
        [experiment.experiment_id],
        "attributes.status = 'FINISHED'" if finished_only else "",
        order_by=["attributes.start_time ASC"],
        max_results=5000,
    )
    return [r for r in runs if PARENT_TAG in r.data.tags]


def run_sweep(
    b: Bench, label: str, overrides: Sequence[str], shown: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """`python -m sweep OVERRIDES` in a subprocess: its wall time, peak memory and MLflow record.
    `shown`: how the report's command line writes long overrides (a search space)."""
    from sweep.config import compose_config
    from sweep.vocabulary import PRUNED_TAG

    args = [*b.overrides(*overrides), f"name={label}", *b.store(label)]
    cfg = compose_config(args)  # a bad override fails here, before a process is started
    exited = launch(b, label, args)
    trials = trial_runs(b, label)
    finished = [r for r in trials if r.info.status == "FINISHED"]
    trial_s = [(r.info.end_time - r.info.start_time) / 1000 for r in finished]
    metrics = [r.data.metrics for r in finished]
    best = [m["best_val_accuracy"] for m in metrics if "best_val_accuracy" in m]
    shown = shown or {}
    return {
        "command": " ".join(["python -m sweep", *(shown.get(a, a) for a in overrides)]),
        "tuner": cfg.search.tuner,
        "trials": len(trials),
        "finished": len(finished),
        "pruned": sum(r.data.tags.get(PRUNED_TAG) == "true" for r in finished),
        "epochs_run": sum(m.get("epochs_run", 0.0) for m in metrics),
        "wall_s": exited.wall_s,
        "cpu_s": exited.cpu_s,
        "trials_per_hour": 3600 * len(finished) / exited.wall_s,
        "mean_trial_s": median(trial_s) if len(trial_s) == 1 else statistics.fmean(trial_s),
        "trials_per_hour_in_search": 3600 * len(finished) / max(sum(trial_s), 1e-9),
        "peak_rss_mb": exited.peak_rss_mb,
        "mean_seconds_per_epoch": statistics.fmean(
            [m["seconds_per_epoch"] for m in metrics if "seconds_per_epoch" in m] or [0.0]
        ),
        "param_count": sorted({int(m["param_count"]) for m in metrics if "param_count" in m}),
        "best_val_accuracy": max(best) if best else float("nan"),
    }


def prewarm(b: Bench, overrides: Sequence[str]) -> None:
    """Tokenise into the cache now, so no sweep is charged for a vocabulary size seen first."""
    from sweep import train
    from sweep.config import compose_config

    train.load(compose_config(b.overrides(*overrides)))


def sweep_row(name: str, s: Mapping[str, Any]) -> str:
    """One sweep's line in the README's sweep table."""
    mb = "n/a" if s["peak_rss_mb"] is None else f"{s['peak_rss_mb']:.0f} MB"
    return (
        f"| {name} | `{s['command']}` | {s['finished']}/{s['trials']} | {s['wall_s']:.0f} s "
        f"| {s['trials_per_hour']:.0f} | {s['trials_per_hour_in_search']:.0f} "
        f"| {s['mean_seconds_per_epoch']:.2f} | {mb} | {s['best_val_accuracy']:.4f} |"
    )
