"""Search efficiency: Hyperband against random search on the same space, seed and data, the
random search given about the epochs Hyperband spent."""

from __future__ import annotations

from typing import Any

from benchmarks.settings import Bench
from benchmarks.sweep_runs import run_sweep

#: The search-efficiency space: attention width x scaling constant (16 combinations).
SPACE = (
    "search.space={"
    "model.attention.output_dim:{type:choice,values:[16,32,64,128]},"
    "model.attention.scale:{type:choice,values:[none,sqrt_dk,8.0,learned]}}"
)
#: How the report's commands show it.
SHOWN = {SPACE: "search.space=<output_dim x scale>"}


def run(b: Bench) -> dict[str, Any]:
    """Hyperband, then random search given (about) the epochs Hyperband spent."""
    epochs = b.search_epochs
    common = [
        "+experiment=smoke",
        SPACE,
        f"train.epochs={epochs}",
        "search.patience=0",
        f"data.limit={b.search_limit}" if b.search_limit is not None else "data.limit=null",
    ]
    hyperband = run_sweep(b, "search_hyperband", [*common, "search.tuner=hyperband"], SHOWN)
    trials = max(1, round(hyperband["epochs_run"] / epochs))
    random = run_sweep(
        b,
        "search_random",
        [*common, "search.tuner=random", f"search.max_trials={trials}"],
        SHOWN,
    )
    return {
        "space": "output_dim {16,32,64,128} x scale {none,sqrt_dk,8.0,learned}",
        "max_epochs": epochs,
        "limit": b.search_limit,
        "hyperband": hyperband,
        "random": random,
    }


def table(search: dict[str, Any]) -> list[str]:
    """The README's search-efficiency table."""
    hb, rs = search["hyperband"], search["random"]
    return [
        f"| Search efficiency: {search['space']}, up to {search['max_epochs']} epochs a trial, "
        f"data.limit={search['limit']} | Trials | Epochs spent | Best val acc | Wall |",
        "|---|---|---|---|---|",
        f"| Hyperband | {hb['finished']} | {hb['epochs_run']:.0f} | "
        f"{hb['best_val_accuracy']:.4f} | {hb['wall_s']:.0f} s |",
        f"| Random search (as many epochs) | {rs['finished']} | {rs['epochs_run']:.0f} | "
        f"{rs['best_val_accuracy']:.4f} | {rs['wall_s']:.0f} s |",
    ]
