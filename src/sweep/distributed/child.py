"""One process of local parallel mode: the launcher's resolved config, this process's role on
top, run as `python -m sweep.distributed child CONFIG KEY=VALUE...`."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sweep import tuner
from sweep.config import check_config
from sweep.errors import USER_ERROR_EXIT, UserError
from sweep.schema import Config
from sweep.tuner.roles import ROLES


def load_child_config(config_file: str | Path, overrides: Sequence[str]) -> DictConfig:
    """The launcher's resolved config (exactly what it was given, even built in code) with one
    process's role on top, typed by the schema like a composed one."""
    loaded = OmegaConf.merge(
        OmegaConf.structured(Config),
        OmegaConf.load(config_file),
        OmegaConf.from_dotlist(list(overrides)),
    )
    assert isinstance(loaded, DictConfig)
    return loaded


def main(config_file: str, overrides: Sequence[str]) -> int:
    """Run this process's role of the sweep; its exit code tells the launcher what happened."""
    cfg = load_child_config(config_file, overrides)
    who = ROLES[str(cfg.distributed.role)](cfg).who()
    logging.basicConfig(
        level=logging.INFO,
        format=f"[%(asctime)s][{who}][%(name)s][%(levelname)s] - %(message)s",
        force=True,
    )
    try:
        check_config(cfg)
        tuner.run(cfg)
    except UserError as err:
        sys.stderr.write(f"{who}: {err}\n")
        return USER_ERROR_EXIT
    except KeyboardInterrupt:  # the launcher (or Ctrl-C) stops us; open runs are closed KILLED
        return 128 + signal.SIGINT
    return 0
