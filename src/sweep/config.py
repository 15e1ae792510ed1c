"""Composing the Hydra config outside `@hydra.main` (tests, checks) and turning Hydra's
composition errors into one line that names the bad key and value."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # pinned: hydra-core 1.3
from hydra._internal.utils import get_args_parser  # pinned: hydra-core 1.3
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from sweep import schema
from sweep.errors import NO_VALUE, ConfigError, first_line
from sweep.schema import SearchParam, register
from sweep.space import SearchSpace, check_space
from sweep.vocabulary import in_searchable_section

#: The `conf/` directory beside `src/` (the package is installed editable, from the checkout).
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def check_config(cfg: DictConfig, trains: bool = True) -> SearchSpace | None:
    """Raise ConfigError for the first bad value of a whole config: the schema's values (the
    tracking store's among them), then the search space it declares (each searched value
    checked like a value in a file); that space, checked (None without a search). `trains`:
    see `schema.check_values`."""
    schema.check_values(cfg, trains)
    return check_space(cfg, trains) if cfg.search is not None else None


def compose_config(
    overrides: Sequence[str] = (),
    config_name: str = "config",
    config_dir: Path | None = None,
    trains: bool = True,
) -> DictConfig:
    """The config `python -m sweep OVERRIDES` would run, validated; raises ConfigError.

    `config_dir` is Hydra's `--config-dir`: more configs (a user's experiments, or exported
    best configs, which `config_name` then names) beside `conf/`.
    """
    register()
    overrides, space_edits = split_space_overrides(overrides)
    primary, extra = CONF_DIR, []
    if config_dir is not None:
        config_dir = Path(config_dir).resolve()  # relative as `--config-dir` allows; Hydra needs it
        other = config_dir
        if (config_dir / f"{config_name}.yaml").exists():
            primary, other = config_dir, CONF_DIR
        extra = [f"hydra.searchpath=[file://{other}]"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(primary), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=[*extra, *overrides])
    except (HydraException, OmegaConfBaseException) as err:
        raise as_config_error(err, overrides) from None
    finally:
        GlobalHydra.instance().clear()
    cfg = apply_space_overrides(cfg, space_edits)
    check_config(cfg, trains)
    return cfg


#: An override of the search space: `search.space=...`, `+search.space.PATH=...`,
#: `search.space.PATH.FIELD=...`, `~search.space.PATH`.
_SPACE_OVERRIDE = re.compile(r"^(\+\+|\+|~)?search\.space(\.|=|$)")
#: An override of any `search.*` key (a sweep's settings, its space among them).
_SPACE_OR_SEARCH = re.compile(r"^(\+\+|\+|~)?search(\.|=|$)")
#: The fields of one search space entry.
_FIELDS = tuple(f.name for f in dataclasses.fields(SearchParam))


def split_space_overrides(args: Sequence[str]) -> tuple[list[str], list[Override]]:
    """(the other arguments, the search space overrides, parsed by Hydra's grammar).

    A space is keyed by config paths, which hold dots; Hydra and OmegaConf read every dot in an
    override's key as one more level, so `apply_space_overrides` applies these instead.
    """
    rest, edits = [], []
    parser = OverridesParser.create()
    for arg in args:
        if not _SPACE_OVERRIDE.match(arg):
            rest.append(arg)
            continue
        try:
            edits.append(parser.parse_override(arg))
        except HydraException as err:
            raise ConfigError("override", arg, first_line(err)) from None
    return rest, edits


def apply_space_overrides(cfg: DictConfig, edits: Sequence[Override]) -> DictConfig:
    """`cfg` with the search space overrides applied, in order (not validated yet):

    `search.space={PATH: {...}, ...}` sets the whole space; `+search.space={...}` adds entries
    (replacing one of the same path); `[+]search.space.PATH={...}` adds or replaces one entry;
    `search.space.PATH.FIELD=VALUE` changes one field of an entry; `~search.space.PATH` removes it.
    """
    if not edits:
        return cfg
    if cfg.search is None:
        first = edits[0]
        raise ConfigError(first.key_or_group, _text(first), "needs a sweep (+experiment=NAME)")
    space: dict[str, Any] = OmegaConf.to_container(cfg.search.space)  # type: ignore[assignment]
    for edit in edits:
        if edit.is_sweep_override():
            raise ConfigError(
                edit.key_or_group, _text(edit), "a search space entry cannot be swept over"
            )
        path = edit.key_or_group.removeprefix("search.space").removeprefix(".")
        space = _edit_entry(space, path, edit) if path else _edit_space(space, edit)
    edited = OmegaConf.merge(cfg, {})
    OmegaConf.set_struct(edited, False)
    edited.search.space = {}
    try:
        edited = OmegaConf.merge(edited, {"search": {"space": space}})
    except OmegaConfBaseException as err:
        raise as_config_error(err) from None
    OmegaConf.set_struct(edited, True)
    return edited  # type: ignore[return-value]


def _edit_space(space: dict[str, Any], edit: Override) -> dict[str, Any]:
    """The whole space set, added to, or removed by one override."""
    value = None if edit.is_delete() else edit.value()
    if edit.is_delete():
        return {}
    if not isinstance(value, dict):
        raise ConfigError(edit.key_or_group, value, "expected {config.path: {type: ...}, ...}")
    if edit.is_add() or edit.is_force_add():
        return {**space, **value}
    return dict(value)


def _edit_entry(space: dict[str, Any], path: str, edit: Override) -> dict[str, Any]:
    """One entry (or one field of an entry) added, changed or removed by one override."""
    key, value = edit.key_or_group, None if edit.is_delete() else edit.value()
    entry, _, field = path.rpartition(".")
    entries = ", ".join(space) or "none"
    if entry in space and path not in space:  # one field of an entry
        if field not in _FIELDS:
            raise ConfigError(key, NO_VALUE, FIELD_REASON)
        if edit.is_delete():
            raise ConfigError(f"~{key}", NO_VALUE, f"remove whole entries: ~search.space.{entry}")
        space[entry][field] = value
    elif field in _FIELDS and path not in space and in_searchable_section(entry):
        raise ConfigError(
            key,
            NO_VALUE if edit.is_delete() else value,
            f"search.space has no entry {entry} (entries: {entries}); add one with "
            f"+search.space.{entry}={{type: ..., ...}}",
        )
    elif edit.is_delete():
        if path not in space:
            raise ConfigError(f"~{key}", NO_VALUE, f"not an entry of search.space ({entries})")
        del space[path]
    elif isinstance(value, dict):
        wrong = _type_error(key, value)
        if wrong is not None:
            raise wrong
        unknown = [f for f in value if f not in _FIELDS]
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}", NO_VALUE, FIELD_REASON)
        space[path] = value
    else:
        raise ConfigError(key, value, ENTRY_REASON)
    return space


#: The kinds of search space entry, as the schema lists them.
_TYPES: tuple[str, ...] = next(
    f.metadata["choices"] for f in dataclasses.fields(SearchParam) if f.name == "type"
)


def _type_error(entry_key: str, entry: Any) -> ConfigError | None:
    """An entry whose `type` is no kind of entry is told so first: its other fields are that
    type's, and complaining about them would have the user fix the wrong thing."""
    kind = entry.get("type") if isinstance(entry, dict | DictConfig) else None
    if isinstance(kind, str) and kind not in _TYPES:
        return ConfigError(f"{entry_key}.type", kind, f"expected one of {', '.join(_TYPES)}")
    return None


#: Why a search space entry's key or value cannot be; the same whichever way it was given.
FIELD_REASON = f"no such field of a search space entry ({', '.join(_FIELDS)})"
ENTRY_REASON = "a search space entry is a mapping such as {type: choice, values: [...]}"


def _text(edit: Override) -> str:
    return edit.input_line.partition("=")[2] if edit.input_line else ""


def check_command_line(args: Sequence[str], trains: bool = True) -> None:
    """Compose and validate every job a command line would start, before any of them starts
    (`trains=False`: for a command that neither trains nor searches, see
    `schema.check_values`).

    Hydra reports a bad override only when its job starts (in multirun, after earlier jobs have
    trained); checking up front keeps bad input from costing any training.
    """
    known, _ = get_args_parser().parse_known_args(list(args))
    if known.help or known.hydra_help:
        return  # Hydra shows help and starts no job
    overrides = [o for o in known.overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise ConfigError("override", " ".join(overrides), first_line(err)) from None
    config_dir = Path(known.config_dir).resolve() if known.config_dir else None
    for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None):
        for job in batch:
            compose_config(job, known.config_name or "config", config_dir, trains)
    if known.multirun:
        _check_multirun_base(parsed)


def _check_multirun_base(parsed: Sequence[Override]) -> None:
    """Hydra's multirun first composes the config without the swept values: when those are the
    experiments, `search` is still null there, and a `search.*` override is a traceback."""
    swept = [o for o in parsed if o.is_sweep_override()]
    if not any(o.key_or_group == "experiment" for o in swept):
        return
    for override in parsed:
        if not override.is_sweep_override() and _SPACE_OR_SEARCH.match(override.input_line):
            key, _, value = override.input_line.lstrip("+~").partition("=")
            raise ConfigError(
                key,
                value,
                "a multirun over +experiment=... composes its config without the experiments "
                "first, where search is null: set it in the experiment files, or run each "
                "experiment with its own command",
            )


def as_config_error(err: BaseException, overrides: Sequence[str] = ()) -> ConfigError:
    """One line naming the key and value from Hydra's or OmegaConf's (multi-line) error."""
    if isinstance(err, MissingConfigException):
        group, _, option = str(err.missing_cfg_file or "").rpartition("/")
        options = ", ".join(err.options or [])
        reason = f"no such {group or 'config'}" + (f" (available: {options})" if options else "")
        return ConfigError(group or "config", option or err.missing_cfg_file, reason)
    cause, key = err, getattr(err, "full_key", None)
    for _ in range(10):  # down the chain to OmegaConf's error, which names the key
        if key or (cause.__cause__ or cause.__context__) is None:
            break
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
        key = getattr(cause, "full_key", None) if isinstance(cause, OmegaConfBaseException) else ""
    if key and key.startswith("search.space.") and isinstance(cause, ConfigKeyError):
        # the entry as merged so far: its `type` precedes the field OmegaConf stopped at
        wrong = _type_error(key.rpartition(".")[0], getattr(cause, "parent_node", None))
        if wrong is not None:
            return wrong
    if key:
        named = _override(key, overrides)
        if named is not None:
            return ConfigError(*named, _reason(cause, key))
        value = getattr(cause, "value", None)
        if value is None and _reason(cause, key).startswith("no such"):
            value = NO_VALUE  # a key that does not exist has no value to show
        return ConfigError(key, value, _reason(cause, key))
    return ConfigError("config", " ".join(overrides), first_line(err))


def _override(key: str, overrides: Sequence[str]) -> tuple[str, str] | None:
    """The override (key, value) that `key` (possibly only its first part) came from."""
    for override in overrides:
        name, _, value = override.lstrip("+~").partition("=")
        if name == key or name.startswith(key + "."):
            return name, value
    return None


def _reason(err: BaseException, key: str = "") -> str:
    in_space = key.startswith("search.space.")
    if isinstance(err, ConfigKeyError | ConfigAttributeError):
        if in_space:
            return FIELD_REASON
        return "no such key in the config (check the spelling; see conf/ for the keys)"
    # OmegaConf says only in words that a plain value was given where an entry belongs
    if in_space and isinstance(err, ValidationError) and SearchParam.__name__ in str(err):
        return ENTRY_REASON
    return first_line(err)
