"""Median pruning against none: the same random search (same seed, so the same trials) both
ways; the epochs spent (the trials' logged `epochs_run`) and the best objective."""

from __future__ import annotations

from typing import Any

from benchmarks.measure import ok
from benchmarks.settings import TARGETS, Bench
from benchmarks.sweep_runs import prewarm, run_sweep, trial_runs

#: A learning-rate range wide enough that its low end learns little in a few epochs (the trials
#: pruning is for), x attention width.
SPACE = (
    "search.space={"
    "train.learning_rate:{type:float,min:1.0e-5,max:3.0e-2,sampling:log},"
    "model.attention.output_dim:{type:choice,values:[16,64]}}"
)
SHOWN = {SPACE: "search.space=<learning_rate x output_dim>"}
KINDS = ("none", "median")
VAL_FRACTION = 0.2  # the base config's data.val_fraction: the best accuracy's sample size


def trial_rows(b: Bench, label: str) -> list[dict[str, Any]]:
    """Each finished trial of sweep `label` in start order: its values, epochs, best, pruning."""
    from sweep.vocabulary import PRUNED_AT_TAG

    return [
        {
            "learning_rate": f"{float(r.data.params['train.learning_rate']):.3g}",
            "output_dim": int(r.data.params["model.attention.output_dim"]),
            "epochs_run": r.data.metrics.get("epochs_run"),
            "best_val_accuracy": r.data.metrics.get("best_val_accuracy"),
            "pruned_at_epoch": r.data.tags.get(PRUNED_AT_TAG),
        }
        for r in trial_runs(b, label, finished_only=True)
    ]


def run(b: Bench) -> dict[str, Any]:
    """The same random search (seed, space, trials) without pruning, then with median pruning."""
    from sweep.pruning import MIN_TRIALS

    limit = b.pruning_limit
    common = [
        "+experiment=smoke",
        SPACE,
        "search.tuner=random",
        f"search.max_trials={b.pruning_trials}",
        "search.initial=[]",
        f"train.epochs={b.pruning_epochs}",
        "search.patience=0",
        f"data.limit={limit}" if limit else "data.limit=null",
    ]
    prewarm(b, common)
    result: dict[str, Any] = {"max_epochs": b.pruning_epochs, "limit": limit}
    result["min_trials"] = MIN_TRIALS
    for kind in KINDS:
        label = f"pruning_{kind}"
        result[kind] = run_sweep(b, label, [*common, f"search.pruning={kind}"], SHOWN)
        result[kind]["trials_each"] = trial_rows(b, label)
    return {**result, **verdict(result["none"], result["median"], limit)}


def verdict(none: dict[str, Any], pruned: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """The epochs ratio, and the best accuracy's gap against one standard error of it."""
    best, val = none["best_val_accuracy"], max(1, round((limit or 0) * VAL_FRACTION))
    found = {
        "epochs_ratio": pruned["epochs_run"] / max(none["epochs_run"], 1.0),
        "best_gap": none["best_val_accuracy"] - pruned["best_val_accuracy"],
        "val_reviews": val if limit else None,
        "noise": (best * (1 - best) / val) ** 0.5,  # one standard error of the best accuracy
    }
    found["met"] = (
        found["epochs_ratio"] <= TARGETS["pruning_epochs"]
        and abs(found["best_gap"]) <= found["noise"]
    )
    return found


def markdown(results: dict[str, Any]) -> str:
    """The pruning block of `benchmarks/README.md`."""
    r, m = results["pruning"], results["machine"]
    none = r["none"]
    lines = [
        f"Measured {m['date']}, {m['cores']} cores, `{results['command']}`: random search, "
        f"{none['trials']} trials, the same seed both ways (so the same configurations), "
        f"`{none['command']}`; the smoke model, data.limit={r['limit']}, up to {r['max_epochs']} "
        "epochs a trial, no early stopping; median pruning from epoch 1 (the default "
        f"`search.pruning_min_epochs`), judged once >= {r['min_trials']} earlier trials reached "
        "the epoch.",
        "",
        "| search.pruning | Trials | Pruned | Epochs spent | Best val acc | Wall |",
        "|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        s = r[kind]
        lines.append(
            f"| {kind} | {s['finished']}/{s['trials']} | {s['pruned']} | {s['epochs_run']:.0f} "
            f"| {s['best_val_accuracy']:.4f} | {s['wall_s']:.0f} s |"
        )
    target = TARGETS["pruning_epochs"]
    lines += [
        "",
        f"Epochs spent with median pruning / without: **{r['epochs_ratio']:.2f}** (target <= "
        f"{target}: {ok(r['epochs_ratio'] <= target)}); best val acc without minus with: "
        f"{r['best_gap']:+.4f} (target: within one standard error of the best accuracy, "
        f"±{r['noise']:.4f}: {ok(abs(r['best_gap']) <= r['noise'])}).",
    ]
    return "\n".join(lines) + "\n"
