"""Composing the Hydra config outside `@hydra.main` (tests, checks) and turning Hydra's
composition errors into one line that names the bad key and value."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from sweep.schema import ConfigError, first_line, register, validate

#: The `conf/` directory beside `src/` (the package is installed editable, from the checkout).
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_config(
    overrides: Sequence[str] = (), config_name: str = "config", config_dir: Path | None = None
) -> DictConfig:
    """The config `python -m sweep OVERRIDES` would run, validated; raises ConfigError.

    `config_dir` is Hydra's `--config-dir`: more configs (a user's experiments, or exported
    best configs, which `config_name` then names) beside `conf/`.
    """
    register()
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
    validate(cfg)
    return cfg


def check_command_line(args: Sequence[str]) -> None:
    """Compose and validate every job a command line would start, before any of them starts.

    Hydra reports a bad override only when its job starts (in multirun, after earlier jobs have
    trained); checking up front keeps bad input from costing any training.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.utils import get_args_parser

    known, _ = get_args_parser().parse_known_args(list(args))
    overrides = [o for o in known.overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise ConfigError("override", " ".join(overrides), first_line(err)) from None
    config_dir = Path(known.config_dir).resolve() if known.config_dir else None
    for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None):
        for job in batch:
            compose_config(job, known.config_name or "config", config_dir)


def as_config_error(err: BaseException, overrides: Sequence[str] = ()) -> ConfigError:
    """One line naming the key and value from Hydra's or OmegaConf's (multi-line) error."""
    if isinstance(err, MissingConfigException):
        group, _, option = str(err.missing_cfg_file or "").rpartition("/")
        options = ", ".join(err.options or [])
        reason = f"no such {group or 'config'}" + (f" (available: {options})" if options else "")
        return ConfigError(group or "config", option or err.missing_cfg_file, reason)
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    key = getattr(cause, "full_key", None)
    if key:
        named = _override(key, overrides)
        if named is not None:
            return ConfigError(*named, _reason(cause))
        return ConfigError(key, getattr(cause, "value", None), _reason(cause))
    return ConfigError("config", " ".join(overrides), first_line(err))


def _override(key: str, overrides: Sequence[str]) -> tuple[str, str] | None:
    """The override (key, value) that `key` (possibly only its first part) came from."""
    for override in overrides:
        name, _, value = override.lstrip("+~").partition("=")
        if name == key or name.startswith(key + "."):
            return name, value
    return None


def _reason(err: BaseException) -> str:
    text = first_line(err)
    if "not in struct" in text or ("Key '" in text and "not" in text):
        return "no such key in the config (check the spelling; see conf/ for the keys)"
    return text
