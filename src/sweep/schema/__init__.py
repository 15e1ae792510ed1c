"""The typed config schema, registered in Hydra's ConfigStore, and the checks types cannot express.

One module per config group, as `conf/` has one folder per group. Hydra merges every YAML in
`conf/` over these dataclasses, so a typo'd key or a value of the wrong type fails at
composition. `check_values` then checks ranges and the values that need Keras to judge
(initializers, scales), so that every bad value is reported in one line naming the key, before
any data is read or model built.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from sweep.durations import parse_duration
from sweep.errors import ConfigError
from sweep.schema.data import MAX_SEQ_LEN, DataConfig, check_data
from sweep.schema.distributed import (
    CHIEF_WORD,
    DistributedConfig,
    check_distributed,
    check_single_run,
)
from sweep.schema.export import ExportConfig, ReportConfig, check_export
from sweep.schema.model import (
    SCALE_WORDS,
    AttentionConfig,
    ModelConfig,
    check_initializer,
    check_scale,
)
from sweep.schema.rules import NAME_PATTERN, check_bounds
from sweep.schema.search import (
    ReplicatesConfig,
    SearchConfig,
    SearchParam,
    SweepConfig,
    check_search,
)
from sweep.schema.tracking import TrackingConfig
from sweep.schema.train import BATCHING, LR_SCHEDULES, TrainConfig, batching_for, check_train
from sweep.uris import check_tracking_uri

__all__ = [
    "BATCHING",
    "CHIEF_WORD",
    "LR_SCHEDULES",
    "MAX_SEQ_LEN",
    "NAME_PATTERN",
    "SCALE_WORDS",
    "AttentionConfig",
    "Config",
    "DataConfig",
    "DistributedConfig",
    "ExportConfig",
    "ModelConfig",
    "ReplicatesConfig",
    "ReportConfig",
    "SearchConfig",
    "SearchParam",
    "SweepConfig",
    "TrackingConfig",
    "TrainConfig",
    "batching_for",
    "check_initializer",
    "check_scale",
    "check_single_run",
    "check_values",
    "parse_duration",
    "register",
]


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


# at import, so that any config read back from YAML (exports, a worker's) resolves it too
OmegaConf.register_new_resolver("batching_for", batching_for, replace=True)


def check_values(cfg: DictConfig, trains: bool = True) -> None:
    """Raise ConfigError for the first value the schema's types cannot rule out (the search
    space is `config.check_config`'s: it needs the space module, which builds on this one).
    `trains=False`, for a command that neither trains nor searches with this config (a report;
    an export, whose retrained models are checked as they are composed), leaves out the
    initializer: Keras judges it, and importing Keras loads TensorFlow (seconds)."""
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
    if cfg.train.batching == "bucketed" and not cfg.model.mask_padding:
        raise ConfigError(
            "train.batching",
            "bucketed",
            "needs model.mask_padding=true (else results depend on each batch's padding)",
        )
    check_data(cfg.data)
    check_train(cfg.train)
    check_export(cfg.export)
    check_distributed(cfg)
    dist = cfg.get("distributed")
    check_tracking_uri(str(cfg.tracking.uri), str(dist.role) if dist is not None else "none")
    if cfg.search is not None:
        check_search(cfg.search)
        if cfg.search.confirm.enabled and not cfg.data.confirm_fraction:
            raise ConfigError(
                "search.confirm.enabled",
                True,
                "needs a confirmation slice: set data.confirm_fraction (e.g. 0.1)",
            )
    if trains:  # last: Keras judges it, and importing Keras loads TensorFlow (seconds)
        check_initializer("model.attention.initializer", attention.initializer)


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
        check_bounds(key, value, f.metadata)
