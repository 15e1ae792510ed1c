"""The search space an experiment declares in YAML, as Keras Tuner `HyperParameters`.

Each entry of `search.space` is keyed by the config path it sets. Values are data only: a trial's
config is the base config with the trial's values written in, checked by the same schema as any
config; nothing in a space is ever instantiated or evaluated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import keras_tuner
from omegaconf import DictConfig, OmegaConf

from sweep.schema import ConfigError, validate

#: Config sections a search may set; the rest (tracking, sweep, search) shape the harness itself.
SEARCHABLE = ("data.", "model.", "train.")
#: What every trial logs each epoch: the only objectives a tuner can be scored on.
TRIAL_METRICS = ("val_accuracy", "val_loss", "accuracy", "loss")


def label(value: Any) -> str:
    """A readable string for a choice that is not a plain number, word or flag."""
    if isinstance(value, Mapping):
        if "class_name" in value:
            args = ",".join(f"{k}={v}" for k, v in (value.get("config") or {}).items())
            return f"{value['class_name']}({args})"
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def _choices(param: DictConfig) -> tuple[list[Any], dict[Any, Any]]:
    """Keras Tuner choices (one type) and how to map each back to the config value."""
    values = [
        OmegaConf.to_container(v) if isinstance(v, DictConfig) else v for v in param["values"]
    ]
    kinds = {type(v) for v in values}
    if len(kinds) == 1 and kinds <= {int, float, str, bool}:
        return values, {v: v for v in values}
    if kinds <= {int, float}:
        floats = [float(v) for v in values]
        return floats, dict(zip(floats, values, strict=True))
    labels = [label(v) for v in values]
    return labels, dict(zip(labels, values, strict=True))


def hyperparameters(space: DictConfig) -> keras_tuner.HyperParameters:
    """Declare every entry of `space` up front, so the oracle owns the whole space."""
    hp = keras_tuner.HyperParameters()
    for path, param in space.items():
        kind = param.type
        if kind == "choice":
            values, _ = _choices(param)
            hp.Choice(path, values, ordered=all(isinstance(v, int | float) for v in values))
        elif kind == "boolean":
            hp.Boolean(path)
        else:
            cast, declare = (int, hp.Int) if kind == "int" else (float, hp.Float)
            step = None if param.get("step") is None else cast(param["step"])
            declare(
                path, cast(param["min"]), cast(param["max"]), step=step, sampling=param.sampling
            )
    return hp


def apply(cfg: DictConfig, space: DictConfig, values: Mapping[str, Any]) -> DictConfig:
    """The config one trial runs: `cfg` with the trial's values written at their paths.

    Raises ConfigError when the combination is not a valid config.
    """
    trial = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    trial = OmegaConf.merge(OmegaConf.structured(_schema()), trial)
    for path, param in space.items():
        if path not in values:
            continue
        value = values[path]
        if param.type == "choice":
            value = _choices(param)[1].get(value, value)
        OmegaConf.update(trial, path, value, merge=False)
    validate(trial)
    return trial


def _schema() -> type:
    from sweep.schema import Config

    return Config


def check_space(cfg: DictConfig) -> None:
    """Reject a malformed space before the first trial, naming the bad entry."""
    space = cfg.search.space
    if cfg.search.objective not in TRIAL_METRICS:
        raise ConfigError(
            "search.objective",
            cfg.search.objective,
            f"no trial logs it; one of {', '.join(TRIAL_METRICS)}",
        )
    if not space:
        raise ConfigError("search.space", "{}", "empty: declare at least one hyperparameter")
    for path, param in space.items():
        key = f"search.space.{path}"
        if (
            not str(path).startswith(SEARCHABLE)
            or OmegaConf.select(cfg, str(path), default=KeyError) is KeyError
        ):
            raise ConfigError(key, path, "not a config path under data., model. or train.")
        if param.type == "choice":
            _check_choice(cfg, key, path, param)
        elif param.type in ("int", "float"):
            _check_range(cfg, key, path, param)
        if cfg.search.tuner == "grid" and param.type == "float" and param.get("step") is None:
            raise ConfigError(f"{key}.step", None, "grid search needs a step for a float")


def _check_choice(cfg: DictConfig, key: str, path: str, param: DictConfig) -> None:
    if not param.get("values"):
        raise ConfigError(f"{key}.values", param.get("values"), "empty: give at least one value")
    for value in param["values"]:
        _check_value(cfg, f"{key}.values", path, value)
    if len(set(_choices(param)[1])) != len(param["values"]):
        raise ConfigError(f"{key}.values", list(param["values"]), "values repeat")


def _check_range(cfg: DictConfig, key: str, path: str, param: DictConfig) -> None:
    low, high = param.get("min"), param.get("max")
    for bound, value in (("min", low), ("max", high)):
        if value is None:
            raise ConfigError(f"{key}.{bound}", None, f"a {param.type} range needs min and max")
    if low > high:
        raise ConfigError(f"{key}.min", low, f"greater than max={high}")
    if param.sampling == "log" and low <= 0:
        raise ConfigError(f"{key}.min", low, "log sampling needs min > 0")
    step = param.get("step")
    if step is not None and not (math.isfinite(step) and step > 0):
        raise ConfigError(f"{key}.step", step, "must be positive")
    if param.type == "int" and any(v is not None and float(v) != int(v) for v in (low, high, step)):
        raise ConfigError(f"{key}", f"{low}..{high}", "an int range needs whole numbers")
    for value in (low, high):
        _check_value(
            cfg,
            f"{key}.{'min' if value == low else 'max'}",
            path,
            int(value) if param.type == "int" else value,
        )


def _check_value(cfg: DictConfig, key: str, path: str, value: Any) -> None:
    """One searched value must make a valid config on its own (the schema says why not)."""
    probe = OmegaConf.merge(
        OmegaConf.structured(_schema()), OmegaConf.to_container(cfg, resolve=True)
    )
    probe.search = None
    try:
        OmegaConf.update(probe, path, value, merge=False)
        validate(probe)
    except ConfigError as err:
        raise ConfigError(key, value, f"{err.key}: {err.reason}") from None
    except Exception as err:  # OmegaConf's type errors: the value cannot stand at that path
        reason = str(err).strip().splitlines()[0]
        raise ConfigError(key, value, reason) from None
