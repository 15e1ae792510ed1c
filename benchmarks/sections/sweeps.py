"""Sweep throughput: the shipped `smoke` and `dim_search` experiments, each in its own process,
trials per hour and peak memory."""

from __future__ import annotations

from typing import Any

from benchmarks.settings import Bench
from benchmarks.sweep_runs import prewarm, run_sweep, sweep_row

EXPERIMENTS = ("smoke", "dim_search")


def run(b: Bench) -> dict[str, Any]:
    """Throughput of the shipped `smoke` and `dim_search` experiments, the cache warmed first."""
    quick = ["data.limit=null", "search.max_trials=2"] if b.quick else []
    # trials per hour measure the search: dim_search's seed repeats come after it
    own = {
        # `--quick` sets every epoch count (smoke's own is 3)
        "smoke": [f"train.epochs={b.sweep_epochs}"] if b.quick else [],
        "dim_search": [f"train.epochs={b.sweep_epochs}", "search.replicates.enabled=false"],
    }
    if b.dim_limit:
        own["dim_search"].append(f"data.limit={b.dim_limit}")
    for experiment in EXPERIMENTS:
        prewarm(b, [f"+experiment={experiment}", *quick])
    return {
        experiment: run_sweep(
            b, experiment, [f"+experiment={experiment}", *own[experiment], *quick]
        )
        for experiment in EXPERIMENTS
    }


def table(sweeps: dict[str, Any], search: dict[str, Any]) -> list[str]:
    """The README's sweep table: these sweeps, then the search section's two."""
    named = [*sweeps.items(), *((f"search: {k}", search[k]) for k in ("hyperband", "random"))]
    return [
        "| Sweep | Command | Trials | Wall | Trials / hour | Trials / hour, trials only "
        "| s / epoch | Peak RSS | Best val acc |",
        "|---|---|---|---|---|---|---|---|---|",
        *(sweep_row(name, s) for name, s in named),
    ]
