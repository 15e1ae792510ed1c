"""The typed config schema, registered in Hydra's ConfigStore, and the checks types cannot express.

Hydra merges every YAML in `conf/` over these dataclasses, so a typo'd key or a value of the
wrong type fails at composition. `validate` then checks ranges and the values that need Keras
to judge (initializers, scales), so that every bad value is reported in one line naming the key,
before any data is read or model built.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from sweep.data import SOURCES, VAL_SPLITS
from sweep.durations import parse_duration
from sweep.errors import ConfigError
from sweep.uris import check_tracking_uri

#: Longest sequence a run may ask for: attention is quadratic in it, so beyond this is a typo.
MAX_SEQ_LEN = 4096
#: Scale words the layer understands besides a positive number.
SCALE_WORDS = ("sqrt_dk", "none", "learned")
#: How reviews are batched: by length (needs masked padding) or padded to seq_len.
BATCHING = ("bucketed", "fixed")
#: Names are used as directory and MLflow experiment names; keep them to one safe path segment.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def _range(**rules: Any) -> dict[str, Any]:
    """A field's rules for `validate`: bounds gt, ge, le, lt and choices (None: no rule)."""
    return {k: v for k, v in rules.items() if v is not None}


@dataclass
class DataConfig:
    # where reviews come from: auto (path if given, else keras.datasets.imdb), files, keras
    source: str = field(default="auto", metadata=_range(choices=SOURCES))
    # the aclImdb .tar.gz or an extracted aclImdb/ directory
    path: str | None = None
    # vocabulary size including the 3 reserved indices (0 pad, 1 start, 2 out-of-vocabulary)
    num_words: int = field(default=20000, metadata=_range(ge=4))
    # tokens per review after padding/truncation (a hyperparameter: re-padded from the cache)
    seq_len: int = field(default=64, metadata=_range(ge=1, le=MAX_SEQ_LEN))
    # share of the training split held out for validation (model selection)
    val_fraction: float = field(default=0.2, metadata=_range(gt=0.0, lt=1.0))
    # movie: each movie wholly in training or validation (needs the archive's movie links);
    # random: a stratified random split; auto: movie where the links exist, else random
    val_split: str = field(default="auto", metadata=_range(choices=VAL_SPLITS))
    # stratified slice of N reviews per split, for smoke runs and tests
    limit: int | None = field(default=None, metadata=_range(ge=2))
    padding: str = field(default="pre", metadata=_range(choices=("pre", "post")))
    truncating: str = field(default="pre", metadata=_range(choices=("pre", "post")))
    # tokenised, unpadded reviews are cached here, keyed by a fingerprint of source and settings
    cache_dir: str = ".cache/data"


@dataclass
class AttentionConfig:
    # width of Q, K and V
    output_dim: int = field(default=128, metadata=_range(ge=1))
    # scores are divided by this: a positive number, sqrt_dk, none (1.0) or learned
    scale: Any = 8.0
    # any Keras initializer name or {class_name, config}; the original: uniform in ±0.05
    initializer: Any = field(
        default_factory=lambda: {
            "class_name": "RandomUniform",
            "config": {"minval": -0.05, "maxval": 0.05},
        }
    )


@dataclass
class ModelConfig:
    embedding_dim: int = field(default=128, metadata=_range(ge=1))
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    dropout: float = field(default=0.5, metadata=_range(ge=0.0, lt=1.0))
    # mask padding so it receives no attention and is left out of the average
    mask_padding: bool = True


@dataclass
class TrainConfig:
    optimizer: str = field(
        default="adam", metadata=_range(choices=("adam", "adamw", "sgd", "rmsprop", "nadam"))
    )
    learning_rate: float = field(default=2e-4, metadata=_range(gt=0.0))
    batch_size: int = field(default=32, metadata=_range(ge=1))
    epochs: int = field(default=5, metadata=_range(ge=1))
    # Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch
    verbose: int = field(default=2, metadata=_range(ge=0, le=2))
    # bucketed: batches of similar-length reviews, padded to their bucket (needs mask_padding);
    # fixed: every batch padded to data.seq_len. Default: bucketed whenever padding is masked.
    batching: str = field(
        default="${batching_for:${model.mask_padding}}", metadata=_range(choices=BATCHING)
    )


@dataclass
class TrackingConfig:
    # MLflow tracking URI: SQLite by default, or http://host:port for a server
    uri: str = "sqlite:///mlruns/mlflow.db"
    # where new experiments keep their artifacts (a local directory or a URI)
    artifact_root: str = "mlruns/artifacts"
    # which trained models to log: best (per sweep; the single run counts as best), all, none
    log_models: str = field(default="best", metadata=_range(choices=("best", "all", "none")))


@dataclass
class SearchParam:
    type: str = field(
        default=MISSING, metadata=_range(choices=("choice", "int", "float", "boolean"))
    )
    values: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    sampling: str = field(default="linear", metadata=_range(choices=("linear", "log")))


@dataclass
class ReplicatesConfig:
    # re-run the leaders with fresh seeds until best vs runner-up is decided (docs/replicates.md)
    enabled: bool = False
    top: int = field(default=2, metadata=_range(ge=2))  # leading configurations compared
    min_seeds: int = field(default=3, metadata=_range(ge=2))  # seeds each has before a verdict
    max_seeds: int = field(default=6, metadata=_range(ge=2))  # most seeds of one configuration
    max_runs: int = field(default=12, metadata=_range(ge=1))  # most repeats per command
    time_budget: str | None = None  # no repeat starts after it (90s, 30m, 2h; per command)
    alpha: float = field(default=0.05, metadata=_range(gt=0.0, lt=1.0))
    margin: float = field(default=0.01, metadata=_range(gt=0.0))  # "no difference" below it


@dataclass
class SearchConfig:
    tuner: str = field(
        default="random", metadata=_range(choices=("random", "bayesian", "hyperband", "grid"))
    )
    max_trials: int = field(default=10, metadata=_range(ge=1))
    objective: str = "val_accuracy"
    direction: str = field(default="max", metadata=_range(choices=("min", "max")))
    executions_per_trial: int = field(default=1, metadata=_range(ge=1))
    # epochs without improvement of the objective before a trial stops early (0: never)
    patience: int = field(default=2, metadata=_range(ge=0))
    # this many failed trials in a row stop the sweep
    max_consecutive_failures: int = field(default=3, metadata=_range(ge=1))
    # Hyperband's reduction factor
    hyperband_factor: int = field(default=3, metadata=_range(ge=2))
    # median: stop a trial whose best objective so far is worse than the median of the earlier
    # finished trials' objective at the same epoch (Vizier's median stopping rule); none: never
    pruning: str = field(default="none", metadata=_range(choices=("none", "median")))
    # epochs every trial runs before median pruning may stop it
    pruning_min_epochs: int = field(default=1, metadata=_range(ge=1))
    # config path -> how to search it
    space: dict[str, SearchParam] = field(default_factory=dict)
    # no trial starts once this much time has passed since this command's search began:
    # 90s, 30m, 2h, 1h30m (null: no limit); the trial running then finishes
    time_budget: str | None = None
    # points tried before the tuner's own: base (the config's own values, when they are points
    # of the space), {best_of: EXPERIMENT} (another sweep's best trial), {config.path: value}
    initial: list[Any] = field(default_factory=lambda: ["base"])
    replicates: ReplicatesConfig = field(default_factory=ReplicatesConfig)


@dataclass
class SweepConfig:
    # tuner state lives in <dir>/<name>/
    dir: str = "sweeps"
    # start the sweep afresh instead of resuming it (on purpose only)
    overwrite: bool = False
    # local parallel mode: N > 0 starts a chief and N worker processes on this machine
    workers: int = field(default=0, metadata=_range(ge=0))


@dataclass
class DistributedConfig:
    # none: one process runs the sweep; chief: serves trials (trains none); worker: trains them
    role: str = field(default="none", metadata=_range(choices=("none", "chief", "worker")))
    # the chief's Keras Tuner oracle, HOST:PORT: the chief binds it, workers connect to it
    oracle: str | None = None
    # a worker's unique, stable id: restarted with the same id, it takes its trial back
    worker_id: str | None = None
    # how long a worker waits for the chief's oracle and parent run before giving up
    connect_timeout_s: float = field(default=600.0, metadata=_range(gt=0.0))
    # TensorFlow threads for this process (null: TensorFlow's choice; sweep.workers: cores / N)
    threads: int | None = field(default=None, metadata=_range(ge=1))
    # sweep.workers: how often a worker that died is restarted (it then retries its trial)
    max_restarts: int = field(default=3, metadata=_range(ge=0))
    # a worker silent this long loses its trial: its run is KILLED, the trial queued again
    heartbeat_timeout_s: float = field(default=60.0, metadata=_range(ge=1.0))
    # how often one trial may lose its worker that way before it counts as FAILED
    max_requeues: int = field(default=3, metadata=_range(ge=0))


@dataclass
class ExportConfig:
    # how many of the best configurations to write as runnable Hydra configs
    top_k: int = field(default=3, metadata=_range(ge=1))
    # retrain the best configuration on the whole training split, evaluate once on test
    evaluate: bool = False
    # model registry name for that final model (default: attention-sweep-<name>)
    registered_model: str | None = None
    # the sweep's parent run to export (default: the newest sweep of this experiment)
    parent_run_id: str | None = None


@dataclass
class ReportConfig:
    experiments: list[str] = field(default_factory=list)  # to pool; default: every sweep
    dir: str = "reports"  # the page and its figures
    experiment: str = "answers"  # the MLflow experiment the page is logged to
    alpha: float = field(default=0.05, metadata=_range(gt=0.0, lt=1.0))
    margin: float = field(default=0.01, metadata=_range(gt=0.0))


@dataclass
class Config:
    # MLflow experiment name and sweeps/ subdirectory; experiments set their own
    name: str = "base"
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # null for a single run; an experiment fills it to make a sweep
    search: SearchConfig | None = None
    sweep: SweepConfig = field(default_factory=SweepConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


def register() -> None:
    """Make the schema the base of `conf/config.yaml` (its defaults list names it)."""
    ConfigStore.instance().store(name="base_config", node=Config)


def batching_for(mask_padding: bool) -> str:
    """`train.batching`'s default: length buckets need masked padding, so only then."""
    return BATCHING[0] if mask_padding else BATCHING[1]


# at import, so that any config read back from YAML (exports, a worker's) resolves it too
OmegaConf.register_new_resolver("batching_for", batching_for, replace=True)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value the schema's types cannot rule out (the search
    space is `config.validate`'s: it needs the space module, which builds on this one)."""
    _check_ranges(Config, cfg, "")
    if not NAME_PATTERN.match(str(cfg.name)):
        raise ConfigError(
            "name",
            cfg.name,
            "must be letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (it names a directory)",
        )
    attention = cfg.model.attention
    check_scale("model.attention.scale", attention.scale)
    check_initializer("model.attention.initializer", attention.initializer)
    if cfg.train.batching == "bucketed" and not cfg.model.mask_padding:
        raise ConfigError(
            "train.batching",
            "bucketed",
            "needs model.mask_padding=true (else results depend on each batch's padding)",
        )
    if cfg.data.source == "files" and not cfg.data.path:
        raise ConfigError("data.path", cfg.data.path, "data.source=files needs a path")
    if cfg.data.val_split == "movie" and (cfg.data.source == "keras" or not cfg.data.path):
        raise ConfigError(
            "data.val_split",
            "movie",
            "keras.datasets.imdb has no movie links: give data.path=... (the aclImdb archive "
            "has them) or use data.val_split=random",
        )
    check_distributed(cfg)
    dist = cfg.get("distributed")
    check_tracking_uri(str(cfg.tracking.uri), str(dist.role) if dist is not None else "none")
    if cfg.search is not None:
        _check_search(cfg.search)


def _check_search(search: DictConfig) -> None:
    if search.time_budget is not None:
        parse_duration("search.time_budget", search.time_budget)
    again = search.get("replicates")
    if again is not None and again.time_budget is not None:
        parse_duration("search.replicates.time_budget", again.time_budget)
    if again is not None and again.min_seeds > again.max_seeds:
        raise ConfigError("search.replicates.min_seeds", again.min_seeds, "more than max_seeds")


def _check_ranges(schema: type, node: DictConfig | None, prefix: str) -> None:
    if node is None:
        return
    for f in fields(schema):
        key, value = prefix + f.name, node.get(f.name)
        if isinstance(f.default_factory, type) and is_dataclass(f.default_factory):
            _check_ranges(f.default_factory, value, key + ".")
            continue
        if f.name == "search" and value is not None:
            _check_ranges(SearchConfig, value, key + ".")
            for path, param in value.space.items():
                _check_ranges(SearchParam, param, f"{key}.space.{path}.")
            continue
        _check_value(key, value, f.metadata)


def _check_value(key: str, value: Any, rules: Any) -> None:
    if value is None or not rules:
        return
    if "choices" in rules and value not in rules["choices"]:
        raise ConfigError(key, value, f"expected one of {', '.join(rules['choices'])}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, value, "must be a finite number")
    for rule, ok, words in (
        ("gt", lambda v, b: v > b, "greater than"),
        ("ge", lambda v, b: v >= b, "at least"),
        ("lt", lambda v, b: v < b, "less than"),
        ("le", lambda v, b: v <= b, "at most"),
    ):
        if rule in rules and not ok(value, rules[rule]):
            raise ConfigError(key, value, f"must be {words} {rules[rule]}")


def check_scale(key: str, value: Any) -> None:
    """A scale is a positive finite number or one of SCALE_WORDS."""
    if isinstance(value, str):
        if value in SCALE_WORDS:
            return
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(
                key, value, "expected a positive number or one of " + ", ".join(SCALE_WORDS)
            ) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            key, value, "expected a positive number or one of " + ", ".join(SCALE_WORDS)
        )
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(key, value, "must be a positive finite number")


def check_initializer(key: str, value: Any) -> None:
    """Ask Keras itself whether it knows the initializer, so any Keras name or config works."""
    import keras

    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    try:
        keras.initializers.get(value)
    except (ValueError, TypeError, KeyError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(key, value, f"not a Keras initializer ({reason[:120]})") from None


#: Keras Tuner treats any tuner id containing this word as the chief.
CHIEF_WORD = "chief"


def check_distributed(cfg: DictConfig) -> None:
    """Roles need an oracle address and a sweep (a shared tracking server: `config`); worker
    ids must be usable."""
    dist, workers = cfg.get("distributed"), cfg.sweep.get("workers", 0)
    if dist is None:
        return
    if workers and dist.role != "none":
        raise ConfigError(
            "sweep.workers", workers, "starts its own chief and workers; drop distributed.role"
        )
    if dist.role == "none":
        return
    host, _, port = str(dist.oracle or "").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("distributed.oracle", dist.oracle, "expected HOST:PORT of the chief")
    if dist.role == "worker":
        worker = str(dist.worker_id or "")
        if not NAME_PATTERN.match(worker) or CHIEF_WORD in worker.lower():
            raise ConfigError(
                "distributed.worker_id",
                dist.worker_id,
                "each worker needs its own id (letters, digits, '_', '-', '.'; "
                f"not containing '{CHIEF_WORD}')",
            )


def check_single_run(cfg: DictConfig) -> None:
    """A single run has no trials to share out (kept out of `validate`: the space check
    validates each searched value in a copy of the config without its `search`)."""
    dist = cfg.get("distributed")
    if cfg.sweep.get("workers", 0):
        raise ConfigError("sweep.workers", cfg.sweep.workers, "needs a sweep (+experiment=NAME)")
    if dist is not None and dist.role != "none":
        raise ConfigError("distributed.role", dist.role, "needs a sweep (+experiment=NAME)")
