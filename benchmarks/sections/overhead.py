"""What the harness costs: a bare `model.fit` of the base config against the same config run as
one tracked harness trial (`train.run`: MLflow run, per-epoch metrics, plots, logged model)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmarks.fits import bare_fit
from benchmarks.measure import Paired, Timing, measure, median, ok, paired
from benchmarks.settings import TARGETS, Bench

if TYPE_CHECKING:
    from omegaconf import DictConfig

NAME = "bench_overhead"
#: What `tracking.callbacks.log_outcome` logs per run; the first three must all be there.
COST_KEYS = ("duration_s", "seconds_per_epoch", "param_count", "epochs_run")


def tracked_trial(cfg: DictConfig) -> Timing:
    """One harness run, and the `fit` time it logged itself (the rest is the harness's cost)."""
    from mlflow.tracking import MlflowClient

    from sweep import train

    run = measure(lambda: train.run(cfg))
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.name)
    (latest,) = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )
    return Timing(run.wall_s, run.cpu_s, run.result, latest.data.metrics["duration_s"])


def warm_up(b: Bench) -> None:
    """Imports, the MLflow store, plotting and graph tracing, paid here by neither kind."""
    from sweep import train
    from sweep.config import compose_config

    warm = compose_config(
        b.overrides("train.epochs=1", "name=bench_warmup", *b.store("overhead"), *b.quick_limit())
    )
    train.run(warm)
    bare_fit(warm, train.arrays(train.load(warm), warm))


def logged_costs(cfg: DictConfig) -> list[dict[str, float]]:
    """The metrics of every measured trial's run, in start order."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.name)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return [r.data.metrics for r in runs]


def run(b: Bench) -> dict[str, Any]:
    """Bare `model.fit` vs one harness trial (`train.run`) of the same config, both warm."""
    from sweep import train
    from sweep.config import compose_config

    extra = [f"name={NAME}", *b.store("overhead")]
    if b.epochs:
        extra.append(f"train.epochs={b.epochs}")
    if b.limit:
        extra.append(f"data.limit={b.limit}")
    cfg = compose_config(b.overrides(*extra))
    xy = train.arrays(train.load(cfg), cfg)
    warm_up(b)
    measured = paired(
        {"bare": lambda: bare_fit(cfg, xy), "trial": lambda: tracked_trial(cfg)},
        b.repeats,
        "overhead",
    )
    logged = logged_costs(cfg)
    result: dict[str, Any] = {
        "epochs": cfg.train.epochs,
        "batch_size": cfg.train.batch_size,
        "seq_len": cfg.data.seq_len,
        "limit": cfg.data.limit,
        "train_reviews": len(xy.x_train),
        "val_reviews": len(xy.x_val),
        "repeats": b.repeats,
        **ratios(measured),
        "cost_logged": {k: logged[-1].get(k) for k in COST_KEYS},
        "cost_logged_complete": all(k in m for m in logged for k in COST_KEYS[:3]),
        **measured.to_json(),
    }
    result["met"] = result["ratio"] <= TARGETS["overhead_ratio"]
    return result


def ratios(measured: Paired) -> dict[str, Any]:
    """Trial / bare: paired wall times (each and median), fastest runs, CPU; the trial's time
    in and outside its own `fit`."""
    trials = [row["trial"] for row in measured.rounds]
    bare_w, trial_w = measured.series("bare"), measured.series("trial")
    return {
        "ratio": measured.ratio("trial", "bare"),
        "ratio_each": measured.ratios("trial", "bare"),
        "ratio_of_minimums": min(trial_w) / min(bare_w),
        "ratio_cpu": measured.ratio("trial", "bare", "cpu_s"),
        "trial_fit_s": [t.fit_s for t in trials],
        "trial_outside_fit_s": [t.wall_s - (t.fit_s or 0.0) for t in trials],
    }


def rows(o: dict[str, Any]) -> list[str]:
    """The overhead lines of the README's results table."""
    bare, outside = median(o["bare"]["wall_s"]), median(o["trial_outside_fit_s"])
    own_cost, target, cost = 1 + outside / bare, TARGETS["overhead_ratio"], o["cost_logged"]
    return [
        f"| **Overhead**: one harness trial (`train.run`, full MLflow logging + artifacts) / "
        f"bare `model.fit`, wall time, median of {o['repeats']} paired runs "
        f"({o['epochs']} epochs, {o['train_reviews']:,} train + {o['val_reviews']:,} val reviews) "
        f"| **{o['ratio']:.3f}** (trial {median(o['trial']['wall_s']):.1f} s vs bare "
        f"{bare:.1f} s; pairs: {', '.join(f'{r:.3f}' for r in o['ratio_each'])}) "
        f"| <= {target} | {ok(o['met'])} |",
        f"| Overhead, ratio of the fastest runs / of CPU times | {o['ratio_of_minimums']:.3f} / "
        f"{o['ratio_cpu']:.3f} | | |",
        f"| Overhead from the harness's own cost: 1 + time outside `fit` / bare fit "
        f"(`fit` inside the trial / bare: {median(o['trial_fit_s']) / bare:.3f}) "
        f"| {own_cost:.3f} | <= {target} | {ok(own_cost <= target)} |",
        f"| Harness time outside `fit` per trial (load, split, MLflow, plots, model) "
        f"| {outside:.2f} s | | |",
        f"| Cost logged per trial (`duration_s`, `seconds_per_epoch`, `param_count`) "
        f"| {cost['duration_s']:.1f} s, {cost['seconds_per_epoch']:.2f} s, "
        f"{cost['param_count']:,.0f} | all logged | {ok(o['cost_logged_complete'])} |",
    ]
