"""Benchmarks: the harness costs nothing, the data pipeline is fast, sweeps finish sooner.

One invocation, one machine, one data set:

* **data** - first load (read + tokenise every review into a cold cache) and cached load;
* **overhead** - a bare `model.fit` of the base config (plain Keras, NumPy inputs, no callbacks)
  against the same config as one harness trial (`sweep.train.run`: a tracked MLflow run with
  every metric and artifact), both warm, same seed, epochs and batch size, in alternating order,
  median of paired ratios;
* **pipeline** - NumPy arrays into `model.fit` (what `sweep.train.fit` does) against a
  hand-built `tf.data` pipeline, the alternative it was measured against;
* **sweeps** - trials per hour and peak memory of `smoke` and `dim_search` (`python -m sweep`
  in a subprocess each, so its peak RSS is its own);
* **search** - Hyperband against random search on the same space and epoch budget;
* **bucketing** - fixed padding against length-bucketed batches (`--sections bucketing`);
* **pruning** - median pruning against none: the same random search (same seed, so the same
  trials), the epochs spent and the best objective both ways.

Results are printed as JSON (and written to `--out`) and as markdown tables into `--readme`,
between the results markers (the rest of the file is left as it is).

    python benchmarks/run.py                   # the full benchmark (~15 min on 2 cores)
    python benchmarks/run.py --data DIR --epochs 1 --quick --out r.json --readme r.md  # ~2 min
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "aclImdb_v1_labeled.tar.gz"
MARK_START, MARK_END = "<!-- results:start -->", "<!-- results:end -->"
BUCKETING_MARKS = ("<!-- bucketing:start -->", "<!-- bucketing:end -->")
PRUNING_MARKS = ("<!-- pruning:start -->", "<!-- pruning:end -->")
TARGETS = {
    "overhead_ratio": 1.05,
    "first_load_s": 10.0,
    "cached_load_s": 1.0,
    "pruning_epochs": 0.6,  # epochs spent with median pruning / without
}
#: Overrides that shrink every config to seconds (`--quick`, for the test suite).
QUICK = [
    "data.num_words=64",
    "data.seq_len=16",
    "model.embedding_dim=8",
    "model.attention.output_dim=8",
    "train.batch_size=32",
    "train.learning_rate=0.01",
]
#: The search-efficiency space: attention width x scaling constant (16 combinations).
SEARCH_SPACE = (
    "search.space={"
    "model.attention.output_dim:{type:choice,values:[16,32,64,128]},"
    "model.attention.scale:{type:choice,values:[none,sqrt_dk,8.0,learned]}}"
)

SPACE_LABEL = "search.space=<output_dim x scale>"
#: The pruning space: a learning-rate range wide enough that its low end learns little in a few
#: epochs (the trials pruning is for), x attention width.
PRUNING_SPACE = (
    "search.space={"
    "train.learning_rate:{type:float,min:1.0e-5,max:3.0e-2,sampling:log},"
    "model.attention.output_dim:{type:choice,values:[16,64]}}"
)
#: How spaces are shown in the commands the report prints.
SPACE_LABELS = {
    SEARCH_SPACE: SPACE_LABEL,
    PRUNING_SPACE: "search.space=<learning_rate x output_dim>",
}

log = logging.getLogger("benchmarks")


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """`fn()`'s result, wall seconds and CPU seconds of this process (every thread)."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def rounded(value: Any, digits: int = 3) -> Any:
    """Floats rounded for the report, recursively."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def machine() -> dict[str, Any]:
    """What the numbers were measured on (cores, load: the CPU may be shared)."""
    import keras
    import tensorflow as tf

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": model,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf_threads_intra_inter": [
            tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
        ],
    }


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


class Bench:
    """The shared settings of one invocation: data, scratch space, sizes."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.data = Path(args.data).expanduser().resolve()
        self.cache = work / "cache"
        self.quick: list[str] = list(QUICK) if args.quick else []
        self.repeats = 1 if args.quick else args.repeats
        quick_epochs = args.epochs or 1
        self.sweep_epochs = quick_epochs if args.quick else args.sweep_epochs
        self.pipeline_epochs = quick_epochs if args.quick else args.pipeline_epochs
        self.pipeline_repeats = 1 if args.quick else args.pipeline_repeats
        self.search_epochs = quick_epochs if args.quick else args.search_epochs

    def quick_limit(self) -> list[str]:
        """A small slice for warm-up runs (the `--quick` data is small already)."""
        return [] if self.args.quick else ["data.limit=400"]

    def store(self, name: str) -> list[str]:
        """Overrides that keep a run's MLflow store and sweep state under the scratch dir."""
        where = self.work / name
        return [
            f"tracking.uri=sqlite:///{where / 'mlflow.db'}",
            f"tracking.artifact_root={where / 'artifacts'}",
            f"sweep.dir={where / 'sweeps'}",
        ]

    def overrides(self, *extra: str) -> list[str]:
        return [
            f"data.path={self.data}",
            f"data.cache_dir={self.cache}",
            "train.verbose=0",
            *self.quick,
            *extra,
        ]


def bench_data(b: Bench) -> dict[str, Any]:
    """First load into a cold cache, then cached loads (median), then one split + pad."""
    from sweep import data, train
    from sweep.config import compose_config

    cfg = compose_config(b.overrides())
    b.cache.mkdir(parents=True, exist_ok=True)
    assert not any(b.cache.iterdir()), "the first load must find a cold cache"

    def load() -> data.Encoded:
        return data.load_encoded(
            source=cfg.data.source,
            path=cfg.data.path,
            num_words=cfg.data.num_words,
            cache_dir=cfg.data.cache_dir,
            seed=cfg.seed,
        )

    first, first_s, _ = measure(load)
    assert not first.from_cache
    cached_s = []
    for _ in range(3):
        again, seconds, _ = measure(load)
        assert again.from_cache and again.fingerprint == first.fingerprint
        cached_s.append(seconds)
    _, arrays_s, _ = measure(lambda: train.arrays(again, cfg))

    def split_then_pad() -> list[Any]:  # how `train.arrays` did it before: gather, then pad
        parts = data.split_indices(again.y_train, cfg.data.val_fraction, seed=cfg.seed)
        return [
            data.pad(
                again.train.take(rows), cfg.data.seq_len, cfg.data.padding, cfg.data.truncating
            )
            for rows in parts
        ]

    _, before_s, _ = measure(split_then_pad)
    result = {
        "reviews": len(first.train) + len(first.test),
        "num_words": cfg.data.num_words,
        "first_load_s": first_s,
        "cached_load_s": median(cached_s),
        "cached_load_s_each": cached_s,
        "split_and_pad_s": arrays_s,
        "split_and_pad_s_before": before_s,
    }
    result["first_load_met"] = first_s <= TARGETS["first_load_s"]
    result["cached_load_met"] = result["cached_load_s"] <= TARGETS["cached_load_s"]
    return result


def tfdata_fit(model: Any, cfg: Any, xy: Any) -> Any:
    """The hand-built `tf.data` input pipeline `train.fit` was measured against (and kept out):
    shuffled with the seed each epoch, batched, prefetched."""
    import tensorflow as tf

    def batches(x: Any, y: Any, shuffle: bool) -> Any:
        data = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            data = data.shuffle(len(x), seed=cfg.seed, reshuffle_each_iteration=True)
        return data.batch(cfg.train.batch_size).prefetch(tf.data.AUTOTUNE)

    return model.fit(
        batches(xy.x_train, xy.y_train, True),
        epochs=cfg.train.epochs,
        verbose=0,
        validation_data=batches(xy.x_val, xy.y_val, False),
        shuffle=False,
    )


Timing = tuple[float, float, float]  # wall s, CPU s, best val_accuracy


def numpy_fit(model: Any, cfg: Any, xy: Any) -> tuple[Any, float, float]:
    """`model.fit` on the padded NumPy arrays, no callbacks: its history, wall and CPU seconds."""
    return measure(
        lambda: model.fit(
            xy.x_train,
            xy.y_train,
            batch_size=cfg.train.batch_size,
            epochs=cfg.train.epochs,
            verbose=0,
            validation_data=(xy.x_val, xy.y_val),
        )
    )


def bare_fit(cfg: Any, xy: Any) -> Timing:
    """Plain Keras: the config's model fitted on the NumPy arrays, no callbacks, nothing logged."""
    import keras

    from sweep.model import build_model

    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg)
    history, wall, cpu = numpy_fit(model, cfg, xy)
    return wall, cpu, max(history.history["val_accuracy"])


def paired(
    kinds: dict[str, Callable[[], Timing]], repeats: int, label: str
) -> dict[str, dict[str, list[float]]]:
    """Each kind once per repeat, the order reversed every other repeat (neither always first)."""
    measured: dict[str, dict[str, list[float]]] = {
        k: {"wall_s": [], "cpu_s": [], "best_val_accuracy": []} for k in kinds
    }
    order = list(kinds)
    for repeat in range(repeats):
        for kind in order if repeat % 2 == 0 else order[::-1]:
            wall, cpu, best = kinds[kind]()
            for key, value in zip(measured[kind], (wall, cpu, best), strict=True):
                measured[kind][key].append(value)
            log.info("%s repeat %d %s: %.2f s wall, %.2f s CPU", label, repeat + 1, kind, wall, cpu)
    return measured


def ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


def bench_overhead(b: Bench) -> dict[str, Any]:
    """Bare `model.fit` vs one harness trial (`train.run`) of the same config, both warm."""
    from mlflow.tracking import MlflowClient

    from sweep import train
    from sweep.config import compose_config

    extra = ["name=bench_overhead", *b.store("overhead")]
    if b.args.epochs:
        extra.append(f"train.epochs={b.args.epochs}")
    if b.args.limit:
        extra.append(f"data.limit={b.args.limit}")
    cfg = compose_config(b.overrides(*extra))
    xy = train.arrays(train.load(cfg), cfg)

    def trial() -> Timing:
        best, wall, cpu = measure(lambda: train.run(cfg))
        return wall, cpu, best

    # Warm-up: imports, the MLflow store, plotting and graph tracing are paid here, by neither.
    warm = compose_config(
        b.overrides("train.epochs=1", "name=bench_warmup", *b.store("overhead"), *b.quick_limit())
    )
    train.run(warm)
    bare_fit(warm, train.arrays(train.load(warm), warm))

    measured = paired({"bare": lambda: bare_fit(cfg, xy), "trial": trial}, b.repeats, "overhead")
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.name)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    logged = [r.data.metrics for r in runs]
    cost_keys = ("duration_s", "seconds_per_epoch", "param_count", "epochs_run")
    trial_fit = [m["duration_s"] for m in logged]
    bare_w, trial_w = measured["bare"]["wall_s"], measured["trial"]["wall_s"]
    each = ratios(trial_w, bare_w)
    result: dict[str, Any] = {
        "epochs": cfg.train.epochs,
        "batch_size": cfg.train.batch_size,
        "seq_len": cfg.data.seq_len,
        "limit": cfg.data.limit,
        "train_reviews": len(xy.x_train),
        "val_reviews": len(xy.x_val),
        "repeats": b.repeats,
        "ratio": median(each),
        "ratio_each": each,
        "ratio_of_minimums": min(trial_w) / min(bare_w),
        "ratio_cpu": median(ratios(measured["trial"]["cpu_s"], measured["bare"]["cpu_s"])),
        "trial_fit_s": trial_fit,
        "trial_outside_fit_s": [t - f for t, f in zip(trial_w, trial_fit, strict=True)],
        "cost_logged": {k: logged[-1].get(k) for k in cost_keys},
        "cost_logged_complete": all(k in m for m in logged for k in cost_keys[:3]),
        **measured,
    }
    result["met"] = result["ratio"] <= TARGETS["overhead_ratio"]
    return result


def bench_pipeline(b: Bench) -> dict[str, Any]:
    """NumPy arrays into `model.fit` (what `train.fit` does) vs a hand-built `tf.data` pipeline."""
    from sweep import train
    from sweep.config import compose_config

    extra = [f"train.epochs={b.pipeline_epochs}"]
    if b.args.limit:
        extra.append(f"data.limit={b.args.limit}")
    cfg = compose_config(b.overrides(*extra))
    xy = train.arrays(train.load(cfg), cfg)

    def tfdata() -> Timing:
        import keras

        from sweep.model import build_model

        keras.utils.set_random_seed(cfg.seed)
        model = build_model(cfg)
        history, wall, cpu = measure(lambda: tfdata_fit(model, cfg, xy))
        return wall, cpu, max(history.history["val_accuracy"])

    measured = paired(
        {"numpy": lambda: bare_fit(cfg, xy), "tfdata": tfdata}, b.pipeline_repeats, "pipeline"
    )
    numpy_w, tfdata_w = measured["numpy"]["wall_s"], measured["tfdata"]["wall_s"]
    return {
        "epochs": cfg.train.epochs,
        "repeats": b.pipeline_repeats,
        "tfdata_ratio": median(ratios(tfdata_w, numpy_w)),
        "tfdata_ratio_cpu": median(ratios(measured["tfdata"]["cpu_s"], measured["numpy"]["cpu_s"])),
        "numpy_s_per_epoch": median(numpy_w) / cfg.train.epochs,
        "tfdata_s_per_epoch": median(tfdata_w) / cfg.train.epochs,
        "kept": "numpy" if median(ratios(tfdata_w, numpy_w)) >= 1 else "tfdata",
        **measured,
    }


def _peak_rss_mb(pid: int) -> float | None:
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


def _wait(proc: subprocess.Popen, timeout_s: float) -> tuple[Any, float | None]:
    """Wait for `proc`: its own resource usage (CPU) and peak RSS; killed on timeout."""
    peak: list[float] = []

    def watch() -> None:
        while proc.returncode is None:
            mb = _peak_rss_mb(proc.pid)
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
    return usage, max(peak) if peak else None


def run_sweep(b: Bench, label: str, overrides: Sequence[str]) -> dict[str, Any]:
    """`python -m sweep OVERRIDES` in a subprocess; its wall time, peak memory and MLflow record."""
    from mlflow.tracking import MlflowClient

    from sweep.config import compose_config

    args = [*b.overrides(*overrides), f"name={label}", *b.store(label)]
    cfg = compose_config(args)
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
        usage, peak_mb = _wait(proc, b.args.sweep_timeout)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = output.read_text()[-3000:]
        raise RuntimeError(f"sweep {label} exited {proc.returncode}:\n{tail}")

    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    experiment = client.get_experiment_by_name(label)
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    finished = [r for r in trials if r.info.status == "FINISHED"]
    trial_s = [(r.info.end_time - r.info.start_time) / 1000 for r in finished]
    metrics = [r.data.metrics for r in finished]
    best = [m["best_val_accuracy"] for m in metrics if "best_val_accuracy" in m]
    return {
        "command": " ".join(["python -m sweep", *(SPACE_LABELS.get(a, a) for a in overrides)]),
        "tuner": cfg.search.tuner,
        "trials": len(trials),
        "finished": len(finished),
        "pruned": sum(r.data.tags.get("pruned") == "true" for r in finished),
        "epochs_run": sum(m.get("epochs_run", 0.0) for m in metrics),
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "trials_per_hour": 3600 * len(finished) / wall,
        "mean_trial_s": median(trial_s) if len(trial_s) == 1 else statistics.fmean(trial_s),
        "trials_per_hour_in_search": 3600 * len(finished) / max(sum(trial_s), 1e-9),
        "peak_rss_mb": peak_mb,
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


def bench_sweeps(b: Bench) -> dict[str, Any]:
    """Throughput of the shipped `smoke` and `dim_search` experiments."""
    quick = ["data.limit=null", "search.max_trials=2"] if b.args.quick else []
    # trials per hour measure the search: dim_search's seed repeats come after it
    dim = [f"train.epochs={b.sweep_epochs}", "search.replicates.enabled=false"]
    if b.args.dim_limit and not b.args.quick:
        dim.append(f"data.limit={b.args.dim_limit}")
    for experiment in ("smoke", "dim_search"):
        prewarm(b, [f"+experiment={experiment}", *quick])
    return {
        "smoke": run_sweep(b, "smoke", ["+experiment=smoke", *quick]),
        "dim_search": run_sweep(b, "dim_search", ["+experiment=dim_search", *dim, *quick]),
    }


def bench_search(b: Bench) -> dict[str, Any]:
    """Hyperband, then random search given (about) the epochs Hyperband spent."""
    epochs = b.search_epochs
    common = [
        "+experiment=smoke",
        SEARCH_SPACE,
        f"train.epochs={epochs}",
        "search.patience=0",
        "data.limit=null" if b.args.quick else f"data.limit={b.args.search_limit}",
    ]
    hyperband = run_sweep(b, "search_hyperband", [*common, "search.tuner=hyperband"])
    trials = max(1, round(hyperband["epochs_run"] / epochs))
    random = run_sweep(
        b, "search_random", [*common, "search.tuner=random", f"search.max_trials={trials}"]
    )
    return {
        "space": "output_dim {16,32,64,128} x scale {none,sqrt_dk,8.0,learned}",
        "max_epochs": epochs,
        "limit": None if b.args.quick else b.args.search_limit,
        "hyperband": hyperband,
        "random": random,
    }


def trial_rows(b: Bench, label: str) -> list[dict[str, Any]]:
    """Each finished trial of sweep `label` in start order: its values, epochs, best, pruning."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{b.work / label / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(label)
    runs = client.search_runs(
        [experiment.experiment_id],
        "attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
        max_results=5000,
    )
    return [
        {
            "learning_rate": f"{float(r.data.params['train.learning_rate']):.3g}",
            "output_dim": int(r.data.params["model.attention.output_dim"]),
            "epochs_run": r.data.metrics.get("epochs_run"),
            "best_val_accuracy": r.data.metrics.get("best_val_accuracy"),
            "pruned_at_epoch": r.data.tags.get("pruned_at_epoch"),
        }
        for r in runs
        if "mlflow.parentRunId" in r.data.tags
    ]


def bench_pruning(b: Bench) -> dict[str, Any]:
    """The same random search (seed, space, trials) without pruning, then with median pruning:
    the epochs spent (the trials' logged `epochs_run`) and the best objective both ways."""
    epochs = 2 if b.args.quick else b.args.pruning_epochs
    limit = None if b.args.quick else b.args.pruning_limit
    common = [
        "+experiment=smoke",
        PRUNING_SPACE,
        "search.tuner=random",
        f"search.max_trials={3 if b.args.quick else b.args.pruning_trials}",
        "search.initial=[]",
        f"train.epochs={epochs}",
        "search.patience=0",
        f"data.limit={limit}" if limit else "data.limit=null",
    ]
    from sweep.pruning import MIN_TRIALS

    prewarm(b, common)
    result: dict[str, Any] = {"max_epochs": epochs, "limit": limit, "min_trials": MIN_TRIALS}
    for pruning in ("none", "median"):
        label = f"pruning_{pruning}"
        result[pruning] = run_sweep(b, label, [*common, f"search.pruning={pruning}"])
        result[pruning]["trials_each"] = trial_rows(b, label)
    none, pruned = result["none"], result["median"]
    result["epochs_ratio"] = pruned["epochs_run"] / max(none["epochs_run"], 1.0)
    result["best_gap"] = none["best_val_accuracy"] - pruned["best_val_accuracy"]
    best, val = none["best_val_accuracy"], max(1, round((limit or 0) * 0.2))
    result["val_reviews"] = val if limit else None
    result["noise"] = (best * (1 - best) / val) ** 0.5  # one standard error of the best accuracy
    result["met"] = (
        result["epochs_ratio"] <= TARGETS["pruning_epochs"]
        and abs(result["best_gap"]) <= result["noise"]
    )
    return result


#: The bucketing section's configurations: the base config, and long_reviews' settings.
LONG = [
    "model.attention.output_dim=64",
    "model.attention.scale=sqrt_dk",
    "model.attention.initializer=glorot_uniform",
    "train.learning_rate=5e-4",
]
BUCKETING = {64: [], 512: LONG, 800: LONG}


def bare_masked_fit(cfg: Any, xy: Any) -> Timing:
    """Plain Keras of the same shape, as a user would write it without the harness: Embedding
    (mask_zero) -> a minimal masked scaled dot-product attention layer -> pooling -> Dropout ->
    Dense, NumPy inputs, no callbacks. (Keras's own `Attention` layer on Q/K/V `Dense`
    projections was measured too: 2.2x slower than this at seq_len 512, so no fair yardstick.)"""
    import keras
    from keras import ops

    class BareAttention(keras.layers.Layer):
        def __init__(self, units: int) -> None:
            super().__init__()
            self.units, self.supports_masking = units, True

        def build(self, input_shape: Any) -> None:
            self.kernel = self.add_weight(shape=(3, input_shape[-1], self.units))

        def call(self, x: Any, mask: Any = None) -> Any:
            q = ops.matmul(x, self.kernel[0]) * (self.units**-0.5)
            scores = ops.matmul(q, ops.swapaxes(ops.matmul(x, self.kernel[1]), 1, 2))
            if mask is not None:
                scores = scores + ops.expand_dims((1.0 - ops.cast(mask, "float32")) * -1e9, 1)
            return ops.matmul(ops.softmax(scores), ops.matmul(x, self.kernel[2]))

    keras.utils.set_random_seed(cfg.seed)
    tokens = keras.Input((cfg.data.seq_len,), dtype="int32")
    x = keras.layers.Embedding(cfg.data.num_words, cfg.model.embedding_dim, mask_zero=True)(tokens)
    x = BareAttention(cfg.model.attention.output_dim)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dropout(cfg.model.dropout)(x)
    model = keras.Model(tokens, keras.layers.Dense(2, activation="softmax")(x))
    model.compile(
        keras.optimizers.Adam(cfg.train.learning_rate),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history, wall, cpu = numpy_fit(model, cfg, xy)
    return wall, cpu, history.history["val_accuracy"][-1]


def harness_fit(cfg: Any, xy: Any, jit: bool = False) -> Timing:
    """The harness's training path (`train.fit`: its model, its batching, its callbacks)."""
    import keras

    from sweep import train
    from sweep.model import build_model

    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg)
    if jit:
        model.jit_compile = True
    history, wall, cpu = measure(
        lambda: train.fit(model, cfg, xy, verbose=0, callbacks=[train.StopOnInterrupt()])
    )
    return wall, cpu, history.history["val_accuracy"][-1]


def bucketing_row(b: Bench, seq_len: int, epochs: int) -> dict[str, Any]:
    """One sequence length: fixed vs bucketed, paired; at 512 also bare Keras and XLA."""
    from sweep import train
    from sweep.config import compose_config

    extra = [f"data.seq_len={seq_len}", f"train.epochs={epochs}", *BUCKETING.get(seq_len, [])]
    if b.args.limit:
        extra.append(f"data.limit={b.args.limit}")
    fixed = compose_config(b.overrides(*extra, "train.batching=fixed"))
    bucketed = compose_config(b.overrides(*extra, "train.batching=bucketed"))
    xy = train.arrays(train.load(fixed), fixed)
    kinds = {"fixed": lambda: harness_fit(fixed, xy), "bucketed": lambda: harness_fit(bucketed, xy)}
    if seq_len == 512 or b.args.quick:
        kinds["bare_fixed"] = lambda: bare_masked_fit(fixed, xy)
    if b.args.xla and (seq_len == 512 or b.args.quick):
        kinds["bucketed_xla"] = lambda: harness_fit(bucketed, xy, jit=True)
    measured = paired(kinds, b.repeats, f"bucketing {seq_len}")
    wall = {k: measured[k]["wall_s"] for k in kinds}
    row: dict[str, Any] = {
        "s_per_epoch": {k: median(w) / epochs for k, w in wall.items()},
        "val_accuracy": {k: median(measured[k]["best_val_accuracy"]) for k in kinds},
        "bucketed_over_fixed": median(ratios(wall["bucketed"], wall["fixed"])),
        "tokens_kept": float(xy.train.lengths.sum() / (seq_len * len(xy.train))),
        "train_reviews": len(xy.train),
        "val_reviews": len(xy.val),
        **measured,
    }
    if "bare_fixed" in kinds:
        row["fixed_over_bare"] = median(ratios(wall["fixed"], wall["bare_fixed"]))
    if "bucketed_xla" in kinds:
        row["xla_over_bucketed"] = median(ratios(wall["bucketed_xla"], wall["bucketed"]))
    return row


def bench_bucketing(b: Bench) -> dict[str, Any]:
    """Seconds per epoch, fixed padding vs length buckets, at seq_len 64 / 512 / 800 (the base
    config, long_reviews' settings); at 512 also a bare masked Keras model (fixed padding) and
    XLA (bucketed); validation accuracy after the last epoch of each."""
    from sweep import train
    from sweep.config import compose_config

    epochs = b.args.epochs or 2
    warm = compose_config(b.overrides("train.epochs=1", *b.quick_limit()))
    harness_fit(warm, train.arrays(train.load(warm), warm))  # imports and first tracing
    results: dict[str, Any] = {"epochs": epochs, "repeats": b.repeats}
    chosen = [int(n) for n in b.args.seq_lens.split(",")] if b.args.seq_lens else list(BUCKETING)
    for seq_len in [16] if b.args.quick else chosen:
        results[str(seq_len)] = bucketing_row(b, seq_len, epochs)
    return results


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MB"


def _ok(met: bool) -> str:
    return "yes" if met else "**no**"


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown tables (what `benchmarks/README.md` shows)."""
    m, d, o, p = (results[k] for k in ("machine", "data", "overhead", "pipeline"))
    sweeps, search = results["sweeps"], results["search"]
    load = ", ".join(f"{x:.1f}" for x in m["load_average_at_start"])
    end = ", ".join(f"{x:.1f}" for x in m["load_average_at_end"])
    cost = o["cost_logged"]
    bare = median(o["bare"]["wall_s"])
    lines = [
        f"Measured {m['date']} on {m['cpu']}, **{m['cores']} cores** (load average "
        f"{load} at start, {end} at end: the CPU was shared), Python {m['python']}, "
        f"TensorFlow {m['tensorflow']}, Keras {m['keras']}. "
        f"`{results['command']}` took **{results['total_s'] / 60:.1f} min**.",
        "",
        "| Benchmark | Measured | Target | Met |",
        "|---|---|---|---|",
        f"| **Overhead**: one harness trial (`train.run`, full MLflow logging + artifacts) / "
        f"bare `model.fit`, wall time, median of {o['repeats']} paired runs "
        f"({o['epochs']} epochs, {o['train_reviews']:,} train + {o['val_reviews']:,} val reviews) "
        f"| **{o['ratio']:.3f}** (trial {median(o['trial']['wall_s']):.1f} s vs bare "
        f"{median(o['bare']['wall_s']):.1f} s; pairs: "
        f"{', '.join(f'{r:.3f}' for r in o['ratio_each'])}) "
        f"| <= {TARGETS['overhead_ratio']} | {_ok(o['met'])} |",
        f"| Overhead, ratio of the fastest runs / of CPU times | {o['ratio_of_minimums']:.3f} / "
        f"{o['ratio_cpu']:.3f} | | |",
        f"| Overhead from the harness's own cost: 1 + time outside `fit` / bare fit "
        f"(`fit` inside the trial / bare: {median(o['trial_fit_s']) / bare:.3f}) "
        f"| {1 + median(o['trial_outside_fit_s']) / bare:.3f} | <= {TARGETS['overhead_ratio']} "
        f"| {_ok(1 + median(o['trial_outside_fit_s']) / bare <= TARGETS['overhead_ratio'])} |",
        f"| Harness time outside `fit` per trial (load, split, MLflow, plots, model) "
        f"| {median(o['trial_outside_fit_s']):.2f} s | | |",
        f"| Cost logged per trial (`duration_s`, `seconds_per_epoch`, `param_count`) "
        f"| {cost['duration_s']:.1f} s, {cost['seconds_per_epoch']:.2f} s, "
        f"{cost['param_count']:,.0f} | all logged | {_ok(o['cost_logged_complete'])} |",
        f"| Input pipeline: hand-built `tf.data` (shuffle, batch, prefetch) / NumPy arrays into "
        f"`model.fit`, {p['epochs']} epochs, median of {p['repeats']} pairs "
        f"| {p['tfdata_ratio']:.3f} wall, {p['tfdata_ratio_cpu']:.3f} CPU "
        f"({p['tfdata_s_per_epoch']:.2f} vs {p['numpy_s_per_epoch']:.2f} s/epoch) "
        f"| < 1 to adopt | `train.fit` uses **{p['kept']}** |",
        f"| **Data**: first load (read + tokenise {d['reviews']:,} reviews, cold cache) "
        f"| {d['first_load_s']:.2f} s | <= {TARGETS['first_load_s']:.0f} s "
        f"| {_ok(d['first_load_met'])} |",
        f"| Data: cached load (median of 3) | {d['cached_load_s']:.2f} s "
        f"| <= {TARGETS['cached_load_s']:.0f} s | {_ok(d['cached_load_met'])} |",
        f"| Data: split + pad per run (`train.arrays`) | {d['split_and_pad_s']:.3f} s "
        f"(was {d['split_and_pad_s_before']:.3f} s) | | |",
        "",
        "| Sweep | Command | Trials | Wall | Trials / hour | Trials / hour, trials only "
        "| s / epoch | Peak RSS | Best val acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    named = [*sweeps.items(), *((f"search: {k}", search[k]) for k in ("hyperband", "random"))]
    for name, s in named:
        lines.append(
            f"| {name} | `{s['command']}` | {s['finished']}/{s['trials']} | {s['wall_s']:.0f} s "
            f"| {s['trials_per_hour']:.0f} | {s['trials_per_hour_in_search']:.0f} "
            f"| {s['mean_seconds_per_epoch']:.2f} | {_mb(s['peak_rss_mb'])} "
            f"| {s['best_val_accuracy']:.4f} |"
        )
    hb, rs = search["hyperband"], search["random"]
    lines += [
        "",
        f"| Search efficiency: {search['space']}, up to {search['max_epochs']} epochs a trial, "
        f"data.limit={search['limit']} | Trials | Epochs spent | Best val acc | Wall |",
        "|---|---|---|---|---|",
        f"| Hyperband | {hb['finished']} | {hb['epochs_run']:.0f} | "
        f"{hb['best_val_accuracy']:.4f} | {hb['wall_s']:.0f} s |",
        f"| Random search (as many epochs) | {rs['finished']} | {rs['epochs_run']:.0f} | "
        f"{rs['best_val_accuracy']:.4f} | {rs['wall_s']:.0f} s |",
    ]
    return "\n".join(lines) + "\n"


def bucketing_markdown(results: dict[str, Any]) -> str:
    """The bucketing section as a table (its own block in `benchmarks/README.md`)."""
    r, m = results["bucketing"], results["machine"]
    rows = [(k, v) for k, v in r.items() if isinstance(v, dict)]
    first = rows[0][1]
    lines = [
        f"Measured {m['date']}, {m['cores']} cores, `{results['command']}`: "
        f"{r['epochs']} epochs per fit, {r['repeats']} paired repeats in alternating order, "
        f"medians; {first['train_reviews']:,} training and {first['val_reviews']:,} validation "
        "reviews; validation accuracy after the last epoch.",
        "",
        "| seq_len | tokens kept by fixed padding | fixed s/epoch | bucketed s/epoch "
        "| bucketed / fixed, wall | target | bucketed / fixed, CPU | val acc fixed "
        "| val acc bucketed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    targets = {"64": "<= 1.02", "512": "<= 0.45", "800": "<= 0.35"}
    for seq_len, row in rows:
        t, acc = row["s_per_epoch"], row["val_accuracy"]
        lines.append(
            f"| {seq_len} | {row['tokens_kept']:.0%} | {t['fixed']:.1f} | {t['bucketed']:.1f} "
            f"| **{row['bucketed_over_fixed']:.2f}** | {targets.get(seq_len, '')} "
            f"| {median(ratios(row['bucketed']['cpu_s'], row['fixed']['cpu_s'])):.2f} "
            f"| {acc['fixed']:.4f} | {acc['bucketed']:.4f} |"
        )
    for seq_len, row in rows:
        if "fixed_over_bare" in row:
            t = row["s_per_epoch"]
            lines += [
                "",
                f"At seq_len {seq_len}: the harness with fixed padding / a bare masked Keras "
                f"model of the same shape: **{row['fixed_over_bare']:.3f}** (target <= 1.05; "
                f"{t['fixed']:.1f} vs {t['bare_fixed']:.1f} s/epoch).",
            ]
        if "xla_over_bucketed" in row:
            lines[-1] += (
                f" XLA (`jit_compile`) on bucketed batches / without: "
                f"{row['xla_over_bucketed']:.2f} ({row['s_per_epoch']['bucketed_xla']:.1f} "
                f"s/epoch, val acc {row['val_accuracy']['bucketed_xla']:.4f})."
            )
    return "\n".join(lines) + "\n"


def pruning_markdown(results: dict[str, Any]) -> str:
    """The pruning section as a table (its own block in `benchmarks/README.md`)."""
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
    for pruning in ("none", "median"):
        s = r[pruning]
        lines.append(
            f"| {pruning} | {s['finished']}/{s['trials']} | {s['pruned']} | {s['epochs_run']:.0f} "
            f"| {s['best_val_accuracy']:.4f} | {s['wall_s']:.0f} s |"
        )
    gap_ok = abs(r["best_gap"]) <= r["noise"]
    lines += [
        "",
        f"Epochs spent with median pruning / without: **{r['epochs_ratio']:.2f}** (target <= "
        f"{TARGETS['pruning_epochs']}: {_ok(r['epochs_ratio'] <= TARGETS['pruning_epochs'])}); "
        f"best val acc without minus with: {r['best_gap']:+.4f} (target: within one standard "
        f"error of the best accuracy, ±{r['noise']:.4f}: {_ok(gap_ok)}).",
    ]
    return "\n".join(lines) + "\n"


def write_readme(path: Path, table: str, marks: tuple[str, str] = (MARK_START, MARK_END)) -> None:
    """Replace the text between the results markers (a new file is just the results)."""
    start, end = marks
    block = f"{start}\n{table}{end}"
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{start}\n{end}\n"
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

SECTIONS = ("data", "overhead", "pipeline", "sweeps", "search", "bucketing", "pruning")


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="aclImdb .tar.gz or directory")
    p.add_argument(
        "--epochs", type=int, default=None, help="overhead epochs (default: the base config's 5)"
    )
    p.add_argument("--limit", type=int, default=None, help="data.limit, overhead and pipeline")
    p.add_argument("--repeats", type=int, default=2, help="paired overhead runs (median)")
    p.add_argument("--pipeline-epochs", type=int, default=2, help="epochs, pipeline section")
    p.add_argument("--pipeline-repeats", type=int, default=2, help="paired pipeline runs")
    p.add_argument("--sweep-epochs", type=int, default=1, help="train.epochs of dim_search")
    p.add_argument("--dim-limit", type=int, default=None, help="data.limit of dim_search")
    p.add_argument("--search-epochs", type=int, default=3, help="max epochs, search section")
    p.add_argument("--search-limit", type=int, default=5000, help="data.limit, search section")
    p.add_argument("--pruning-trials", type=int, default=20, help="trials, pruning section")
    p.add_argument("--pruning-epochs", type=int, default=6, help="epochs, pruning section")
    p.add_argument("--pruning-limit", type=int, default=5000, help="data.limit, pruning section")
    p.add_argument("--sweep-timeout", type=float, default=1200.0, help="seconds per sweep")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--readme", default=str(ROOT / "benchmarks" / "README.md"))
    p.add_argument("--work", default=None, help="scratch dir (default: a new temp dir)")
    p.add_argument("--quick", action="store_true", help="tiny models, 1 repeat, 2 trials")
    p.add_argument("--from-json", default=None, help="only rewrite --readme from this JSON")
    p.add_argument("--xla", action="store_true", help="bucketing: also XLA at seq_len 512")
    p.add_argument("--seq-lens", default=None, help="bucketing: e.g. 64,512 (default 64,512,800)")
    p.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated, of: " + ", ".join(SECTIONS)
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.from_json:  # re-render the tables of an earlier run; nothing is measured
        results = json.loads(Path(args.from_json).read_text())
        report(results, Path(args.readme))
        return results
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("mlflow", "sweep", "absl", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-", dir=args.work) as scratch:
        b = Bench(args, Path(scratch))
        results: dict[str, Any] = {"machine": machine()}
        chosen = args.sections.split(",")
        for section, fn in zip(
            SECTIONS,
            (
                bench_data,
                bench_overhead,
                bench_pipeline,
                bench_sweeps,
                bench_search,
                bench_bucketing,
                bench_pruning,
            ),
            strict=True,
        ):
            if section not in chosen:
                continue
            log.info("section %s ...", section)
            results[section], seconds, _ = measure(lambda fn=fn: fn(b))
            log.info("section %s done in %.0f s", section, seconds)
    results["total_s"] = time.perf_counter() - started
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    shown = [a for a in (argv if argv is not None else sys.argv[1:])]
    results["command"] = " ".join(["python benchmarks/run.py", *shown])
    results = rounded(results)
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    report(results, Path(args.readme))
    return results


def report(results: dict[str, Any], readme: Path) -> None:
    """Rewrite the README blocks of the sections measured (the others keep their figures)."""
    if all(section in results for section in SECTIONS[:5]):
        write_readme(readme, markdown(results))
    if "bucketing" in results:
        write_readme(readme, bucketing_markdown(results), BUCKETING_MARKS)
    if "pruning" in results:
        write_readme(readme, pruning_markdown(results), PRUNING_MARKS)


if __name__ == "__main__":
    main()
