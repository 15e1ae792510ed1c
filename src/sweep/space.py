"""The search space an experiment declares in YAML, as Keras Tuner `HyperParameters`.

Each entry of `search.space` is keyed by the config path it sets. Values are data only: a trial's
config is the base config with the trial's values written in, checked by the same schema as any
config; nothing in a space is ever instantiated or evaluated.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from sweep.errors import ConfigError
from sweep.schema import NAME_PATTERN, Config, check_values
from sweep.vocabulary import SEARCHABLE, in_searchable_section, part_of_trial

if TYPE_CHECKING:
    import keras_tuner

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


def hyperparameters(
    space: DictConfig, defaults: Mapping[str, Any] | None = None
) -> keras_tuner.HyperParameters:
    """Declare every entry of `space` up front, so the oracle owns the whole space.

    `defaults` (Keras Tuner values by path) replace Keras Tuner's defaults (the first value, the
    minimum): the grid tuner's first trial is its defaults.
    """
    import keras_tuner  # here: a command line is checked (and refused) before TensorFlow loads

    hp = keras_tuner.HyperParameters()
    for path, param in space.items():
        kind, default = param.type, (defaults or {}).get(path)
        if kind == "choice":
            values, _ = _choices(param)
            ordered = all(isinstance(v, int | float) for v in values)
            hp.Choice(path, values, ordered=ordered, default=default)
        elif kind == "boolean":
            hp.Boolean(path, default=bool(default))
        else:
            cast, declare = (int, hp.Int) if kind == "int" else (float, hp.Float)
            step = None if param.get("step") is None else cast(param["step"])
            declare(
                path,
                cast(param["min"]),
                cast(param["max"]),
                step=step,
                sampling=param.sampling,
                default=default,
            )
    return hp


def tuner_value(param: DictConfig, hp: Any, value: Any) -> Any:
    """The Keras Tuner value of entry `param` (declared as `hp`) that stands for config `value`.

    Raises ValueError, saying why, when `value` is not a point of the entry.
    """
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if param.type == "choice":
        for kt_value, config_value in _choices(param)[1].items():
            if isinstance(value, bool) == isinstance(config_value, bool) and value == config_value:
                return kt_value
        shown = ", ".join(label(v) for v in _choices(param)[1].values())
        raise ValueError(f"not one of the entry's values ({shown})")
    if param.type == "boolean":
        if isinstance(value, bool):
            return value
        raise ValueError("not true or false")
    low, high = hp.min_value, hp.max_value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number in the entry's range {low}..{high}")
    tolerance = 1e-9 * max(abs(low), abs(high), 1.0)
    if not low - tolerance <= value <= high + tolerance:
        raise ValueError(f"outside the entry's range {low}..{high}")
    if hp.step is not None:
        on_step = [v for v in hp.values if math.isclose(v, value, rel_tol=1e-9, abs_tol=1e-12)]
        if not on_step:
            raise ValueError(f"not on the entry's steps ({low}, step {hp.step})")
        return on_step[0]
    if param.type == "int":
        if float(value) != int(value):
            raise ValueError("not a whole number (the entry is an int)")
        return int(value)
    return float(value)


def _declared(space: DictConfig) -> dict[str, Any]:
    return {p.name: p for p in hyperparameters(space).space}


@dataclass(frozen=True, eq=False)
class SearchSpace:
    """A checked space and the base config it varies, read once (`check_space` returns it): the
    tuner asks it for Keras Tuner's hyperparameters, the sweep's initial points and each trial's
    config, so the config itself is not handed down again for every trial."""

    #: the base config, a copy (interpolations unresolved: they follow a trial's values)
    base: DictConfig

    @classmethod
    def of(cls, cfg: DictConfig) -> SearchSpace:
        return cls(OmegaConf.create(OmegaConf.to_container(cfg)))

    @property
    def entries(self) -> DictConfig:
        """`search.space`: config path -> entry."""
        return self.base.search.space

    def hyperparameters(self, defaults: Mapping[str, Any] | None = None) -> Any:
        """Keras Tuner's `HyperParameters` for the whole space (see `hyperparameters`)."""
        return hyperparameters(self.entries, defaults)

    def initial_point(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """A whole point in Keras Tuner values: `given` (config values by path) over the base
        config's values; where the base value is no point of its entry, the entry's default
        (first value, minimum). Raises ValueError naming the given value that is no point."""
        declared, point = _declared(self.entries), {}
        for path, param in self.entries.items():
            if path in given:
                try:
                    point[path] = tuner_value(param, declared[path], given[path])
                except ValueError as err:
                    raise ValueError(f"{path}={label(given[path])} is {err}") from None
                continue
            try:
                point[path] = tuner_value(param, declared[path], OmegaConf.select(self.base, path))
            except ValueError:
                point[path] = declared[path].default
        return point

    def base_point(self) -> tuple[dict[str, Any] | None, str]:
        """The base config's own values as a point, or None and which value is not a point."""
        declared, point = _declared(self.entries), {}
        for path, param in self.entries.items():
            value = OmegaConf.select(self.base, path)
            try:
                point[path] = tuner_value(param, declared[path], value)
            except ValueError as err:
                return None, f"{path}={label(value)} is {err}"
        return point, ""

    def apply(self, values: Mapping[str, Any]) -> DictConfig:
        """The config one trial runs: the base config with the trial's values written at their
        paths. Raises ConfigError when the combination is not a valid config."""
        # interpolations resolve after the values are in: a derived default (train.batching
        # from model.mask_padding) follows the trial's values, not the base config's
        trial = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.to_container(self.base))
        for path, param in self.entries.items():
            if path not in values:
                continue
            value = values[path]
            if param.type == "choice":
                value = _choices(param)[1].get(value, value)
            OmegaConf.update(trial, path, value, merge=False)
        trial = OmegaConf.merge(
            OmegaConf.structured(Config), OmegaConf.to_container(trial, resolve=True)
        )
        check_values(trial)
        return trial


def check_pruning(cfg: DictConfig) -> None:
    """Median pruning needs an epoch to stop at: it never stops a trial at its last epoch
    (when train.epochs is searched, each trial's own epochs decide)."""
    search = cfg.search
    if search.pruning != "median" or "train.epochs" in (search.space or {}):
        return
    if search.pruning_min_epochs >= cfg.train.epochs:
        raise ConfigError(
            "search.pruning_min_epochs",
            search.pruning_min_epochs,
            f"must be less than train.epochs ({cfg.train.epochs}), else no trial is ever pruned",
        )


def check_space(cfg: DictConfig, trains: bool = True) -> SearchSpace:
    """Reject a malformed space (or search settings that contradict it) before the first trial,
    naming the bad entry; the space, checked. `trains=False` (a command that neither trains
    nor searches, see `schema.check_values`) leaves out the initial points: Keras Tuner judges
    them, and importing it loads TensorFlow."""
    check_pruning(cfg)
    space = cfg.search.space
    if cfg.search.objective not in TRIAL_METRICS:
        raise ConfigError(
            "search.objective",
            cfg.search.objective,
            f"no trial logs it; one of {', '.join(TRIAL_METRICS)}",
        )
    if not space:
        raise ConfigError("search.space", "{}", "empty: declare at least one hyperparameter")
    probe = _Probe(cfg, trains)
    for path, param in space.items():
        key = f"search.space.{path}"
        if (
            not in_searchable_section(str(path))
            or OmegaConf.select(cfg, str(path), default=KeyError) is KeyError
        ):
            under = ", ".join(f"{s}." for s in SEARCHABLE[:-1]) + f" or {SEARCHABLE[-1]}."
            raise ConfigError(key, path, f"not a config path under {under}")
        if not part_of_trial(str(path)):
            raise ConfigError(key, path, "changes no trial (where the harness reads or shows)")
        if param.type == "choice":
            _check_choice(probe, key, path, param)
        elif param.type in ("int", "float"):
            _check_range(probe, key, path, param)
        if cfg.search.tuner == "grid" and param.type == "float" and param.get("step") is None:
            raise ConfigError(f"{key}.step", None, "grid search needs a step for a float")
    if trains:
        check_initial(cfg)
    return SearchSpace.of(cfg)


#: `search.initial`'s entry for the config's own values.
BASE = "base"
_INITIAL_FORMS = "expected base, {best_of: EXPERIMENT} or a point {config.path: value, ...}"


def check_initial(cfg: DictConfig) -> None:
    """Every `search.initial` entry is well formed and every value it gives is a point of the
    space, checked like the space's own values."""
    initial = cfg.search.get("initial") or []
    declared = _declared(cfg.search.space)
    probe = _Probe(cfg) if any(entry != BASE for entry in initial) else None
    for i, entry in enumerate(initial):
        key = f"search.initial[{i}]"
        if entry == BASE:
            continue
        if not isinstance(entry, DictConfig) or not entry:
            raise ConfigError(key, entry, _INITIAL_FORMS)
        if "best_of" in entry:
            if len(entry) != 1:
                raise ConfigError(key, entry, "best_of stands alone: {best_of: EXPERIMENT}")
            if not NAME_PATTERN.match(str(entry.best_of)):
                raise ConfigError(f"{key}.best_of", entry.best_of, "not an experiment name")
            continue
        for path, value in entry.items():
            where = f"{key}.{path}"
            if path not in declared:
                raise ConfigError(
                    where, value, f"not a key of search.space ({', '.join(declared)})"
                )
            try:
                tuner_value(cfg.search.space[path], declared[path], value)
            except ValueError as err:
                raise ConfigError(where, value, str(err)) from None
            assert probe is not None  # an entry other than base is why there is one
            probe.check(where, str(path), value)


def _check_choice(probe: _Probe, key: str, path: str, param: DictConfig) -> None:
    if not param.get("values"):
        raise ConfigError(f"{key}.values", param.get("values"), "empty: give at least one value")
    for value in param["values"]:
        probe.check(f"{key}.values", path, value)
    if len(set(_choices(param)[1])) != len(param["values"]):
        raise ConfigError(f"{key}.values", list(param["values"]), "values repeat")


def _check_range(probe: _Probe, key: str, path: str, param: DictConfig) -> None:
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
        probe.check(
            f"{key}.{'min' if value == low else 'max'}",
            path,
            int(value) if param.type == "int" else value,
        )


class _Probe:
    """The config as its schema types it, without its search section, built once per check:
    each searched value is tried on a copy of it (a structured merge is ~0.07 s of CPU, a copy
    ~3 ms; a space of a dozen values was checked in most of a second)."""

    def __init__(self, cfg: DictConfig, trains: bool = True) -> None:
        self._base = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.to_container(cfg))
        self._base.search = None
        self._trains = trains

    def check(self, key: str, path: str, value: Any) -> None:
        """One searched value must make a valid config on its own (the schema says why not)."""
        probe = copy.deepcopy(self._base)
        try:
            OmegaConf.update(probe, path, value, merge=False)
            check_values(probe, self._trains)
        except ConfigError as err:
            raise ConfigError(key, value, f"{err.key}: {err.reason}") from None
        except Exception as err:  # OmegaConf's type errors: the value cannot stand at that path
            reason = str(err).strip().splitlines()[0]
            raise ConfigError(key, value, reason) from None
